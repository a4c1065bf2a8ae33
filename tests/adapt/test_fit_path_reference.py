"""fit_path, the adapters' training loop: every yielded iterate against gradient descent
written out in plain torch, kept after later steps."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from metaloop.adapt._fit import fit_path

DT = torch.float64


def _linear(p, x):
    return F.linear(x, p["w"], p["b"])                                        # [N, C]


def test_every_yielded_iterate_is_that_steps_and_stays_so():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(6, 4, generator=g, dtype=DT), torch.arange(3).repeat(2)
    start = {"w": torch.randn(3, 4, generator=g, dtype=DT), "b": torch.zeros(3, dtype=DT)}
    path = list(fit_path(_linear, start, [(0.3, ["w"])], x, y, 3, optimizer="sgd"))
    assert len(path) == 4
    w = start["w"].clone()
    for k, p in enumerate(path):                     # read after the whole path has run
        torch.testing.assert_close(p["w"], w, rtol=1e-14, atol=1e-14, msg=f"step {k}")
        assert torch.equal(p["b"], start["b"])      # not trained
        leaf = w.clone().requires_grad_(True)
        grad, = torch.autograd.grad(F.cross_entropy(x @ leaf.T + start["b"], y), leaf)
        w = w - 0.3 * grad
    assert not torch.equal(path[0]["w"], path[-1]["w"])
    assert torch.equal(start["b"], torch.zeros(3, dtype=DT))   # the caller's tensors as given
