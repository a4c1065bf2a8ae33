"""fit_probe: a linear probe on any feature callable, via the shared head solvers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metaloop.adapt.probe import fit_probe
from metaloop.adapt.ridge_head import ridge_head
from metaloop.models import Conv4

DT = torch.float64


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    proj = torch.randn(6, 4, generator=g, dtype=DT)
    x = torch.randn(12, 6, generator=g, dtype=DT)
    y = torch.arange(3).repeat(4)
    return (lambda t: torch.tanh(t @ proj)), x, y


def test_ridge_probe_equals_ridge_head_on_the_features():
    f, x, y = _data()
    probe = fit_probe(f, x, y, 3, solver="ridge", lam=0.3)
    W, b = ridge_head(f(x)[None], F.one_hot(y, 3).to(DT)[None], 0.3, intercept=True)
    xq = torch.randn(5, 6, dtype=DT)
    torch.testing.assert_close(probe(xq), f(xq) @ W[0] + b[0], rtol=1e-12, atol=1e-12)
    assert probe.weight.shape == (3, 4) and probe.bias.shape == (3,)


def test_logistic_probe_fits_separable_support_and_any_backbone():
    f, x, y = _data()
    assert (fit_probe(f, x, y, 3, lam=1e-3, steps=30)(x).argmax(1) == y).all()
    net = Conv4(1, 4, 5, image_size=16)
    feats = lambda t: net(t, head=False)                              # noqa: E731
    probe = fit_probe(feats, torch.randn(6, 1, 16, 16), torch.arange(3).repeat(2), 3)
    out = probe(torch.randn(4, 1, 16, 16))
    assert out.shape == (4, 3) and not out.requires_grad


@pytest.mark.parametrize("kw,message", [
    ({"lam": 0.0}, "lam must be finite and > 0"),
    ({"solver": "svm"}, "head solver must be one of"),
])
def test_bad_options(kw, message):
    f, x, y = _data()
    with pytest.raises(ValueError, match=message):
        fit_probe(f, x, y, 3, **kw)


def test_missing_class_and_out_of_range_labels():
    f, x, y = _data()
    with pytest.raises(ValueError, match="every class needs at least one support example"):
        fit_probe(f, x, y, 4)
    with pytest.raises(ValueError, match="labels must lie in"):
        fit_probe(f, x, y, 2)
