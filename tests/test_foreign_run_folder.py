"""A run folder holds one run: ``train``, ``vae`` and ``forgetting`` refuse, by name and with
exit status 2, an ``--out`` that holds another command's run, and change nothing there (an
interrupted ``train`` run stays resumable); each command's own re-run is unchanged."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from metaloop import runs_folder
from metaloop.cli.main import main

sys.path.insert(0, str(Path(__file__).parent / "train"))
from _cli import write_config  # noqa: E402


def _snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): None if p.is_dir()
            else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def data(tmp_path):
    rng = np.random.default_rng(0)
    img = tmp_path / "img.npz"
    np.savez(img, x=rng.random((120, 1, 28, 28), dtype=np.float32),
             y=np.repeat(np.arange(4), 30))
    vec = tmp_path / "vec.npz"
    np.savez(vec, x=rng.normal(size=(160, 4)).astype(np.float32),
             y=np.repeat(np.arange(4), 40))
    cfg = write_config(tmp_path / "c.toml", iterations=4, meta_batch=2, checkpoint_every=2,
                       seed=0)
    return {"img": img, "vec": vec, "cfg": cfg}


def _train(d, out):
    return ["train", "--config", str(d["cfg"]), "--out", str(out), "--no-progress"]


def _vae(d, out):
    return ["vae", "--data", str(d["img"]), "--epochs", "1", "--latent", "2", "--hidden",
            "8", "--out", str(out), "--no-progress"]


def _forgetting(d, out):
    return ["forgetting", "--scenario", "split-data-class", "--data", str(d["vec"]),
            "--strategies", "naive", "--seeds", "1", "--steps", "2", "--out", str(out),
            "--no-progress"]


WRITERS = {"train": _train, "vae": _vae, "forgetting": _forgetting}


@pytest.mark.parametrize("first,second", [
    ("train", "vae"), ("train", "forgetting"), ("vae", "train"), ("forgetting", "train"),
    ("vae", "forgetting"), ("forgetting", "vae"),
])
def test_a_writer_refuses_another_commands_run_and_changes_nothing(
        tmp_path, capsys, data, first, second):
    out = tmp_path / "run"
    assert main(WRITERS[first](data, out)) == 0
    assert runs_folder.found(out) == first
    capsys.readouterr()
    before = _snapshot(out)
    assert main(WRITERS[second](data, out)) == 2
    err = capsys.readouterr().err
    assert err == (f"metaloop {second}: error: {out} holds a metaloop {first} run, which a "
                   f"metaloop {second} run there would overwrite: give another --out "
                   f"(nothing was written)\n")
    assert _snapshot(out) == before


def test_vae_leaves_an_interrupted_train_run_resumable(tmp_path, capsys, data):
    out = tmp_path / "run"
    assert main(_train(data, out)) == 0
    (out / "LATEST").write_text("ckpt-00000002\n")          # as a run killed after it
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 4
    assert main(_vae(data, out)) == 2
    assert (out / "metrics.jsonl").read_text().splitlines() == lines
    capsys.readouterr()
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4
    assert (out / "LATEST").read_text().strip() == "ckpt-00000004"


@pytest.mark.parametrize("command", ["train", "vae", "forgetting"])
def test_a_writer_refuses_a_new_run_over_its_own_finished_run(tmp_path, capsys, data, command):
    """Its own folder is not another command's (no "holds a metaloop X run, which ..."), and
    a new run over its finished run is refused as train's is, leaving the folder as it was."""
    out = tmp_path / "run"
    assert main(WRITERS[command](data, out)) == 0
    capsys.readouterr()
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(WRITERS[command](data, out)) == 2
    err = capsys.readouterr().err
    assert "which a metaloop" not in err
    said = ("already holds a run; use --resume" if command == "train" else
            f"holds a finished metaloop {command} run")
    assert said in err, err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_found_tells_each_folder_and_none_for_others(tmp_path):
    assert runs_folder.found(tmp_path / "missing") is None
    assert runs_folder.found(tmp_path) is None
    (tmp_path / "notes.txt").write_text("mine\n")
    (tmp_path / "results.json").write_text("[1, 2]\n")      # not a metaloop results file
    assert runs_folder.found(tmp_path) is None
    with pytest.raises(ValueError, match="is not a metaloop vae result"):
        runs_folder.check(tmp_path, "vae")              # a results.json that is not ours
    for results, command in [({"approaches": {}}, "adapt"), ({"strategies": {}}, "forgetting"),
                             ({"config": {"compare": {}}}, "compare"),
                             ({"config": {"eval": {}}}, "eval"),
                             ({"settings": {"model": "vae"}}, "vae"),
                             # --compare-inversion / --inversion-transfer: no one model
                             ({"settings": {"latent": 8}, "inversion": {}}, "vae")]:
        (tmp_path / "results.json").write_text(json.dumps(results))
        assert runs_folder.found(tmp_path) == command
    (tmp_path / "partial.json").write_text(json.dumps({"tasks_done": 3}))
    assert runs_folder.found(tmp_path) == "adapt"
    with pytest.raises(ValueError, match=r"holds a metaloop adapt run, which a metaloop vae "
                                         r"run there would overwrite: give another --out"):
        runs_folder.check(tmp_path, "vae")
