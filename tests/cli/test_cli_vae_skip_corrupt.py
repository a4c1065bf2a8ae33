"""``metaloop vae --data FOLDER``: one line on stderr says what was read of the folder and
what was left out, as ``metaloop train`` says it; an unreadable image is refused with the flag
that leaves it out (``--skip-corrupt``), which the run records in its settings."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import write_image_folder  # noqa: E402

TINY = ["--model", "ae", "--image-size", "12", "--epochs", "1", "--hidden", "8",
        "--latent", "2", "--no-progress"]


@pytest.fixture(scope="module")
def untidy(tmp_path_factory):
    """3 classes of 6 images, ``notes.txt`` and ``.DS_Store`` in the first, a class folder
    without images and an image outside any class folder."""
    from PIL import Image

    root = write_image_folder(tmp_path_factory.mktemp("data") / "imgs", classes=3,
                              per_class=6, side=12)
    (root / "no_images").mkdir()
    Image.fromarray(np.zeros((12, 12), np.uint8)).save(root / "loose.png")
    return root


def test_what_was_left_out_of_the_folder_is_said(untidy, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["--threads", "1", "vae", "--data", str(untidy), "--out", str(out), *TINY])
    err = capsys.readouterr().err
    assert code == 0, err
    line = next(ln for ln in err.splitlines() if ln.startswith(f"data {untidy}: "))
    assert "18 images in 3 classes (cache " in line and "3 classes in use" in line
    assert "ignored 1 non-image (by suffix, e.g. class_00/notes.txt) and 1 hidden" in line
    assert "left out 1 class folder(s) without images, e.g. 'no_images'" in line
    assert "left out 1 image(s) outside any class folder, e.g. loose.png" in line
    r = json.loads((out / "results.json").read_text())
    assert r["n_train"] + r["n_test"] == 18                   # the images the line counts


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory):
    """3 classes of 6 images, ``broken.png`` (not an image) in the last."""
    return write_image_folder(tmp_path_factory.mktemp("data") / "imgs", classes=3,
                              per_class=6, side=12, mixed=False, corrupt=True)


def test_an_unreadable_image_is_refused_naming_the_flag(corrupt, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["--threads", "1", "vae", "--data", str(corrupt), "--out", str(out), *TINY])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists(), err
    assert "class_02/broken.png" in err and "add --skip-corrupt" in err
    assert "skip_corrupt=True" not in err and "Episodes.from_folder" not in err


def test_skip_corrupt_leaves_it_out_says_so_and_records_it(corrupt, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["--threads", "1", "vae", "--data", str(corrupt), "--out", str(out),
                 "--skip-corrupt", *TINY])
    err = capsys.readouterr().err
    assert code == 0, err
    assert "skipped 1 unreadable image(s), e.g. class_02/broken.png" in err
    r = json.loads((out / "results.json").read_text())
    assert r["settings"]["skip_corrupt"] is True and r["n_train"] + r["n_test"] == 18


def test_a_protocol_run_keeps_skip_corrupt(corrupt, tmp_path, capsys):
    out = tmp_path / "run"
    protocol = ["--threads", "1", "vae", "--protocol", "iwae", "--data", str(corrupt),
                "--image-size", "12", "--hidden", "8", "--latent", "2", "--stages", "2",
                "--until-pass", "1", "--curve-k", "2", "--curve-examples", "2",
                "--checkpoint-every", "1", "--out", str(out), "--no-progress"]
    assert main([*protocol, "--skip-corrupt"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    # the same data, read another way: refused by name, whether the folder reads or not
    assert main([*protocol, "--resume"]) == 2
    assert "--skip-corrupt" in capsys.readouterr().err
    (corrupt / "class_02" / "broken.png").rename(tmp_path / "broken.png")
    try:
        assert main([*protocol, "--resume"]) == 2
    finally:
        (tmp_path / "broken.png").rename(corrupt / "class_02" / "broken.png")
    assert "skip_corrupt" in capsys.readouterr().err


@pytest.mark.parametrize("data, why", [
    ("fashion-mnist", "--skip-corrupt would change nothing"),
    ("TENSORS", "is a tensor file"),
])
def test_skip_corrupt_where_it_changes_nothing_is_refused(data, why, tmp_path, capsys):
    path = tmp_path / "x.npz"
    np.savez(path, x=np.zeros((12, 8, 8), np.uint8), y=np.arange(12) % 2)
    data = str(path) if data == "TENSORS" else data
    out = tmp_path / "run"
    argv = ["--skip-corrupt", *TINY[:2], *TINY[4:]]                 # no --image-size
    if data != "fashion-mnist":
        argv += ["--image-size", "8"]
    code = main(["--threads", "1", "vae", "--data", data, "--out", str(out), *argv])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists(), err
    assert why in err and "drop --skip-corrupt" in err
