"""Resuming across process counts: a torchrun run resumed on the same number of ranks repeats
its arithmetic bit for bit; resumed in one process (or a one-process run under torchrun) it
differs at the rounding level only (docs/distributed.md)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from metaloop.cli.main import main
from metaloop.train.checkpoint import latest_checkpoint, load_checkpoint

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from _cli import write_config  # noqa: E402
from _ranks import free_port  # noqa: E402


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "error"}


pytestmark = pytest.mark.slow         # four torchrun launches: about a minute on 2 cores


def _torchrun(*args: str, nproc: int = 2) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()),
           "-m", "metaloop", "train", "--no-progress", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=_env())
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def _cut(run: Path, to: Path, iteration: int) -> Path:
    """A copy of ``run`` as a crash after checkpoint ``iteration`` leaves it."""
    shutil.copytree(run, to)
    for ck in to.glob("ckpt-*"):
        if int(ck.name.split("-")[1]) > iteration:
            shutil.rmtree(ck)
    (to / "LATEST").write_text(f"ckpt-{iteration:08d}")
    assert latest_checkpoint(to).name == f"ckpt-{iteration:08d}"
    return to


def _model(run: Path) -> dict[str, torch.Tensor]:
    tensors, state = load_checkpoint(run)
    assert state["iteration"] == 6
    return {k: v for k, v in tensors.items() if k.startswith("model.")}


def _losses(run: Path) -> list[float]:
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [x["iteration"] for x in lines] == [1, 2, 3, 4, 5, 6]
    return [x["loss"] for x in lines]


def test_resume_on_the_same_or_another_number_of_processes(tmp_path):
    cfg = write_config(tmp_path / "c.toml", iterations=6, meta_batch=5, checkpoint_every=2,
                       seed=4, dtype="float64")
    one, two = tmp_path / "one", tmp_path / "two"
    assert main(["train", "--config", str(cfg), "--out", str(one), "--no-progress"]) == 0
    _torchrun("--config", str(cfg), "--out", str(two))
    _cut(two, tmp_path / "two_two", 4)
    _cut(two, tmp_path / "two_one", 4)
    _cut(one, tmp_path / "one_two", 4)
    _torchrun("--resume", str(tmp_path / "two_two"))                     # 2 ranks -> 2 ranks
    _torchrun("--resume", str(tmp_path / "one_two"))                     # 1 process -> 2 ranks
    assert main(["train", "--resume", str(tmp_path / "two_one"), "--no-progress"]) == 0

    ref, dist = _model(one), _model(two)
    for k, v in _model(tmp_path / "two_two").items():            # same ranks: bit for bit
        assert torch.equal(v, dist[k]), k
    assert _losses(tmp_path / "two_two") == _losses(two)
    for run in ("two_one", "one_two"):                           # another count: rounding
        for k, v in _model(tmp_path / run).items():
            torch.testing.assert_close(v, ref[k], rtol=0, atol=1e-12, msg=f"{run} {k}")
        assert _losses(tmp_path / run) == pytest.approx(_losses(one), abs=1e-12)
    # a torchrun checkpoint carries no cpu_seconds (rank 0 sees its own CPU time only)
    assert "cpu_seconds" not in load_checkpoint(tmp_path / "two_one")[1]
    assert "cpu_seconds" in load_checkpoint(one)[1]
