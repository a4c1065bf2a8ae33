"""A file of a run that cannot be written (a full disk) is named in one line with exit status
2, leaves nothing partial, and ``--resume`` then continues to the uninterrupted run; a new run
removes the temporary files a run killed mid-write of its first checkpoint left."""

import errno
import json
import os
import sys
from pathlib import Path

import pytest
import torch

import metaloop.train.checkpoint as ckpt
from metaloop.cli.main import main
from metaloop.recipes import report
from metaloop.train.checkpoint import WriteError, atomic_write_text, latest_checkpoint

sys.path.insert(0, str(Path(__file__).parent))
from _cli import write_config  # noqa: E402

FULL = OSError(errno.ENOSPC, "No space left on device")


def _model(run):
    return {k: v for k, v in ckpt.load_checkpoint(run)[0].items() if k.startswith("model.")}


def _losses(run):
    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def _disk_full_at(monkeypatch, module, name, at, match=lambda *a, **k: True):
    """``module.name`` raises ENOSPC at its ``at``-th call that ``match`` accepts."""
    real, calls = getattr(module, name), [0]

    def full(*a, **k):
        if match(*a, **k):
            calls[0] += 1
            if calls[0] == at:
                raise FULL
        return real(*a, **k)
    monkeypatch.setattr(module, name, full)


def _metrics_line(fd, data):
    """Whether ``os.write`` writes a line of the metrics log (the log is held open for the
    run and written a whole line at a time)."""
    return bytes(data).startswith(b'{"iteration": ')


@pytest.mark.parametrize("where", ["checkpoint tensors", "LATEST", "metrics line"])
def test_a_full_disk_is_named_in_one_line_and_resume_gives_the_uninterrupted_run(
        tmp_path, monkeypatch, capsys, where):
    cfg = write_config(tmp_path / "c.toml", iterations=12, meta_batch=2, checkpoint_every=5,
                       seed=3)
    run, ref = tmp_path / "run", tmp_path / "ref"
    with monkeypatch.context() as m:
        if where == "checkpoint tensors":          # the second checkpoint's tensors
            _disk_full_at(m, ckpt, "save_file", 2)
        elif where == "LATEST":                    # its LATEST pointer
            _disk_full_at(m, ckpt.os, "replace", 2, lambda a, b: str(b).endswith("LATEST"))
        else:                                      # the 6th metrics line
            _disk_full_at(m, os, "write", 6, _metrics_line)
        assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert "No space left on device; the last good checkpoint in" in err, err
    assert "(iteration 5) is kept" in err, err
    assert latest_checkpoint(run).name == "ckpt-00000005"
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]   # no temp files
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert main(["train", "--config", str(cfg), "--out", str(ref), "--no-progress"]) == 0
    a, b = _model(run), _model(ref)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _losses(run) == _losses(ref)


def test_a_full_disk_before_the_first_checkpoint_leaves_no_run_folder(tmp_path, monkeypatch,
                                                                      capsys):
    cfg = write_config(tmp_path / "c.toml", iterations=4, meta_batch=2, checkpoint_every=2,
                       seed=3)
    _disk_full_at(monkeypatch, ckpt, "save_file", 1)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("metaloop train: error: cannot write ") and err.count("\n") == 1
    assert "ckpt-00000002: No space left on device; no checkpoint was written to" in err, err
    assert not (tmp_path / "run").exists()


def test_atomic_write_text_names_the_file_and_leaves_the_old_one(tmp_path, monkeypatch):
    f = tmp_path / "results.json"
    f.write_text("old\n")
    _disk_full_at(monkeypatch, ckpt.os, "fsync", 1)
    with pytest.raises(WriteError, match=r"cannot write .*results.json: No space left"):
        report.write_json(f, {"new": 1})
    assert f.read_text() == "old\n" and os.listdir(tmp_path) == ["results.json"]
    with pytest.raises(OSError):                       # still an OSError to its callers
        atomic_write_text(tmp_path / "no" / "such" / "dir", "x")


def test_a_new_run_removes_what_a_kill_mid_write_of_the_first_checkpoint_left(tmp_path):
    cfg = write_config(tmp_path / "c.toml", iterations=2, meta_batch=2, checkpoint_every=1,
                       seed=0)
    run = tmp_path / "run"
    (run / ".ckpt-00000001.k3j2x_ab").mkdir(parents=True)          # the killed writer's
    (run / ".ckpt-00000001.k3j2x_ab" / "tensors.safetensors").write_bytes(b"\0" * 10)
    (run / ".LATEST.a8f0qzzz").write_text("ckpt-000")
    (run / "metrics.jsonl").write_text('{"iteration": 1, "loss": 1.0}\n')
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    assert sorted(p.name for p in run.iterdir()) == ["LATEST", "ckpt-00000001",
                                                     "ckpt-00000002", "metrics.jsonl"]


def test_resume_removes_the_temporary_file_of_every_atomic_write(tmp_path, capsys):
    """A kill mid-write of a --protocol iwae run's curve.json (or its final test) left its
    temporary file for good: ``remove_stale`` knew only LATEST's, the metrics' and results'."""
    import numpy as np

    x = (np.random.default_rng(0).random((60, 1, 28, 28)) > 0.8).astype(np.uint8) * 255
    np.savez(tmp_path / "d.npz", x=x, y=np.repeat(np.arange(6), 10))
    out = tmp_path / "run"
    run = ["vae", "--protocol", "iwae", "--data", str(tmp_path / "d.npz"), "--stages", "2",
           "--curve-every", "0", "--curve-k", "2", "--curve-examples", "4", "--hidden",
           "8,8", "--latent", "2", "--batch-size", "20", "--out", str(out), "--no-progress"]
    assert main([*run, "--until-pass", "1"]) == 0                # stopped, checkpointed
    left = [".curve.json.x1y2z3w4", ".final-k5-n6.json.abc12345", ".LATEST.a8f0qzzz",
            ".samples.png.12345", ".ckpt-00000004.k3j2x_ab"]     # (a picture's: its pid)
    for name in left[:4]:
        (out / name).write_text("{")
    (out / left[4]).mkdir()
    (out / ".notes").write_text("mine")                  # not metaloop's: left alone
    assert main([*run, "--resume", "--k", "5"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in out.glob(".*")) == [".notes"]


def test_remove_stale_leaves_a_users_dot_files_beside_pictures(tmp_path):
    """A new vae, sweep or compare run calls ``remove_stale`` on the folder it is given, and
    the pictures' pattern took any suffix: a user's ``.photo.png.orig`` there was deleted.
    metaloop's pictures and model are written to ``.<name>.<pid>``."""
    mine = [".photo.png.orig", ".model.safetensors.bak", ".samples.png.swp",
            ".results.json.swp", ".LATEST.orig"]           # an editor's, a user's backup
    ours = [".samples.png.4242", ".model.safetensors.17", ".results.json.k3j2x_ab"]
    for name in mine + ours:
        (tmp_path / name).write_text("x")
    assert sorted(p.name for p in ckpt.remove_stale(tmp_path)) == sorted(ours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(mine)


def test_a_checkpoint_is_as_readable_as_its_latest(tmp_path):
    """mkdtemp makes its folder 0700: another user could read a shared run's LATEST but not
    the checkpoint it names (metaloop eval --checkpoint failed for them)."""
    old = os.umask(0o022)
    try:
        final = ckpt.save_checkpoint(tmp_path / "run", 1, {"x": torch.zeros(1)}, {})
    finally:
        os.umask(old)
    assert final.stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "run" / "LATEST").stat().st_mode & 0o777 == 0o644
    # the files in it too: safetensors writes its tensors file 0600
    for f in ("tensors.safetensors", "state.json"):
        assert (final / f).stat().st_mode & 0o777 == 0o644, f


def test_a_new_protocol_run_removes_what_a_kill_before_its_first_checkpoint_left(tmp_path,
                                                                                 capsys):
    """A --protocol iwae run killed mid-write of its first checkpoint left a .ckpt-* folder
    that a new run in the same --out kept (only --resume removed it), as metaloop train's
    new run does not."""
    import numpy as np

    x = (np.random.default_rng(0).random((60, 1, 28, 28)) > 0.8).astype(np.uint8) * 255
    np.savez(tmp_path / "d.npz", x=x, y=np.repeat(np.arange(6), 10))
    out = tmp_path / "run"
    out.mkdir()
    (out / ".ckpt-00000001.k3j2x_ab").mkdir()                 # the kill's leftovers
    (out / ".ckpt-00000001.k3j2x_ab" / "tensors.safetensors").write_bytes(b"\0" * 8)
    (out / ".curve.json.x1y2z3w4").write_text("{")
    (out / ".notes").write_text("mine")                      # not metaloop's: left alone
    run = ["vae", "--protocol", "iwae", "--data", str(tmp_path / "d.npz"), "--stages", "2",
           "--curve-every", "0", "--curve-k", "2", "--curve-examples", "4", "--hidden",
           "8,8", "--latent", "2", "--batch-size", "20", "--out", str(out), "--no-progress"]
    assert main([*run, "--until-pass", "1"]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in out.glob(".*")) == [".notes"]
    assert (out / "LATEST").read_text().strip() == "ckpt-00000001"
