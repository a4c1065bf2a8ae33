"""A user's model with buffers (torch BatchNorm's running statistics, ``num_batches_tracked``)
resumes exactly: checkpoints saved the parameters only, so a resumed run, and the model it
left, had the buffers of wherever the process started (the running statistics of a fresh
model) instead of the uninterrupted run's."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import metaloop as ml
from metaloop.train.checkpoint import load_checkpoint
from metaloop.train.loop import load_model_buffers


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(1, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 1))


def _train(out, iterations, resume=False, model=None):
    learner = ml.meta.MAML(model or _model(), 0.01, 1, batching="loop")
    ml.train(learner, ml.tasks.Sinusoid(4, 4), iterations=iterations, meta_batch=2, seed=3,
             out_dir=out, resume=resume, checkpoint_every=2, progress=False)
    return learner.model


def test_a_model_with_running_statistics_resumes_exactly(tmp_path):
    whole = _train(tmp_path / "whole", 4)
    _train(tmp_path / "cut", 2)
    resumed = _train(tmp_path / "cut", 4, resume=True)     # a fresh process's model
    want, got = whole.state_dict(), resumed.state_dict()
    assert set(want) == set(got) and "1.running_mean" in want
    assert int(want["1.num_batches_tracked"]) > 0
    for k in want:
        assert torch.equal(want[k], got[k]), k
    tensors, _ = load_checkpoint(tmp_path / "whole")
    assert torch.equal(tensors["buffer.1.running_var"], want["1.running_var"])


def test_a_stored_buffer_of_another_shape_is_named(tmp_path):
    _train(tmp_path / "run", 2)
    tensors, _ = load_checkpoint(tmp_path / "run")
    other = nn.Sequential(nn.Linear(1, 8), nn.BatchNorm1d(6))
    with pytest.raises(ValueError, match=r"buffer 1.running_mean has shape \[8\] in the "
                                         r"checkpoint, \[6\] in the model"):
        load_model_buffers(other, tensors, "here")



class _Scale(nn.Module):
    """A fixed per-feature scale kept as a buffer."""

    def __init__(self):
        super().__init__()
        self.register_buffer("s", torch.linspace(0.5, 1.5, 8))

    def forward(self, x):
        return x * self.s


def _shared_buffer_model():
    """One buffered module registered under two names (a block used twice): its buffer is one
    tensor under two state_dict names; a BatchNorm's statistics change as it trains."""
    torch.manual_seed(0)
    scale = _Scale()
    return nn.Sequential(nn.Linear(1, 8), nn.BatchNorm1d(8), scale, nn.ReLU(), nn.Linear(8, 8),
                         scale, nn.ReLU(), nn.Linear(8, 1))


def test_a_buffer_shared_under_two_names_is_saved_once_and_resumes_exactly(tmp_path):
    # safetensors refuses two names for one tensor: every checkpoint of such a model failed
    whole = _train(tmp_path / "whole", 4, model=_shared_buffer_model())
    _train(tmp_path / "cut", 2, model=_shared_buffer_model())
    resumed = _train(tmp_path / "cut", 4, resume=True, model=_shared_buffer_model())
    tensors, _ = load_checkpoint(tmp_path / "whole")
    assert "buffer.2.s" in tensors and "buffer.5.s" not in tensors
    assert int(whole.state_dict()["1.num_batches_tracked"]) > 0
    for k, v in whole.state_dict().items():
        assert torch.equal(v, resumed.state_dict()[k]), k
    assert resumed[2] is resumed[5]



def test_a_distributed_run_keeps_one_state_on_every_rank_and_resumes_exactly(tmp_path):
    # each rank updated a BatchNorm's running statistics on its own shard's tasks (and rank 0
    # on validation's too), and drew dropout masks for its own tasks from torch's RNG, so the
    # ranks' buffers and RNG states drifted apart; a resume, which gives every rank rank 0's
    # checkpointed ones, did not repeat the uninterrupted run (the parameters differed)
    import os
    import socket
    import subprocess
    import sys
    from pathlib import Path

    from safetensors.torch import load_file

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    worker = Path(__file__).parent / "_dist_buffers_worker.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(port), str(worker),
           str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=180,
                       env={**env, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ranks = [load_file(str(tmp_path / f"rank{i}.safetensors")) for i in (0, 1)]
    assert int(ranks[0]["bn.whole.1.num_batches_tracked"]) > 0
    for got in ranks:                        # every rank, whole or resumed: rank 0's whole run
        assert set(got) == set(ranks[0])
        for k in got:
            kind, _, name = k.split(".", 2)
            assert torch.equal(got[k], ranks[0][f"{kind}.whole.{name}"]), k
    tensors, _ = load_checkpoint(tmp_path / "bn")
    assert torch.equal(tensors["buffer.1.running_var"], ranks[1]["bn.whole.1.running_var"])
