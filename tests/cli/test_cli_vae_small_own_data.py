"""``metaloop vae`` on a small folder of your own images: the inversion studies score every row
on the same number of images and label the scores that small counts leave unreliable
(printed, in ``results.json`` and in the record); a new ``--protocol iwae`` run refuses a
folder holding another ``vae`` run; its record carries the paper's NLL only for the paper's
data; ``--classes`` takes class names; and the "too few test images" message names what
applies to your data."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generative"))
from user_images import SHAPES, shape_arrays, write_shape_folder  # noqa: E402

TINY = ["--latent", "2", "--hidden", "16", "--epochs", "1", "--no-progress"]
# 3 shapes x 20 images, 30% of each class held out: 18 test images, 42 training images
SMALL = ["--test-fraction", "0.3", "--classifier-epochs", "1", "--invert-steps", "3"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_shape_folder(tmp_path_factory.mktemp("vae_small_own") / "shapes")


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    x, y = shape_arrays(per_class=6)
    path = tmp_path_factory.mktemp("vae_small_tensors") / "shapes.npz"
    np.savez(path, x=x, y=y, class_names=np.array(SHAPES))
    return path


def _vae(data, out, *argv) -> int:
    return main(["--threads", "1", "vae", "--data", str(data), "--out", str(out), *argv])


def _listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_compare_inversion_scores_every_row_on_the_same_images_and_labels_small_counts(
        folder, tmp_path, capsys):
    # 18 test images: the real row can be scored on 9 of them (the rest is the FD's
    # reference); --quality-samples 30 asks 10 per class, so every row gets 3 per class
    out, rec = tmp_path / "inv", tmp_path / "rec.json"
    assert _vae(folder, out, "--compare-inversion", *TINY, *SMALL, "--quality-samples", "30",
                "--record", str(rec)) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["n_test"] == 18 and r["per_class"] == 3 and r["n_scored"] == 9
    assert {name: sc["n"] for name, sc in r["scores"].items()} == {
        name: 9 for name in r["scores"]}                          # the real row's n too
    kinds = [w["kind"] for w in r["warnings"]]
    assert kinds == ["scored", "frechet", "frechet_class", "lesson"]
    scored = r["warnings"][0]["message"]
    assert "--quality-samples 30 asks for 10 images per class" in scored
    assert "every row is scored on 9 images (3 per class)" in scored
    assert "below 128 images" in r["warnings"][1]["message"]
    assert "learn from 14 training images per class" in r["warnings"][3]["message"]
    printed = capsys.readouterr().out
    for w in r["warnings"]:                                   # printed under the table
        assert f"warning: {w['message']}" in printed
    assert printed.index("| real test images |") < printed.index("warning: ")
    record = json.loads(rec.read_text())
    assert record["warnings"] == r["warnings"] and "warning: " in record["detail"]


def test_inversion_transfer_labels_small_counts(folder, tmp_path, capsys):
    out = tmp_path / "transfer"
    assert _vae(folder, out, "--inversion-transfer", *SMALL, "--quality-samples", "30",
                "--invert-lrs", "0.05", "--no-progress") == 0
    r = json.loads((out / "results.json").read_text())
    assert [w["kind"] for w in r["warnings"]] == ["frechet", "frechet_class", "lesson"]
    assert "each row's 30 images are compared with 9 real test images" in \
        r["warnings"][0]["message"]
    printed = capsys.readouterr().out
    assert all(f"warning: {w['message']}" in printed for w in r["warnings"])


@pytest.mark.parametrize("other", ["plain", "inversion"])
def test_a_new_protocol_run_refuses_a_folder_holding_another_vae_run(other, npz, tmp_path,
                                                                     capsys):
    out = tmp_path / "run"
    if other == "plain":
        assert _vae(npz, out, "--model", "vae", *TINY, "--k", "2") == 0
    else:                     # an inversion study's files (its settings name no model)
        out.mkdir()
        (out / "results.json").write_text(json.dumps({"settings": {"latent": 2},
                                                      "inversion": {}, "scores": {}}))
        (out / "metrics.jsonl").write_text("")
        (out / "inversion_compare.png").write_bytes(b"\x89PNG")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert _vae(npz, out, "--protocol", "iwae", "--latent", "2", "--stages", "1",
                "--curve-k", "2", "--curve-examples", "2", "--k", "2", "--no-progress") == 2
    err = capsys.readouterr().err
    assert f"{out} holds a metaloop vae run" in err and "give another --out" in err
    assert "nothing was written" in err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_a_protocol_record_of_your_own_data_has_no_published_number(npz, tmp_path):
    out, rec = tmp_path / "iwae", tmp_path / "rec.json"
    proto = ["--protocol", "iwae", "--latent", "2", "--hidden", "16", "--stages", "1",
             "--curve-k", "2", "--curve-examples", "2", "--no-progress"]
    assert _vae(npz, out, *proto, "--k", "2") == 0
    assert _vae(npz, out, *proto, "--evaluate", "--k", "2", "--record", str(rec)) == 0
    assert json.loads(rec.read_text())["published"] is None


def test_classes_takes_class_names(folder, tmp_path):
    out = tmp_path / "cvae"
    assert _vae(folder, out, "--model", "cvae", *TINY, "--k", "2",
                "--classes", "square,0") == 0
    r = json.loads((out / "results.json").read_text())
    assert r["settings"]["classes"] == [2, 0]                  # square is class 2
    assert (out / "classes.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("classes, message", [
    ("7", "unknown class(es) [7] for CVAE sampling"),
    ("triangle", "unknown class(es) [triangle] for CVAE sampling"),
    ("cross,1", "--classes cross,1 names class 1 ('cross') more than once"),
])
def test_unknown_classes_are_named_with_the_data_s_class_names(classes, message, folder,
                                                               tmp_path, capsys):
    out = tmp_path / "cvae"
    assert _vae(folder, out, "--model", "cvae", *TINY, "--k", "2", "--classes", classes) == 2
    err = capsys.readouterr().err
    assert message in err
    if "unknown" in message:
        assert "0 'circle', 1 'cross', 2 'square'" in err
    assert not out.exists()


def test_too_few_test_images_of_your_own_data_names_what_applies(npz, tmp_path, capsys):
    out = tmp_path / "vae"
    assert _vae(npz, out, "--model", "vae", *TINY, "--k", "2", "--test-examples", "1") == 2
    err = capsys.readouterr().err
    assert "need at least 2 test images, got 1: raise --test-examples (now 1)" in err
    assert "--root" not in err                       # refused with your own data
    assert not out.exists()
