"""New heads: zero logits exactly, random init, fitted heads, and a bit-identical body."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from metaloop.adapt.heads import fit_head, head_names, init_head, warm_head
from metaloop.func.params import detach, forward, params_of
from metaloop.models import MLP, Conv4

sys.path.insert(0, str(Path(__file__).parent))
from _checks import TiedHead  # noqa: E402


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
    w, b = fit_head(x, y, 3, solver, **({} if solver == "sgd" else {"lam": 0.1}))
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


def test_fit_head_refuses_zero_steps_for_every_iterative_solver():
    """steps=0 ran one Newton step for "logistic" (max(steps, 1)) but returned a zero head
    for "sgd", and newton_head refuses it: now both iterative solvers refuse steps < 1."""
    x, y = _clusters(d=3)
    for solver, default in (("logistic", 10), ("sgd", 100)):
        for steps in (0, -1, 2.0, True):
            with pytest.raises(ValueError, match=rf"steps must be None \(the default, "
                                                 rf"{default}\) or an int >= 1"):
                fit_head(x, y, 3, solver, steps=steps)
    w1, _ = fit_head(x, y, 3, "logistic", steps=1)
    w10, _ = fit_head(x, y, 3, "logistic")
    assert not torch.equal(w1, w10)                  # steps is honoured, default 10


@pytest.mark.parametrize("solver,kw,unused", [
    ("ridge", {"steps": 5}, "steps=5"),
    ("ridge", {"lr": 0.5}, "lr=0.5"),
    ("ridge", {"steps": 0}, "steps=0"),
    ("logistic", {"lr": 0.01}, "lr=0.01"),
    ("sgd", {"lam": 0.3}, "lam=0.3"),
])
def test_fit_head_refuses_options_its_solver_ignores(solver, kw, unused):
    """The ridge solver silently ignored steps and lr (and logistic lr, sgd lam)."""
    x, y = _clusters(d=3)
    with pytest.raises(ValueError, match=rf"solver='{solver}' .* does not use {unused}"):
        fit_head(x, y, 3, solver, **kw)


def test_fit_head_accepts_unused_options_left_at_their_defaults():
    x, y = _clusters(d=3)
    a = fit_head(x, y, 3, "ridge", lam=0.5, steps=None, lr=0.1)
    b = fit_head(x, y, 3, "ridge", lam=0.5)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    fit_head(x, y, 3, "sgd", lam=1.0, steps=3, lr=0.05)


def test_init_head_refuses_bad_class_counts_and_unknown_names():
    p = detach(params_of(MLP(4, (8,), 3)))
    for n in (0, -2, 2.0, True):
        with pytest.raises(ValueError, match="n_classes must be an int >= 1"):
            init_head(p, ("head.weight", "head.bias"), n)
    with pytest.raises(ValueError, match=r"head names \['head.w', 'head.b'\] are not in "
                                         r"params"):
        init_head(p, ("head.w", "head.b"), 3)
    with pytest.raises(ValueError, match="head must be \\(weight name, bias name\\)"):
        init_head(p, "head.weight", 3)
    with pytest.raises(ValueError, match=r"head weight 'head.bias' must be \[C, D\]"):
        init_head(p, ("head.bias", "head.weight"), 3)
    assert init_head(p, ("head.weight", "head.bias"), 1)["head.weight"].shape == (1, 8)


@pytest.mark.parametrize("adapt", ["linear_probe", "finetune", "warm_head"])
def test_a_new_head_tied_to_another_layer_is_refused_by_name(adapt):
    # the new [C, D] head replaced embed.weight, which the embedding uses too: a 3-way
    # task's predictions then read a 3-row embedding for 5 tokens
    from metaloop.adapt.finetune import finetune
    from metaloop.adapt.linear_probe import linear_probe

    model = TiedHead()
    x, y = torch.randint(0, 5, (6, 4)), torch.tensor([0, 0, 1, 1, 2, 2])
    run = {"linear_probe": lambda: linear_probe(model, x, y),
           "finetune": lambda: finetune(model, x, y, steps=1),
           "warm_head": lambda: warm_head(model, detach(params_of(model)), x, y)}[adapt]
    with pytest.raises(ValueError, match=r"head tensor embed\.weight is also the model's "
                                         r"head\.weight \(tied weights\)"):
        run()


def _logistic_gradient(features, y, n_classes, lam, weight, bias):
    """The gradient of newton_head's objective, sum_i CE + lam / 2 ||[W, b]||^2, in
    float64 [C, D + 1]: zero at the fitted head."""
    phi = torch.cat([features, torch.ones(len(y), 1)], 1).double()            # [N, D+1]
    w = torch.cat([weight, bias[:, None]], 1).double()                         # [C, D+1]
    p = torch.softmax(phi @ w.T, -1)                                           # [N, C]
    return (p - torch.nn.functional.one_hot(y, n_classes).double()).T @ phi + lam * w


def test_a_logistic_head_of_many_classes_does_not_build_the_newton_system(monkeypatch):
    """The Newton system of a C-way head has min(N, D + 1) * C unknowns and their square of
    entries: a 200-way 1-shot probe of MiniLM features asked for 6.4 GB (a traceback, or
    hours of dense solves), as did lp-ft's warm-up. Beyond NEWTON_MAX unknowns the same
    objective is minimised by L-BFGS."""
    import metaloop.adapt.heads as heads

    def refuse(*args, **kw):
        raise AssertionError("newton_head called for a 2,550-unknown system")

    monkeypatch.setattr(heads, "newton_head", refuse)
    x, y = _clusters(n_per=2, c=150, d=16)                                     # [300, 16]
    assert 17 * 150 > heads.NEWTON_MAX
    weight, bias = fit_head(x, y, 150, "logistic", lam=0.1)
    assert weight.shape == (150, 16) and bias.shape == (150,)
    assert weight.dtype == bias.dtype == torch.float32
    grad = _logistic_gradient(x, y, 150, 0.1, weight, bias)
    assert float(grad.abs().max()) < 1e-4                                      # the optimum
    assert bool(((x @ weight.T + bias).argmax(-1) == y).all())
    with torch.inference_mode():                  # as under no_grad: its own gradients
        again = fit_head(x, y, 150, "logistic", lam=0.1)
    assert torch.equal(again[0], weight) and torch.equal(again[1], bias)


@pytest.mark.parametrize("shots", [1, 5])
def test_the_large_head_solver_reaches_the_newton_heads_optimum(monkeypatch, shots):
    import metaloop.adapt.heads as heads

    x, y = _clusters(n_per=shots, c=5, d=6)
    x = x + torch.randn(x.shape, generator=torch.Generator().manual_seed(1))   # overlapping
    newton = fit_head(x, y, 5, "logistic", lam=0.1, steps=30)
    monkeypatch.setattr(heads, "NEWTON_MAX", 0)
    lbfgs = fit_head(x, y, 5, "logistic", lam=0.1)
    for a, b in zip(newton, lbfgs):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert float(_logistic_gradient(x, y, 5, 0.1, *lbfgs).abs().max()) < 1e-5
