"""finetune, lpft and the sgd head solver against training loops written out in plain torch.

The references compute the network by hand (``tanh(x W1^T + b1) W2^T + b2``), take gradients
with ``torch.autograd.grad`` and apply SGD or Adam (Kingma & Ba, with torch's defaults
``betas=(0.9, 0.999), eps=1e-8``) written out, so that the rates of the body and the head,
the optimiser, the number of steps, which tensors move and the start of the head are all
checked number for number, in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import minimize
from torch import nn

from metaloop.adapt.finetune import finetune, lpft
from metaloop.adapt.heads import fit_head, init_head
from metaloop.adapt.linear_probe import linear_probe

DT = torch.float64
IN, HID, C = 4, 6, 3


class Net(nn.Module):
    """A one-hidden-layer network with the ``forward(x, head=False)`` the adapters use."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Linear(IN, HID), nn.Tanh())
        self.head = nn.Linear(HID, 5)

    def forward(self, x, head=True):
        f = self.body(x)
        return self.head(f) if head else f


def _features(p, x):
    return torch.tanh(x @ p["body.0.weight"].T + p["body.0.bias"])                   # [N, HID]


def _logits(p, x):
    return _features(p, x) @ p["head.weight"].T + p["head.bias"]                     # [N, C]


def _task(seed=0, shots=3):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(C * shots, IN, generator=g, dtype=DT)
    return x, torch.arange(C).repeat(shots)


def _train(p, x, y, steps, rates, optimizer):
    """``steps`` full-batch steps of SGD or Adam on the mean cross-entropy; ``rates`` maps
    each trained name to its learning rate, every other tensor stays fixed."""
    p = {n: t.detach().clone() for n, t in p.items()}
    m = {n: torch.zeros_like(p[n]) for n in rates}
    v = {n: torch.zeros_like(p[n]) for n in rates}
    for k in range(1, steps + 1):
        leaves = {n: p[n].requires_grad_(True) for n in rates}
        loss = F.cross_entropy(_logits(p, x), y)
        grads = dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))
        with torch.no_grad():
            for n, g in grads.items():
                if optimizer == "sgd":
                    step = g
                else:
                    m[n] = 0.9 * m[n] + 0.1 * g
                    v[n] = 0.999 * v[n] + 0.001 * g * g
                    step = (m[n] / (1 - 0.9 ** k)) / ((v[n] / (1 - 0.999 ** k)).sqrt() + 1e-8)
                p[n] = p[n].detach() - rates[n] * step
    return {n: t.detach() for n, t in p.items()}


def _start(model, head_weight, head_bias):
    p = {n: t.detach().clone() for n, t in model.named_parameters()}
    return {**p, "head.weight": head_weight, "head.bias": head_bias}


BODY = ["body.0.weight", "body.0.bias"]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("adapt", [None, ["body.0.bias"]])
def test_finetune_from_a_zero_head_matches_the_reference_loop(optimizer, adapt):
    model = Net().double()
    x, y = _task()
    lr, head_lr, steps = 0.05, 0.5, 4
    a = finetune(model, x, y, steps=steps, lr=lr, head_lr=head_lr, optimizer=optimizer,
                 adapt=adapt)
    zero = _start(model, torch.zeros(C, HID, dtype=DT), torch.zeros(C, dtype=DT))
    body = BODY if adapt is None else adapt
    rates = {**{n: lr for n in body}, "head.weight": head_lr, "head.bias": head_lr}
    ref = _train(zero, x, y, steps, rates, optimizer)
    assert set(a.names) == set(rates)
    for n, t in ref.items():
        torch.testing.assert_close(a.params[n], t, rtol=1e-12, atol=1e-12, msg=n)
    xq = torch.randn(7, IN, generator=torch.Generator().manual_seed(9), dtype=DT)
    torch.testing.assert_close(a(xq), _logits(ref, xq), rtol=1e-12, atol=1e-12)


def test_finetune_from_a_random_head_starts_from_that_head():
    model = Net().double()
    x, y = _task(1)
    a = finetune(model, x, y, steps=3, lr=0.05, head_lr=0.5, optimizer="sgd",
                 head_init="random", generator=torch.Generator().manual_seed(3))
    start = init_head(_start(model, model.head.weight.detach(), model.head.bias.detach()),
                      ("head.weight", "head.bias"), C, "random",
                      torch.Generator().manual_seed(3))
    rates = {**{n: 0.05 for n in BODY}, "head.weight": 0.5, "head.bias": 0.5}
    ref = _train(start, x, y, 3, rates, "sgd")
    for n, t in ref.items():
        torch.testing.assert_close(a.params[n], t, rtol=1e-12, atol=1e-12, msg=n)


def _scipy_logistic_head(feats, y, lam):
    """argmin sum_i CE(W f_i + b, y_i) + lam / 2 (||W||^2 + ||b||^2), by scipy L-BFGS-B:
    the penalised logistic head fit_head's "logistic" solver documents (the bias is the
    weight of a constant feature)."""
    phi = np.concatenate([feats.numpy(), np.ones((len(y), 1))], 1)                  # [N, D+1]
    onehot = np.eye(C)[y.numpy()]

    def f(w):
        W = w.reshape(C, -1)
        z = phi @ W.T
        zmax = z.max(1, keepdims=True)
        p = np.exp(z - zmax)
        lse = np.log(p.sum(1, keepdims=True)) + zmax
        p /= p.sum(1, keepdims=True)
        return ((lse - (z * onehot).sum(1, keepdims=True)).sum() + 0.5 * lam * (W ** 2).sum(),
                ((p - onehot).T @ phi + lam * W).ravel())

    res = minimize(f, np.zeros(C * phi.shape[1]), jac=True, method="L-BFGS-B",
                   options={"maxiter": 5000, "gtol": 1e-12, "ftol": 1e-16, "maxcor": 30})
    W = torch.from_numpy(res.x.reshape(C, -1))
    return W[:, :-1], W[:, -1]


@pytest.mark.parametrize("lam", [0.3, 2.0])
def test_lpft_fits_the_logistic_head_on_frozen_features_then_trains_everything(lam):
    model = Net().double()
    x, y = _task(2)
    p0 = _start(model, model.head.weight, model.head.bias)
    w, b = _scipy_logistic_head(_features(p0, x).detach(), y, lam)
    warm = lpft(model, x, y, steps=0, warmup_kw={"lam": lam, "steps": 20})
    torch.testing.assert_close(warm.params["head.weight"], w, rtol=0, atol=1e-8)
    torch.testing.assert_close(warm.params["head.bias"], b, rtol=0, atol=1e-8)
    a = lpft(model, x, y, steps=3, lr=0.05, head_lr=0.5, optimizer="sgd",
             warmup_kw={"lam": lam, "steps": 20})
    rates = {**{n: 0.05 for n in BODY}, "head.weight": 0.5, "head.bias": 0.5}
    ref = _train({**p0, "head.weight": w, "head.bias": b}, x, y, 3, rates, "sgd")
    for n, t in ref.items():
        torch.testing.assert_close(a.params[n], t, rtol=0, atol=1e-7, msg=n)
    probe = linear_probe(model, x, y, lam=lam, steps=20)
    torch.testing.assert_close(probe.params["head.weight"], w, rtol=0, atol=1e-8)


def test_the_sgd_head_solver_is_adam_from_a_zero_head():
    g = torch.Generator().manual_seed(4)
    feats = torch.randn(9, HID, generator=g, dtype=DT)
    y = torch.arange(C).repeat(3)
    for steps in (1, 2, 7):
        weight, bias = fit_head(feats, y, C, "sgd", steps=steps, lr=0.2)
        # Adam on W, b of the logits feats W^T + b
        p = {"w": torch.zeros(C, HID, dtype=DT), "b": torch.zeros(C, dtype=DT)}
        m = {n: torch.zeros_like(t) for n, t in p.items()}
        v = {n: torch.zeros_like(t) for n, t in p.items()}
        for k in range(1, steps + 1):
            w_, b_ = (t.clone().requires_grad_(True) for t in (p["w"], p["b"]))
            grads = torch.autograd.grad(F.cross_entropy(feats @ w_.T + b_, y), (w_, b_))
            for (n, t), gr in zip(p.items(), grads):
                m[n] = 0.9 * m[n] + 0.1 * gr
                v[n] = 0.999 * v[n] + 0.001 * gr * gr
                p[n] = t - 0.2 * (m[n] / (1 - 0.9 ** k)) / ((v[n] / (1 - 0.999 ** k)).sqrt()
                                                              + 1e-8)
        torch.testing.assert_close(weight, p["w"], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(bias, p["b"], rtol=1e-12, atol=1e-12)


def test_a_random_head_has_the_range_of_nn_linear():
    """nn.Linear's default init draws weight and bias uniformly in +-1/sqrt(D); 2,000 draws
    come within 1% of the bound (the chance of missing it is below 1e-8) and never pass it."""
    d = 400
    p = {"w": torch.zeros(7, d, dtype=DT), "b": torch.zeros(7, dtype=DT)}
    out = init_head(p, ("w", "b"), 5, "random", torch.Generator().manual_seed(0))
    bound = d ** -0.5
    w = out["w"]
    assert w.shape == (5, d) and out["b"].shape == (5,)
    assert float(w.abs().max()) <= bound and float(w.abs().max()) > 0.99 * bound
    assert abs(float(w.mean())) < 0.1 * bound                  # centred: mean +-0.013 bound
    assert float(out["b"].abs().max()) <= bound
    torch.manual_seed(0)
    top = float(nn.Linear(d, 5).weight.detach().abs().max())   # what the bound is quoted from
    assert top <= bound < 1.01 * top
