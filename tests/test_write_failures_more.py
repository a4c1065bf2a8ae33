"""Writes that fail say so: a record that cannot be written (a full disk, an immutable file,
another user's record in a sticky folder) is named with the system's reason and what is
there now, exit status 2, no traceback; ``eval --out`` says which of its files it wrote
before one failed; a run whose metrics line cannot be written says how to continue."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from metaloop.cli import _records
from metaloop.cli.main import main
from metaloop.evaluate import records
from metaloop.recipes import report
from metaloop.train.checkpoint import latest_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import record_fields, tensor_config, train_run, write_tensor_file  # noqa: E402

FULL = "No space left on device"


def _fields(**over) -> dict:
    return record_fields(**{"published": None, **over})


def _replace_fails_onto(monkeypatch, target: Path, error: OSError) -> None:
    """``os.replace`` raises ``error`` where it would move a file onto ``target``."""
    real = os.replace

    def replace(src, dst, *a, **k):
        if Path(dst) == target:
            raise error
        return real(src, dst, *a, **k)
    monkeypatch.setattr(os, "replace", replace)


def _left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize("before", [True, False], ids=["replacing", "new"])
def test_a_record_on_a_full_disk_is_a_named_value_error_and_the_old_one_stays(
        tmp_path, monkeypatch, before):
    path = tmp_path / "rec.json"
    if before:
        records.write_record(path, **_fields())
    old = path.read_bytes() if before else None
    _replace_fails_onto(monkeypatch, path, OSError(errno.ENOSPC, FULL))
    with pytest.raises(ValueError) as got:
        records.write_record(path, **_fields(mean=12.0))
    now = "the record there before is unchanged" if before else "no record was written"
    assert str(got.value) == f"cannot write the record {path}: {FULL}; {now}"
    assert isinstance(got.value, OSError)          # still an OSError for those who catch one
    assert (path.read_bytes() if before else None) == old
    assert _left(tmp_path) == (["rec.json"] if before else [])     # no temporary file


def test_a_record_whose_temporary_file_cannot_be_made_is_named(tmp_path, monkeypatch):
    path = tmp_path / "rec.json"

    def mkstemp(*a, **k):
        raise PermissionError(errno.EACCES, "Permission denied")
    monkeypatch.setattr(records.tempfile, "mkstemp", mkstemp)
    with pytest.raises(ValueError, match=f"^cannot write the record {path}: Permission denied; "
                                         f"no record was written$"):
        records.write_record(path, **_fields())


def test_write_records_of_adapt_and_forgetting_names_the_record_that_failed(
        tmp_path, monkeypatch, capsys):
    """``metaloop adapt`` and ``forgetting --record`` write through ``write_records``: the
    one that failed is named (the ones before it are printed as written)."""
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    _replace_fails_onto(monkeypatch, b, OSError(errno.EFBIG, "File too large"))
    with pytest.raises(ValueError, match=f"cannot write the record {b}: File too large; no "
                                         f"record was written"):
        _records.write_records({a: _fields(), b: _fields(row="other")})
    assert capsys.readouterr().out == f"wrote record {a}\n"
    assert _left(tmp_path) == ["a.json"]


def _can_chattr(path: Path) -> bool:
    if shutil.which("chattr") is None or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False
    return subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0


def test_an_immutable_record_is_named_and_kept(tmp_path):
    """A real refusal of the system: ``chattr +i`` on the record (root only)."""
    path = tmp_path / "rec.json"
    records.write_record(path, **_fields())
    old = path.read_bytes()
    if not _can_chattr(path):
        pytest.skip("chattr +i needs root, the chattr tool and a file system that has it")
    try:
        with pytest.raises(ValueError, match=f"^cannot write the record {path}: Operation not "
                                             f"permitted; the record there before is "
                                             f"unchanged$"):
            records.write_record(path, **_fields(mean=1.0))
        assert path.read_bytes() == old
        assert _left(tmp_path) == ["rec.json"]
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tensors protonet run (no MAML: its eval scores 4 held-out tasks)."""
    d = tmp_path_factory.mktemp("write_failures_more")
    return train_run(d, tensor_config(write_tensor_file(d / "f.npz"), 'name = "protonet"\n'))


def _eval(run: Path, *extra: str) -> int:
    return main(["eval", "--checkpoint", str(run), "--no-progress", *extra])


def test_eval_record_on_a_full_disk_exits_2_in_one_line(run, tmp_path, monkeypatch, capsys):
    rec = tmp_path / "rec.json"
    assert _eval(run, "--record", str(rec)) == 0
    old = rec.read_bytes()
    capsys.readouterr()
    _replace_fails_onto(monkeypatch, rec, OSError(errno.ENOSPC, FULL))
    assert _eval(run, "--record", str(rec)) == 2
    err = capsys.readouterr().err
    assert err == (f"metaloop eval: error: cannot write the record {rec}: {FULL}; the record "
                   f"there before is unchanged\n"), err
    assert rec.read_bytes() == old and _left(tmp_path) == ["rec.json"]


def test_eval_record_and_out_say_what_was_written_when_the_record_fails(
        run, tmp_path, monkeypatch, capsys):
    rec, out = tmp_path / "rec.json", tmp_path / "ev"
    _replace_fails_onto(monkeypatch, rec, OSError(errno.ENOSPC, FULL))
    assert _eval(run, "--record", str(rec), "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert err == (f"metaloop eval: error: cannot write the record {rec}: {FULL}; no record "
                   f"was written; written by this eval: {out / 'results.json'} (new); not "
                   f"written: the plot {out / 'accuracy_vs_steps.png'}\n"), err
    assert _left(out) == ["results.json"] and not rec.exists()


def test_eval_out_whose_plot_fails_says_what_it_wrote_and_removed(run, tmp_path, monkeypatch,
                                                                  capsys):
    rec, out = tmp_path / "rec.json", tmp_path / "ev"
    assert _eval(run, "--out", str(out)) == 0
    earlier = json.loads((out / "results.json").read_text())
    capsys.readouterr()

    def full(self, fname, **kw):
        raise OSError(errno.ENOSPC, FULL)
    monkeypatch.setattr(report.Figure, "savefig", full)
    assert _eval(run, "--out", str(out), "--record", str(rec), "--tasks", "3") == 2
    err = capsys.readouterr().err
    plot = out / "accuracy_vs_steps.png"
    assert err == (f"metaloop eval: error: cannot write {plot}: {FULL}; written by this eval: "
                   f"{out / 'results.json'} (new) and the record {rec}; not written: the plot "
                   f"{plot}; removed from {out} before writing: the earlier "
                   f"accuracy_vs_steps.png\n"), err
    assert _left(out) == ["results.json"] and rec.is_file()
    assert json.loads((out / "results.json").read_text()) != earlier       # new numbers


def test_eval_out_whose_results_fail_says_nothing_new_was_written(run, tmp_path, monkeypatch,
                                                                  capsys):
    rec, out = tmp_path / "rec.json", tmp_path / "ev"
    assert _eval(run, "--out", str(out)) == 0
    capsys.readouterr()
    _replace_fails_onto(monkeypatch, out / "results.json", OSError(errno.ENOSPC, FULL))
    assert _eval(run, "--out", str(out), "--record", str(rec)) == 2
    err = capsys.readouterr().err
    assert err == (f"metaloop eval: error: cannot write {out / 'results.json'}: {FULL}; not "
                   f"written: the plot {out / 'accuracy_vs_steps.png'} and the record {rec}; "
                   f"removed from {out} before writing: the earlier results.json, "
                   f"accuracy_vs_steps.png\n"), err
    assert _left(out) == [] and not rec.exists()


def test_a_metrics_line_that_cannot_be_written_says_how_to_resume(tmp_path, monkeypatch,
                                                                   capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(tensor_config(write_tensor_file(tmp_path / "f.npz"), 'name = "protonet"\n',
                                 iterations=4).replace("checkpoint_every = 4",
                                                       "checkpoint_every = 2"))
    out = tmp_path / "run"
    real, lines = os.write, [0]

    def write(fd, data):
        if bytes(data).startswith(b'{"iteration": '):
            lines[0] += 1
            if lines[0] == 3:
                raise OSError(errno.EFBIG, "File too large")
        return real(fd, data)
    monkeypatch.setattr(os, "write", write)
    assert main(["train", "--config", str(cfg), "--out", str(out), "--no-progress"]) == 2
    monkeypatch.undo()
    err = capsys.readouterr().err.splitlines()[-1]      # (after the data's line)
    assert err == (f"metaloop train: error: cannot write {out / 'metrics.jsonl'}: File too "
                   f"large; the last good checkpoint in {out} (iteration 2) is kept; once the "
                   f"file can be written, metaloop train --resume {out} continues from it (a "
                   f"run of metaloop compare: the same compare command with --resume)"), err
    assert latest_checkpoint(out).name == "ckpt-00000002"
    assert main(["train", "--resume", str(out), "--no-progress"]) == 0     # as it says
    assert latest_checkpoint(out).name == "ckpt-00000004"
