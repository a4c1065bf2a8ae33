"""A run's checkpoints are never thrown away quietly: a run folder whose ``ckpt-*`` folders
are there but not its ``LATEST`` is refused by a new run (which would replace them and empty
its metrics log) and named by a resume, with the newest intact checkpoint and the line that
names it again; a ``state.json`` that does not match its tensors file is named as such (either
may be the damaged one); a metrics log cut short before the checkpoint gets a note."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import metaloop as ml
from metaloop.cli.main import main
from metaloop.meta import MAML
from metaloop.models import MLP
from metaloop.train.checkpoint import latest_checkpoint, load_checkpoint

from ._cli import write_config


def _train(out, iterations, resume=False, log_every=1, checkpoint_every=2):
    torch.manual_seed(0)
    return ml.train(MAML(MLP(1, (8, 8), 1), 0.01, 1), ml.tasks.Sinusoid(5, 5),
                    iterations=iterations, meta_batch=2, progress=False, out_dir=out,
                    checkpoint_every=checkpoint_every, resume=resume, log_every=log_every)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A run of 6 iterations (checkpoints 4 and 6 kept, 6 log lines)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    _train(run, 6)
    return run


def _copy(trained, tmp_path, name="run"):
    run = tmp_path / name
    shutil.copytree(trained, run)
    return run


def _snapshot(run):
    return {p.relative_to(run).as_posix(): p.read_bytes() for p in run.rglob("*")
            if p.is_file() and p.name != "runlock"}


def test_a_new_run_is_refused_where_latest_is_gone(trained, tmp_path):
    """It started from scratch, emptied metrics.jsonl and later replaced the checkpoints."""
    run = _copy(trained, tmp_path)
    (run / "LATEST").unlink()
    before = _snapshot(run)
    with pytest.raises(ValueError) as e:
        _train(run, 6)
    msg = str(e.value)
    assert "holds checkpoints of a run (ckpt-00000006, ckpt-00000004) but no LATEST" in msg
    assert f"echo ckpt-00000006 > {run / 'LATEST'}" in msg and "nothing was written" in msg
    assert _snapshot(run) == before


def test_the_cli_refuses_a_new_run_and_names_the_resume(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    (run / "LATEST").unlink()
    before = _snapshot(run)
    cfg = write_config(tmp_path / "c.toml", iterations=6, meta_batch=2, checkpoint_every=2,
                       seed=0)
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"refusing a new run in {run}" in err
    assert f"echo ckpt-00000006 > {run / 'LATEST'}" in err
    assert f"metaloop train --resume {run}" in err
    assert _snapshot(run) == before
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 6


def test_resume_names_the_newest_intact_checkpoint_and_the_fix(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    (run / "LATEST").unlink()
    # the newest is damaged: the message names the one before it
    t = run / "ckpt-00000006" / "tensors.safetensors"
    t.write_bytes(t.read_bytes()[:-5])
    cfg = write_config(tmp_path / "c.toml", iterations=6, meta_batch=2, checkpoint_every=2,
                       seed=0)
    assert main(["train", "--resume", str(run), "--config", str(cfg), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"--resume: no checkpoint in {run}" in err
    assert f"ckpt-00000004 is intact: echo ckpt-00000004 > {run / 'LATEST'}" in err, err
    with pytest.raises(FileNotFoundError, match="echo ckpt-00000004 > "):
        load_checkpoint(run)                                    # ml.train's resume alike
    (run / "LATEST").write_text("ckpt-00000004\n")              # the advice, followed
    _train(run, 6, resume=True)                                 # (a run of ml.train's)
    assert latest_checkpoint(run).name == "ckpt-00000006"


def test_no_intact_checkpoint_is_said(trained, tmp_path):
    run = _copy(trained, tmp_path)
    (run / "LATEST").unlink()
    for d in run.glob("ckpt-*"):
        (d / "state.json").unlink()
    with pytest.raises(ValueError, match="none of them is intact"):
        _train(run, 6)


def test_half_written_checkpoints_are_still_cleaned_up(tmp_path):
    """A ``.ckpt-*`` temporary folder is no checkpoint: a new run goes on and removes it."""
    run = tmp_path / "run"
    (run / ".ckpt-00000002.abcd1234").mkdir(parents=True)
    _train(run, 2)
    assert not (run / ".ckpt-00000002.abcd1234").exists()
    assert latest_checkpoint(run).name == "ckpt-00000002"


def test_a_state_json_of_another_checkpoint_is_named_as_not_matching(trained, tmp_path):
    """It said the tensors file was corrupt or truncated, which may lead a user to delete
    good weights."""
    run = _copy(trained, tmp_path)
    shutil.copy(run / "ckpt-00000004" / "state.json", run / "ckpt-00000006" / "state.json")
    with pytest.raises(ValueError) as e:
        _train(run, 6, resume=True)
    msg = str(e.value)
    assert "tensors.safetensors and state.json do not match" in msg
    assert "either may be the damaged one" in msg
    assert "its state.json says iteration 4 (ckpt-00000004), not ckpt-00000006's" in msg


def test_a_truncated_tensors_file_says_both_files_may_be_at_fault(trained, tmp_path):
    run = _copy(trained, tmp_path)
    t = run / "ckpt-00000006" / "tensors.safetensors"
    t.write_bytes(t.read_bytes()[:-5])
    with pytest.raises(ValueError) as e:
        load_checkpoint(run)
    msg = str(e.value)
    assert "do not match" in msg and "either may be the damaged one" in msg
    assert "the state.json and the folder are both of iteration 6" in msg


def test_a_log_cut_short_before_the_checkpoint_gets_a_note(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    (run / "LATEST").write_text("ckpt-00000004\n")        # as if stopped at 4
    log = run / "metrics.jsonl"
    log.write_text("".join(log.read_text().splitlines(keepends=True)[:2]))   # head -2
    capsys.readouterr()
    _train(run, 6, resume=True)
    err = capsys.readouterr().err
    assert (f"note: {log} ends at iteration 2, 2 before the checkpoint's 4: its lines of "
            f"iterations 3 to 4 are lost") in err, err
    assert [json.loads(x)["iteration"] for x in log.read_text().splitlines()] == [1, 2, 5, 6]


def test_a_whole_log_gets_no_note(trained, tmp_path, capsys):
    run = _copy(trained, tmp_path)
    (run / "LATEST").write_text("ckpt-00000004\n")
    capsys.readouterr()
    _train(run, 6, resume=True)
    assert "note:" not in capsys.readouterr().err


def test_a_log_written_every_few_iterations_gets_no_note(tmp_path, capsys):
    """Lines every 3 iterations (3, 6), checkpoints every 2: the log's last line before the
    checkpoint at 4 is 3, as it should be."""
    run = tmp_path / "run"
    _train(run, 6, log_every=3)
    (run / "LATEST").write_text("ckpt-00000004\n")
    capsys.readouterr()
    _train(run, 6, resume=True, log_every=3)
    assert "note:" not in capsys.readouterr().err
