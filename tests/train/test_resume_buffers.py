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
