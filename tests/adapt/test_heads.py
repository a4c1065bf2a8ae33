"""New heads: zero logits exactly, random init, fitted heads, and a bit-identical body."""

from __future__ import annotations

import pytest
import torch

from metaloop.adapt.heads import fit_head, head_names, init_head, warm_head
from metaloop.func.params import detach, forward, params_of
from metaloop.models import MLP, Conv4


def _clusters(n_per=4, c=3, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(c, d, generator=g)
    y = torch.arange(c).repeat_interleave(n_per)
    return centres[y] + 0.1 * torch.randn(len(y), d, generator=g), y


def test_zero_head_gives_logits_exactly_zero():
    model = Conv4(1, 8, out_dim=7)
    params = init_head(detach(params_of(model)), head_names(model), 4, "zero")
    out = forward(model, params, torch.rand(6, 1, 28, 28))
    assert out.shape == (6, 4) and torch.equal(out, torch.zeros(6, 4))


def test_random_head_is_linear_default_init_and_seeded():
    model = MLP(3, (10,), 2)
    p = detach(params_of(model))
    a = init_head(p, head_names(model), 5, "random", torch.Generator().manual_seed(1))
    b = init_head(p, head_names(model), 5, "random", torch.Generator().manual_seed(1))
    assert a["head.weight"].shape == (5, 10) and torch.equal(a["head.weight"], b["head.weight"])
    assert float(a["head.weight"].abs().max()) <= 10 ** -0.5
    assert float(a["head.weight"].abs().min()) > 0
    with pytest.raises(ValueError, match="head init must be one of"):
        init_head(p, head_names(model), 5, "learned")


@pytest.mark.parametrize("solver", ["logistic", "ridge", "sgd"])
def test_fit_head_separates_clusters(solver):
    x, y = _clusters()
    w, b = fit_head(x, y, 3, solver, lam=0.1)
    assert w.shape == (3, 6) and b.shape == (3,)
    assert torch.equal((x @ w.T + b).argmax(-1), y)


@pytest.mark.parametrize("solver", ["logistic", "ridge", "sgd"])
def test_warm_head_leaves_the_body_bit_identical(solver):
    model = Conv4(1, 8, out_dim=5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    start = detach(params_of(model))
    x, y = torch.rand(6, 1, 28, 28), torch.arange(3).repeat(2)
    warm = warm_head(model, start, x, y, solver=solver)
    assert warm["head.weight"].shape == (3, model.feature_dim)
    assert not torch.equal(warm["head.bias"], torch.zeros(3)) or solver == "logistic"
    for n, t in warm.items():
        if not n.startswith("head."):
            assert t is start[n] and torch.equal(t, before[n]), n
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n          # the model itself is untouched


def test_head_and_solver_errors():
    model = MLP(3, (4,), 2)
    with pytest.raises(ValueError, match="head must be a weight and a bias"):
        head_names(model, ["head.weight"])
    x, y = _clusters(d=3)
    with pytest.raises(ValueError, match="head solver must be one of"):
        fit_head(x, y, 3, "svm")
    with pytest.raises(ValueError, match="the support set is empty"):
        warm_head(model, detach(params_of(model)), x[:0], y[:0])
