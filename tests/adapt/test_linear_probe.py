"""Approach 1: the linear probe fits a head on frozen features; the backbone never moves."""

from __future__ import annotations

import pytest
import torch

from metaloop.adapt.linear_probe import linear_probe
from metaloop.models import MLP


def _task(seed=0, c=4, shots=3, queries=5, d=8):
    g = torch.Generator().manual_seed(seed)
    centres = 4 * torch.randn(c, d, generator=g)
    sy = torch.arange(c).repeat_interleave(shots)
    qy = torch.arange(c).repeat_interleave(queries)
    noise = lambda n: 0.3 * torch.randn(n, d, generator=g)   # noqa: E731
    return centres[sy] + noise(len(sy)), sy, centres[qy] + noise(len(qy)), qy


@pytest.mark.parametrize("solver", ["logistic", "ridge", "sgd"])
def test_probe_classifies_and_keeps_the_backbone(solver):
    torch.manual_seed(0)
    model = MLP(8, (32,), out_dim=9)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    sx, sy, qx, qy = _task()
    kw = {} if solver == "sgd" else {"lam": 0.01}        # sgd is unpenalised: no lam
    a = linear_probe(model, sx, sy, solver=solver, **kw)
    assert a.trainable == 4 * 32 + 4 and a.names == ("head.weight", "head.bias")
    assert float((a(qx).argmax(-1) == qy).float().mean()) >= 0.9
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n])
        if not n.startswith("head."):
            assert torch.equal(a.params[n], before[n])


def test_probe_errors_name_the_problem():
    model = MLP(8, (4,), 2)
    sx, sy, _, _ = _task()
    with pytest.raises(ValueError, match="the support set is empty"):
        linear_probe(model, sx[:0], sy[:0])
    with pytest.raises(ValueError, match=r"classes \[1\] have no support example"):
        linear_probe(model, sx[:2], torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="support_y must be int64"):
        linear_probe(model, sx, sy.float())
