"""torchrun (gloo, 2 CPU processes) gives the single-process meta-gradients and parameters;
rank 0 alone writes; a rank that dies makes the other stop with a named error, not hang."""

import json
import os
import signal
import socket
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


def _cli_config(tmp_path, iterations=5, checkpoint_every=2):
    return write_config(tmp_path / "c.toml", iterations=iterations, meta_batch=5,
                        checkpoint_every=checkpoint_every, seed=4, dtype="float64")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
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


def test_a_dead_rank_stops_the_other_with_a_named_error(tmp_path):
    """Two ranks started by hand (as on two nodes); SIGKILL rank 1 mid-run."""
    cfg = _cli_config(tmp_path, iterations=100000, checkpoint_every=3)
    run = tmp_path / "run"
    port = str(_free_port())
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
        while latest_checkpoint(run) is None:
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
    assert procs[0].returncode == 1, err[-3000:]
    assert "rank 0 of 2" in err and "another rank has most likely died" in err, err[-3000:]
    assert "Traceback" not in err, err[-3000:]
    assert took < 30
    assert load_checkpoint(run)[1]["iteration"] >= 2        # the last checkpoint still loads


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
                 "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(distributed.DistributedError, match="rank 1 of 2: could not join the "
                                                           "gloo process group at 127.0.0.1"):
        distributed.init("cpu", timeout_s=1)
    assert not distributed.is_active()
