"""Runs that survive: SIGKILL at a random point, Ctrl-C, and exact (bit-identical) resume."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from metaloop import build as _build
from metaloop.cli.main import main
from metaloop.train.checkpoint import latest_checkpoint, load_checkpoint
from metaloop.train.loop import _StopSignals

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _cli import write_config  # noqa: E402
from conftest import CtrlCAt  # noqa: E402


def _write(tmp_path, iterations=100, every=10):
    return write_config(tmp_path / "c.toml", iterations=iterations, meta_batch=4,
                        checkpoint_every=every, seed=7)


def _model(run):
    return {k: v for k, v in load_checkpoint(run)[0].items() if k.startswith("model.")}


def _losses(run):
    return [json.loads(x)["loss"] for x in (run / "metrics.jsonl").read_text().splitlines()]


def _same_run(a, b):
    ma, mb = _model(a), _model(b)
    assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    assert _losses(a) == _losses(b)


def _lines(path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_sigkill_at_a_random_point_then_resume_is_bit_identical(tmp_path):
    cfg, run, ref = _write(tmp_path), tmp_path / "run", tmp_path / "ref"
    seed = random.randrange(1 << 30)
    kill_at = random.Random(seed).randint(11, 75)       # after the first checkpoint (10)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "error"}
    proc = subprocess.Popen([sys.executable, "-m", "metaloop", "--threads", "1", "train",
                             "--config", str(cfg), "--out", str(run), "--no-progress"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while latest_checkpoint(run) is None or _lines(run / "metrics.jsonl") < kill_at:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run did not reach the kill point"
            time.sleep(0.002)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run ended before the kill (seed {seed})"
    killed_at = load_checkpoint(run)[1]["iteration"]
    assert 10 <= killed_at < 100, (seed, killed_at)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0, seed
    assert main(["train", "--config", str(cfg), "--out", str(ref), "--no-progress"]) == 0
    _same_run(run, ref)
    assert not [p.name for p in run.iterdir() if p.name.startswith(".")]   # temp files gone


def test_ctrl_c_writes_a_checkpoint_exits_130_and_resumes_exactly(tmp_path, monkeypatch,
                                                                   capsys):
    cfg, run, ref = _write(tmp_path, iterations=30, every=10), tmp_path / "run", tmp_path / "ref"
    build = _build.build_family
    monkeypatch.setattr(_build, "build_family", lambda *a, **k: CtrlCAt(build(*a, **k), 14))
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert "interrupted: stopped by SIGINT after iteration 14" in err, err
    assert latest_checkpoint(run).name == "ckpt-00000014"        # the iteration in flight ends
    assert _lines(run / "metrics.jsonl") == 14
    monkeypatch.setattr(_build, "build_family", build)
    assert main(["train", "--resume", str(run), "--no-progress"]) == 0
    assert main(["train", "--config", str(cfg), "--out", str(ref), "--no-progress"]) == 0
    _same_run(run, ref)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler    # restored


def test_the_command_that_started_a_seeded_run_plus_resume_continues_it(tmp_path, monkeypatch,
                                                                        capsys):
    """An ensemble member is started with ``--seed N``; the same command with ``--resume``
    continues it (it was refused: "--seed starts a new run"), and another seed is named."""
    cfg, run, ref = _write(tmp_path, iterations=20, every=5), tmp_path / "run", tmp_path / "ref"
    build = _build.build_family
    monkeypatch.setattr(_build, "build_family", lambda *a, **k: CtrlCAt(build(*a, **k), 7))
    start = ["train", "--config", str(cfg), "--seed", "3", "--no-progress"]
    assert main([*start, "--out", str(run)]) == 130
    monkeypatch.setattr(_build, "build_family", build)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--seed", "4", "--no-progress"]) == 2
    assert (f"--seed 4: the run in {run} was trained with seed 3, and a resumed run keeps its "
            f"seed; give --seed 3 or leave --seed out") in capsys.readouterr().err
    assert latest_checkpoint(run).name == "ckpt-00000007"
    assert main([*start, "--out", str(run), "--resume"]) == 0
    assert main([*start, "--out", str(ref)]) == 0
    _same_run(run, ref)


def test_ctrl_c_in_the_last_iteration_completes_the_run(tmp_path, monkeypatch, capsys):
    """Its final checkpoint is written, so the run is done: exit 0, not "interrupted", and
    the same run as an uninterrupted one."""
    cfg, run, ref = _write(tmp_path, iterations=12, every=5), tmp_path / "run", tmp_path / "ref"
    build = _build.build_family
    monkeypatch.setattr(_build, "build_family", lambda *a, **k: CtrlCAt(build(*a, **k), 12))
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "interrupted" not in err and "trained maml for 12 iterations" in out, (out, err)
    assert latest_checkpoint(run).name == "ckpt-00000012"
    monkeypatch.setattr(_build, "build_family", build)
    assert main(["train", "--config", str(cfg), "--out", str(ref), "--no-progress"]) == 0
    _same_run(run, ref)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler    # restored


def test_a_second_ctrl_c_after_a_second_stops_at_once(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(time, "monotonic", lambda: now[0])
    with _StopSignals() as stop:
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)      # the same press forwarded by torchrun
        assert stop.name == "SIGINT"
        now[0] += 2
        with pytest.raises(KeyboardInterrupt, match="second SIGINT"):
            signal.raise_signal(signal.SIGINT)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_final_checkpoint_completes_the_run(tmp_path, monkeypatch, capsys,
                                                                 sig):
    """The final checkpoint of a run whose iterations are no multiple of checkpoint_every
    was written after the signal handlers were gone: Ctrl-C or SIGTERM there raised
    KeyboardInterrupt mid-write, exit 130 with "no checkpoint written" beside ckpt-10."""
    from metaloop.train import loop

    cfg, run, ref = _write(tmp_path, iterations=12, every=5), tmp_path / "run", tmp_path / "ref"
    save_run = loop.save_run

    def signalled(out, iteration, *a, **k):
        if iteration == 12:
            signal.raise_signal(sig)
        return save_run(out, iteration, *a, **k)
    monkeypatch.setattr(loop, "save_run", signalled)
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert "interrupted" not in err and "trained maml for 12 iterations" in out, (out, err)
    assert latest_checkpoint(run).name == "ckpt-00000012"
    monkeypatch.setattr(loop, "save_run", save_run)
    assert main(["train", "--config", str(cfg), "--out", str(ref), "--no-progress"]) == 0
    _same_run(run, ref)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler    # restored


def test_a_signal_during_the_final_checkpoint_is_raised_once_it_is_written(tmp_path,
                                                                           monkeypatch):
    """Caught during the final checkpoint, the signal was then dropped: ``train`` returned
    as if none had come, so a caller that trains one run after another (``metaloop
    compare``, a script) went on to the next. It is raised as in the last iteration,
    carrying the complete run's result."""
    import metaloop as ml
    from metaloop.meta import MAML
    from metaloop.models import MLP
    from metaloop.train import loop

    save_run = loop.save_run

    def signalled(out, iteration, *a, **k):
        if iteration == 7:
            signal.raise_signal(signal.SIGINT)
        return save_run(out, iteration, *a, **k)
    monkeypatch.setattr(loop, "save_run", signalled)
    learner = MAML(MLP(1, (8, 8), 1), 0.01, 1)
    with pytest.raises(KeyboardInterrupt, match="stopped by SIGINT after iteration 7; "
                                                "checkpoint in") as info:
        ml.train(learner, ml.tasks.Sinusoid(5, 5), iterations=7, meta_batch=2,
                 progress=False, out_dir=tmp_path / "run", checkpoint_every=5)
    assert info.value.result["iteration"] == 7
    assert latest_checkpoint(tmp_path / "run").name == "ckpt-00000007"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler    # restored


def test_an_interrupt_after_the_loop_names_the_checkpoint_kept(tmp_path, monkeypatch, capsys):
    """Ctrl-C once training has returned (before the summary line) said "no checkpoint
    written" of a run directory that holds its final checkpoint."""
    from metaloop.recipes import training

    cfg, run = _write(tmp_path, iterations=3, every=2), tmp_path / "run"
    train_config = training.train_config

    def then_ctrl_c(*a, **k):
        train_config(*a, **k)
        raise KeyboardInterrupt
    monkeypatch.setattr(training, "train_config", then_ctrl_c)
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 130
    err = capsys.readouterr().err
    assert f"interrupted: stopped; the checkpoint in {run} is kept" in err, err
    assert "no checkpoint written" not in err
    assert latest_checkpoint(run).name == "ckpt-00000003"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names fsynced files by /proc")
def test_the_metrics_log_is_on_disk_before_each_checkpoint(tmp_path, monkeypatch):
    """A checkpoint is fsynced, the metrics lines before it were not: after a power loss the
    run resumed from the checkpoint without them (a resume redoes only the lines past it)."""
    synced, fsync = [], os.fsync

    def recording(fd):
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        return fsync(fd)
    monkeypatch.setattr(os, "fsync", recording)
    cfg, run = _write(tmp_path, iterations=4, every=2), tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--out", str(run), "--no-progress"]) == 0
    ckpts = [i for i, name in enumerate(synced) if name == "state.json"]
    logs = [i for i, name in enumerate(synced) if name == "metrics.jsonl"]
    assert len(ckpts) == 2 and len(logs) == 2, synced
    assert logs[0] < ckpts[0] < logs[1] < ckpts[1], synced
    assert _lines(run / "metrics.jsonl") == 4
