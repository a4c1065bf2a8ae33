"""A finished run of ``metaloop forgetting``, ``vae`` or ``adapt`` is never replaced without a
word: a new run (no ``--resume``) into its ``--out`` is refused (exit 2), naming the folder,
the command and its settings and the fixes, with nothing written or removed, as ``train``
and ``compare`` refuse one; ``--resume`` still adds seeds to a finished forgetting run."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "generative"))
from test_cli_adapt import write_sentences  # noqa: E402
from user_images import write_shape_folder  # noqa: E402

FORGET = ["--scenario", "split-data-class", "--steps", "4", "--eval-every", "2", "--hidden",
          "8", "--batch-size", "8", "--strategies", "naive", "--no-progress"]
VAE = ["--epochs", "1", "--hidden", "16", "--latent", "2", "--k", "2", "--no-progress"]


def _files(d: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def _refused(capsys, out: Path, before: dict, *named: str) -> str:
    err = capsys.readouterr().err
    assert f"{out} holds a finished metaloop" in err, err
    assert "another --out" in err and f"remove {out}" in err
    assert "nothing was written or removed" in err
    for text in named:
        assert text in err, (text, err)
    assert _files(out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(".")]
    return err


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    d = tmp_path_factory.mktemp("finished_forgetting")
    g = torch.Generator().manual_seed(0)
    y = torch.arange(6).repeat_interleave(8)
    x = torch.nn.functional.one_hot(y, 6).float() * 2 + torch.randn(len(y), 6, generator=g)
    np.savez(d / "d.npz", x=x.numpy(), y=y.numpy())
    return d / "d.npz"


def _forget(data, out, *extra):
    return ["--threads", "1", "forgetting", *FORGET, "--data", str(data), "--out", str(out),
            *extra]


def test_a_finished_forgetting_run_is_not_replaced_by_a_new_run(npz, tmp_path, capsys):
    out = tmp_path / "f"
    assert main(_forget(npz, out, "--seeds", "2")) == 0
    before = _files(out)
    assert "runs.json" in before
    capsys.readouterr()
    assert main(_forget(npz, out, "--seeds", "1", "--steps", "2")) == 2
    _refused(capsys, out, before, "metaloop forgetting run", "--seeds 2", "--steps 4",
             "--strategies naive", "--resume")
    # the same command is refused too: it would replace the run with itself, silently
    assert main(_forget(npz, out, "--seeds", "2")) == 2
    _refused(capsys, out, before)
    # --resume with more seeds still adds seeds to the finished run
    assert main(_forget(npz, out, "--seeds", "3", "--resume")) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["seeds"] == [0, 1, 2]


def test_a_finished_forgetting_runs_json_alone_is_not_removed(npz, tmp_path, capsys):
    """Its results.json removed by hand, the runs.json a resume adds seeds to is kept."""
    out = tmp_path / "f"
    assert main(_forget(npz, out, "--seeds", "1")) == 0
    (out / "results.json").unlink()
    before = _files(out)
    capsys.readouterr()
    assert main(_forget(npz, out, "--seeds", "1")) == 2
    _refused(capsys, out, before, "runs.json")


def test_a_forgetting_run_stopped_before_moving_partial_json_is_kept(npz, tmp_path, capsys):
    """results.json written, partial.json not yet moved to runs.json: the run had finished,
    and a new run is refused; --resume moves the file and exits 0, as documented."""
    out = tmp_path / "f"
    assert main(_forget(npz, out, "--seeds", "1")) == 0
    os.replace(out / "runs.json", out / "partial.json")
    before = _files(out)
    capsys.readouterr()
    assert main(_forget(npz, out, "--seeds", "1", "--steps", "2")) == 2
    _refused(capsys, out, before)
    assert main(_forget(npz, out, "--seeds", "1", "--resume")) == 0
    assert "the run had finished" in capsys.readouterr().out
    assert (out / "runs.json").is_file() and not (out / "partial.json").exists()


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shape_folder(tmp_path_factory.mktemp("finished_vae") / "shapes")


def _vae(data, out, *argv):
    return main(["--threads", "1", "vae", "--data", str(data), "--out", str(out), *argv])


@pytest.mark.parametrize("later", [["--epochs", "3", "--hidden", "16", "--latent", "2",
                                    "--no-progress", "--model", "ae"],
                                   [*VAE, "--model", "vae"],
                                   ["--epochs", "1", "--sweep-latent", "2,3"]])
def test_a_finished_vae_run_is_not_replaced_by_a_new_run(shapes, tmp_path, capsys, later):
    out = tmp_path / "v"
    assert _vae(shapes, out, *VAE, "--model", "vae") == 0
    before = _files(out)
    capsys.readouterr()
    assert _vae(shapes, out, *later) == 2
    _refused(capsys, out, before, "metaloop vae run", "--model vae", "--epochs 1")


@pytest.fixture(scope="module")
def sentences(tmp_path_factory):
    return write_sentences(tmp_path_factory.mktemp("finished_adapt") / "s.csv")


def _adapt(model, data, out, *extra):
    return ["--threads", "1", "adapt", "--model", model, "--family", "table", "--data",
            str(data), "--ways", "2", "--shots", "1", "--queries", "2", "--tasks", "2",
            "--approaches", "probe-ridge", "--out", str(out), "--no-progress", *extra]


def test_a_finished_adapt_run_is_not_replaced_by_a_new_run(wordnet_bert, sentences, tmp_path,
                                                           capsys):
    out = tmp_path / "a"
    assert main(_adapt(wordnet_bert, sentences, out)) == 0
    before = _files(out)
    capsys.readouterr()
    assert main(_adapt(wordnet_bert, sentences, out, "--tasks", "3")) == 2
    _refused(capsys, out, before, "metaloop adapt run", "--tasks 2", "--ways 2",
             "--approaches probe-ridge")
    # a finished run whose partial.json was left (stopped while removing it): kept too
    (out / "partial.json").write_text(json.dumps({"identity": {}, "tasks_done": 2,
                                                  "per": {}, "eval_seconds": 0.0}))
    before = _files(out)
    assert main(_adapt(wordnet_bert, sentences, out)) == 2
    _refused(capsys, out, before)
