"""``evaluate_strategies`` scores a frozen-body row on query features computed once per task,
in eval mode as ``Adapted`` scores: a user's model left in train mode with dropout gives the
same accuracies as each row scored on its own."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import torch
from torch import nn

from metaloop.adapt.linear_probe import linear_probe
from metaloop.recipes import adapt as recipe


class _DropoutNet(nn.Module):
    """``forward(x, head=False)``: features ``[N, 16]`` after dropout, or logits ``[N, 2]``."""

    def __init__(self):
        super().__init__()
        self.body, self.drop, self.head = nn.Linear(3, 16), nn.Dropout(0.5), nn.Linear(16, 2)

    def forward(self, x, head=True):
        f = self.drop(torch.relu(self.body(x)))                       # [N, 16]
        return self.head(f) if head else f


def _family(tmp_path):
    from metaloop.tasks import Episodes
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 20)
    x = rng.normal(size=(80, 3)).astype("float32") + y[:, None].astype("float32")
    np.savez(tmp_path / "d.npz", x=x, y=y)
    return Episodes.from_tensors(tmp_path / "d.npz", ways=2, shots=2, queries=15)


def test_frozen_body_rows_are_scored_in_eval_mode_like_adapted(tmp_path):
    torch.manual_seed(0)
    model = _DropoutNet().train()                 # a user's model, left in train mode
    probe = functools.partial(linear_probe, model, solver="ridge", lam=0.1)

    def frozen(sx, sy, classes):
        return probe(sx, sy)

    def alone(sx, sy, classes):                   # the same predictor, scored by ``Adapted``
        return dataclasses.replace(probe(sx, sy), info={})

    rows = {"probe-ridge": (2, frozen), "probe-logistic": (2, alone)}
    got = recipe.evaluate_strategies(rows, _family(tmp_path), 6, seed=3)
    shared = got["probe-ridge"]["per_task"]["accuracy"]
    assert got["probe-ridge"]["info"]["frozen_body"] is True
    assert shared == got["probe-logistic"]["per_task"]["accuracy"]
    assert len(shared) == 6 and all(0.0 <= a <= 1.0 for a in shared)
    assert all(m.training for m in model.modules())            # the model's modes restored
