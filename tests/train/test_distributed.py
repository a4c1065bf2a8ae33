"""torchrun (gloo, 2 CPU processes) gives the single-process meta-gradients and parameters;
rank 0 alone writes; a rank that dies makes the other stop with a named error, not hang."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import metaloop as ml
from metaloop.cli.main import main
from metaloop.train import distributed
from metaloop.train.checkpoint import latest_checkpoint, load_checkpoint

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _cli import write_config  # noqa: E402
from _dist_common import KINDS, META_BATCH, SEED, batch, family, learner  # noqa: E402
from _ranks import free_port  # noqa: E402


def _cli_config(tmp_path, iterations=5, checkpoint_every=2):
    return write_config(tmp_path / "c.toml", iterations=iterations, meta_batch=5,
                        checkpoint_every=checkpoint_every, seed=4, dtype="float64")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "error",
            "PYTHONFAULTHANDLER": "1", **extra}


def test_shard_bounds_cover_the_batch_once():
    for n in range(1, 12):
        for world in range(1, n + 1):
            spans = [distributed.shard_bounds(n, r, world) for r in range(world)]
            assert [i for lo, hi in spans for i in range(lo, hi)] == list(range(n))
            assert max(hi - lo for lo, hi in spans) - min(hi - lo for lo, hi in spans) <= 1


def test_torchrun_two_ranks_match_single_process(tmp_path):
    cfg = _cli_config(tmp_path)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           str(HERE / "_dist_worker.py"), str(tmp_path), str(cfg)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=_env())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Warning" not in r.stderr, r.stderr[-3000:]
    dist = load_file(str(tmp_path / "dist.safetensors"))

    for kind in KINDS:                       # the same seed and total meta-batch, one process
        lrn = learner(kind)
        grads = lrn.meta_gradient(batch(kind))
        for n, g in grads.items():
            torch.testing.assert_close(dist[f"{kind}.grad.{n}"], g, rtol=0, atol=1e-6)
        assert any(g.abs().max() > 1e-3 for g in grads.values())
        lrn = learner(kind)
        ml.train(lrn, family(kind), iterations=5, meta_batch=META_BATCH, seed=SEED,
                 progress=False)
        for n, p in lrn.model.named_parameters():
            assert dist[f"{kind}.param.{n}"].dtype == torch.float64
            torch.testing.assert_close(dist[f"{kind}.param.{n}"], p.detach(), rtol=0, atol=1e-6)

    # rank 0 alone wrote: one metrics line per iteration, checkpoints 4 and 5, nothing else
    for run in (tmp_path / "maml", tmp_path / "cli"):
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        assert [x["iteration"] for x in lines] == [1, 2, 3, 4, 5]
        assert sorted(p.name for p in run.iterdir()) == \
            ["LATEST", "ckpt-00000004", "ckpt-00000005", "metrics.jsonl"]
    # Ctrl-C on rank 1 alone: both ranks stopped after iteration 3, rank 0 wrote there
    assert latest_checkpoint(tmp_path / "stop").name == "ckpt-00000003"
    assert len((tmp_path / "stop" / "metrics.jsonl").read_text().splitlines()) == 3
    # the CLI under torchrun equals the CLI in one process
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "one"),
                 "--no-progress"]) == 0
    one, two = load_checkpoint(tmp_path / "one")[0], load_checkpoint(tmp_path / "cli")[0]
    for k in one:
        if k.startswith("model."):
            assert one[k].dtype == torch.float64
            torch.testing.assert_close(two[k], one[k], rtol=0, atol=1e-6)
    ref = [json.loads(x)["loss"] for x in (tmp_path / "one" / "metrics.jsonl").read_text()
           .splitlines()]
    got = [json.loads(x)["loss"] for x in (tmp_path / "cli" / "metrics.jsonl").read_text()
           .splitlines()]
    assert got == pytest.approx(ref, abs=1e-9)


def _kill_rank_1_when(tmp_path, checkpoint_every, ready):
    """Two ranks started by hand (as on two nodes); SIGKILL rank 1 once ``ready(run)``:
    (rank 0's exit status, its stderr, the run folder)."""
    cfg = _cli_config(tmp_path, iterations=100000, checkpoint_every=checkpoint_every)
    run = tmp_path / "run"
    port = str(free_port())
    procs = []
    for rank in (0, 1):
        env = _env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
        cmd = [sys.executable, "-m", "metaloop", "train", "--config", str(cfg), "--out",
               str(run), "--no-progress", "--dist-timeout", "60"]
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    try:
        deadline = time.monotonic() + 120
        while not ready(run):
            assert time.monotonic() < deadline and procs[0].poll() is None, \
                procs[0].communicate()
            time.sleep(0.05)
        procs[1].send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        try:
            _, err = procs[0].communicate(timeout=60)
        except subprocess.TimeoutExpired:
            procs[0].send_signal(signal.SIGABRT)
            print(procs[0].communicate()[1][-5000:])
            raise
        took = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
    assert took < 30
    return procs[0].returncode, err, run


def test_a_dead_rank_stops_the_other_with_a_named_error(tmp_path):
    """SIGKILL rank 1 mid-run: rank 0 names the failure, keeps the checkpoints, says to
    resume, and lets go of the run's lock (its os._exit skipped the release)."""
    code, err, run = _kill_rank_1_when(tmp_path, 3, lambda run: latest_checkpoint(run)
                                       is not None)
    assert code == 1, err[-3000:]
    assert "rank 0 of 2" in err and "another rank has most likely died" in err, err[-3000:]
    assert "restart every rank with --resume" in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert load_checkpoint(run)[1]["iteration"] >= 2        # the last checkpoint still loads
    assert not (run / ".metaloop-lock").exists()


def test_a_rank_dead_before_the_first_checkpoint_is_not_advised_to_resume(tmp_path):
    """Nothing to resume: the advice was --resume, and the run folder was already gone."""
    def training(run):
        try:
            return (run / "metrics.jsonl").stat().st_size > 0
        except OSError:
            return False
    code, err, run = _kill_rank_1_when(tmp_path, 100000, training)
    assert code == 1, err[-3000:]
    assert "another rank has most likely died" in err, err[-3000:]
    assert "No checkpoint was written yet: start every rank again with the same command" \
        in err, err[-3000:]
    assert "--resume" not in err and "Traceback" not in err, err[-3000:]
    assert not run.exists()                  # a new run's folder: removed with nothing in it


def test_meta_batch_smaller_than_world_is_refused(monkeypatch):
    monkeypatch.setattr(distributed, "rank_world", lambda: (0, 4))
    with pytest.raises(ValueError, match="meta_batch=3 is smaller than the 4 ranks"):
        ml.train(learner("maml"), ml.tasks.Sinusoid(), iterations=1, meta_batch=3,
                 progress=False)


@pytest.mark.parametrize("env,match", [
    ({"WORLD_SIZE": "2"}, "RANK is not set"),
    ({"WORLD_SIZE": "2", "RANK": "x"}, "RANK='x' is not an integer"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2 is outside"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR is not set"),
])
def test_bad_torchrun_environment_is_named(monkeypatch, env, match):
    for k in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match=match):
        distributed.init("cpu")
    assert not distributed.is_active()


def test_a_missing_peer_at_start_up_is_named_after_the_timeout(monkeypatch):
    for k, v in {"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(distributed.DistributedError, match="rank 1 of 2: could not join the "
                                                           "gloo process group at 127.0.0.1"):
        distributed.init("cpu", timeout_s=1)
    assert not distributed.is_active()


@pytest.mark.parametrize("timeout", [float("inf"), 1e10, 1e15, float("nan"), 0, -5, True])
def test_a_timeout_that_would_overflow_is_refused_by_name(monkeypatch, timeout):
    """inf used to end in datetime's OverflowError (a traceback), and 1e10 s overflowed inside
    PyTorch into an instant "could not join ... within 1e+10 s"."""
    for k, v in {"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ValueError, match="positive, finite number of seconds up to 1e"):
        distributed.init("cpu", timeout_s=timeout)
    assert not distributed.is_active()


def test_cli_dist_timeout_inf_exits_2_with_the_message(monkeypatch, tmp_path, capsys):
    for k, v in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port())}.items():
        monkeypatch.setenv(k, v)
    cfg = _cli_config(tmp_path)
    assert main(["train", "--config", str(cfg), "--out", str(tmp_path / "run"),
                 "--no-progress", "--dist-timeout", "inf"]) == 2
    assert "finite number of seconds" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_start_up_failure_does_not_send_the_user_to_resume(monkeypatch):
    """The initial broadcast runs before any checkpoint exists: --resume would fail."""
    def dead(*a, **k):
        raise RuntimeError("Connection reset by peer")
    monkeypatch.setattr(distributed, "rank_world", lambda: (0, 2))
    monkeypatch.setattr(distributed.dist, "broadcast", dead)
    with pytest.raises(distributed.DistributedError) as e:
        distributed.broadcast_params(torch.nn.Linear(2, 1))
    assert "rank 0 of 2: broadcast of the initial parameters failed" in str(e.value)
    assert "No checkpoint was written yet" in str(e.value) and "--resume" not in str(e.value)
    # a failure later in the run keeps the advice to resume
    monkeypatch.setattr(distributed.dist, "barrier", dead)
    with pytest.raises(distributed.DistributedError, match="restart every rank with --resume"):
        distributed.barrier("the final checkpoint")


@pytest.mark.parametrize("visible,local,want", [
    (None, "0", "cuda:0"),          # one GPU, one process per node
    (None, "1", None),              # two processes on the one GPU every process sees: refused
    ("3", "1", "cuda:0"),           # a scheduler gave this worker its own one GPU
])
def test_device_for_refuses_two_ranks_on_one_visible_gpu(monkeypatch, visible, local, want):
    """It used to put LOCAL_RANK 1 on cuda:0 too, where NCCL fails at the first collective
    with an error that metaloop reports as a dead peer."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    for k in distributed._VISIBLE_DEVICES:
        monkeypatch.delenv(k, raising=False)
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    monkeypatch.setenv("LOCAL_RANK", local)
    if want is None:
        with pytest.raises(ValueError, match="LOCAL_RANK=1 but only 1 GPU is visible"):
            distributed.device_for("cuda")
    else:
        assert distributed.device_for("cuda") == torch.device(want)
