"""``metaloop train --resume DIR --data-root PATH``: a run whose image folder or tensor file
moved reads it at PATH, checked against the fingerprint its checkpoint stores, and goes on
exactly as an uninterrupted run; other data there is refused naming the classes that differ,
a built-in family refuses the option, and a later resume without it names the path the run
last read."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metaloop.cli.main import main
from metaloop.train.checkpoint import atomic_write_text, latest_checkpoint, load_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).parent))
from _cli import write_config  # noqa: E402
from conftest import write_image_folder, write_tensor_file  # noqa: E402


def _config(kind: str, root: Path) -> str:
    """4 iterations of r2d2 on ``root`` (a folder of 8 classes, or a tensor file of 12), two
    checkpoints (2 and 4)."""
    model = '[model]\nname = "conv4"\nchannels = 4\n' if kind == "folder" else \
        '[model]\nname = "mlp"\nhidden = [16]\n'
    return (f'[family]\nname = "{kind}"\nroot = "{root}"\nways = 2\nshots = 1\nqueries = 2\n'
            f'split_fractions = [0.5, 0.0, 0.5]\n{model}[method]\nname = "r2d2"\n'
            '[train]\niterations = 4\nmeta_batch = 2\ncheckpoint_every = 2\n'
            '[eval]\ntasks = 4\nsteps = [0]\n')


def _data(kind: str, where: Path) -> Path:
    if kind == "folder":
        return write_image_folder(where / "images", classes=8, per_class=6, mixed=False)
    where.mkdir(parents=True, exist_ok=True)
    return write_tensor_file(where / "feats.npz")


def _train(d: Path, config: str) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "c.toml").write_text(config)
    assert main(["train", "--config", str(d / "c.toml"), "--out", str(d / "run"),
                 "--no-progress"]) == 0
    return d / "run"


def _interrupted(tmp_path: Path, kind: str) -> tuple[Path, Path, Path]:
    """(run with LATEST back at iteration 2, its uninterrupted twin, the data root)."""
    root = _data(kind, tmp_path / "data")
    run = _train(tmp_path / "a", _config(kind, root))
    ref = _train(tmp_path / "b", _config(kind, root))
    atomic_write_text(run / "LATEST", "ckpt-00000002\n")
    return run, ref, root


def _state(run: Path) -> dict:
    return json.loads((latest_checkpoint(run) / "state.json").read_text())


def _model(run: Path) -> dict:
    return {k: v for k, v in load_checkpoint(run)[0].items() if k.startswith("model.")}


def _losses(run: Path) -> list:
    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("kind", ["folder", "tensors"])
def test_resume_reads_the_moved_data_and_goes_on_as_uninterrupted(tmp_path, capsys, kind):
    run, ref, root = _interrupted(tmp_path, kind)
    moved = tmp_path / "elsewhere" / root.name
    moved.parent.mkdir()
    shutil.move(root, moved)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2    # as before: gone
    err = capsys.readouterr().err             # nothing read elsewhere yet: the option named
    assert f"--resume {run} --data-root PATH" in err and "last read" not in err
    assert main(["train", "--resume", str(run), "--data-root", str(moved),
                 "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert f"data read at {moved} (--data-root), in place of the stored family.root {root}" \
        in err, err
    state = _state(run)
    assert state["iteration"] == 4
    assert state["config"]["family"]["root"] == str(root)       # the config as trained
    assert state["data"]["root"] == str(moved)                  # the path read, recorded
    assert state["data"]["sha256"] == _state(ref)["data"]["sha256"]
    a, b = _model(run), _model(ref)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(run) == _losses(ref)
    # a later resume without the option reads family.root, and names the path last read
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"the run last read its data at {moved} (a resume with --data-root): give " \
           f"--data-root {moved}" in err, err
    assert main(["eval", "--checkpoint", str(run), "--no-progress"]) == 2     # eval alike
    assert f"give --data-root {moved} to read it there" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(run), "--data-root", str(moved),
                 "--no-progress"]) == 0
    # ... and with the data back at family.root, it needs none
    shutil.move(moved, root)
    atomic_write_text(run / "LATEST", "ckpt-00000002\n")
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    a = _model(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_on_a_changed_copy_is_refused_naming_the_classes(tmp_path, capsys):
    run, _, root = _interrupted(tmp_path, "folder")
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    cls = _state(run)["config"]["family"]["train_classes"][0]
    victim = sorted((copy / cls).iterdir())[0]
    with Image.open(victim) as im:                                  # one image changed
        im.transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(victim)
    before = sorted(p.name for p in run.iterdir())
    log = (run / "metrics.jsonl").read_text()
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--data-root", str(copy),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"--data-root {copy} is not the data {run} was trained on (its stored " \
           f"family.root: {root}): examples differ in class(es) [{cls!r}]" in err, err
    assert _state(run)["iteration"] == 2                            # nothing trained on
    assert sorted(p.name for p in run.iterdir()) == before
    assert (run / "metrics.jsonl").read_text() == log


def test_resume_on_a_changed_tensor_file_is_refused_naming_the_class(tmp_path, capsys):
    run, _, root = _interrupted(tmp_path, "tensors")
    arrays = dict(np.load(root))
    arrays["x"][0] += 1.0                                   # one example of class 0 changed
    np.savez(tmp_path / "other.npz", **arrays)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--data-root", str(tmp_path / "other.npz"),
                 "--no-progress"]) == 2
    assert "examples differ in class(es) ['0']" in capsys.readouterr().err
    assert _state(run)["iteration"] == 2


def test_a_built_in_family_refuses_data_root(tmp_path, capsys):
    cfg = write_config(tmp_path / "c.toml", iterations=2, meta_batch=2, checkpoint_every=1,
                       seed=0)
    run = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    atomic_write_text(run / "LATEST", "ckpt-00000001\n")
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--data-root", str(tmp_path),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"--data-root {tmp_path}: {run} is family 'sinusoid', which reads no data of " \
           f"yours" in err, err
    assert _state(run)["iteration"] == 1


def test_data_root_needs_resume_and_an_existing_path(tmp_path, capsys):
    run, _, root = _interrupted(tmp_path, "tensors")
    capsys.readouterr()
    assert main(["train", "--config", str(tmp_path / "a" / "c.toml"), "--out",
                 str(tmp_path / "new"), "--data-root", str(root), "--no-progress"]) == 2
    assert "no --resume is given" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()
    assert main(["train", "--resume", str(run), "--data-root", str(tmp_path / "nothing.npz"),
                 "--no-progress"]) == 2
    assert f"--data-root {tmp_path / 'nothing.npz'}: no such file" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--data-root", str(tmp_path),
                 "--no-progress"]) == 2
    assert "is a folder, but" in capsys.readouterr().err
    assert _state(run)["iteration"] == 2
