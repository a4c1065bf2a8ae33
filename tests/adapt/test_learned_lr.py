"""Learned per-tensor, per-step inner step sizes (MAML++ LSLR): exact meta-gradients.

Every gradient here is checked in float64 against an independent computation: an explicit
inner loop written out with ``torch.autograd.grad`` (theta_{k+1} = theta_k - a[k, j] g_{k,j}),
and central finite differences in the step sizes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from metaloop.adapt.learned_lr import InnerLRs, split_lrs, step_lr
from metaloop.adapt.sgd import SGDAdapter
from metaloop.func.losses import get_loss
from metaloop.meta import MAML
from metaloop.models import MLP

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import meta_gradient_cases, tiny_meta_batch  # noqa: E402

RTOL = 1e-6


# every test here runs in float64 (the float64 fixture of tests/conftest.py)
pytestmark = pytest.mark.usefixtures("float64")


def _setup(kind):
    model, loss, batch = tiny_meta_batch(kind, 2, 3, hidden=(12, 12))
    return model, loss, 0.05 if kind == "mlp" else 0.3, batch


def _reference(model, loss, names, lrs, batch, first_order):
    """Mean query loss, with the inner loop written out (no metaloop inner-loop code)."""
    lf = get_loss(loss)
    base = dict(model.named_parameters())
    total = 0.0
    for i in range(batch.num_tasks):
        sx, sy, qx, qy = batch.task(i)
        p = dict(base)
        for k in range(lrs.shape[0]):
            out = torch.func.functional_call(model, p, (sx,))
            gs = torch.autograd.grad(lf(out, sy), [p[n] for n in names],
                                     create_graph=not first_order)
            p = {**p, **{n: p[n] - lrs[k, j] * g for j, (n, g) in enumerate(zip(names, gs))}}
        total = total + lf(torch.func.functional_call(model, p, (qx,)), qy)
    return total / batch.num_tasks


def _close(a, b):
    a, b = a.detach(), b.detach()
    scale = b.abs().max().clamp_min(1e-8)
    return float((a - b).abs().max() / scale)


@meta_gradient_cases
def test_meta_gradient_matches_unrolled_reference(kind, first_order, steps, method):
    model, loss, lr, batch = _setup(kind)
    learner = method(model, lr, steps, first_order=first_order, loss=loss, learn_lr=True)
    assert isinstance(learner.model, InnerLRs) and learner.net is model
    with torch.no_grad():   # distinct entries, so that a wrong column or row shows
        table = learner.model.inner_lr
        table.copy_(lr * (1 + 0.3 * torch.rand(table.shape, generator=torch.Generator()
                                              .manual_seed(5))))
    got = learner.meta_gradient(batch)
    params = dict(learner.model.named_parameters())
    want_loss = _reference(model, loss, learner.inner.names, params["inner_lr"], batch,
                           first_order)
    want = dict(zip(params, torch.autograd.grad(want_loss, list(params.values()),
                                                allow_unused=True)))
    assert set(got) == set(params)
    for n, w in want.items():
        w = torch.zeros_like(params[n]) if w is None else w
        assert _close(got[n], w) < RTOL, n
    assert float(got["inner_lr"].abs().max()) > 0
    loss_val, _ = learner.meta_loss(batch)
    assert abs(float(loss_val.detach()) - float(want_loss.detach())) < 1e-10


def test_step_size_gradient_matches_finite_differences():
    model, loss, lr, batch = _setup("mlp")
    learner = MAML(model, lr, 2, loss=loss, learn_lr=True)
    got = learner.meta_gradient(batch)["inner_lr"]                    # [2, 6]
    table = learner.model.inner_lr
    eps = 1e-6
    fd = torch.zeros_like(table)
    with torch.no_grad():
        for idx in [(0, 0), (0, 3), (1, 1), (1, 5)]:
            table[idx] += eps
            up = float(learner.meta_loss(batch)[0].detach())
            table[idx] -= 2 * eps
            down = float(learner.meta_loss(batch)[0].detach())
            table[idx] += eps
            fd[idx] = (up - down) / (2 * eps)
            assert abs(float(got[idx]) - float(fd[idx])) < 1e-6 * max(1.0, abs(float(fd[idx])))


def test_equal_table_gives_plain_maml_gradient():
    model, loss, lr, batch = _setup("conv4")
    plain = MAML(model, lr, 2, loss=loss).meta_gradient(batch)
    learned = MAML(model, lr, 2, loss=loss, learn_lr=True).meta_gradient(batch)
    for n, g in plain.items():
        assert _close(learned[f"net.{n}"], g) < 1e-10, n


def test_vmap_batching_agrees_with_loop():
    model, loss, lr, batch = _setup("mlp")
    loop = MAML(model, lr, 2, loss=loss, learn_lr=True, batching="loop")
    vm = MAML(model, lr, 2, loss=loss, learn_lr=True, batching="vmap")
    with torch.no_grad():
        vm.model.inner_lr.copy_(torch.tensor([[0.03], [0.07]]).expand(2, 6))
        loop.model.inner_lr.copy_(vm.model.inner_lr)
    a, b = loop.meta_gradient(batch), vm.meta_gradient(batch)
    for n in a:
        assert _close(b[n], a[n]) < 1e-10, n


def test_adapt_reuses_the_last_row_past_the_trained_steps():
    model, loss, lr, batch = _setup("mlp")
    learner = MAML(model, lr, 2, loss=loss, learn_lr=True)
    with torch.no_grad():
        learner.model.inner_lr.copy_(torch.rand(2, 6, generator=torch.Generator()
                                                .manual_seed(6)) * 0.1)
    sx, sy, _, _ = batch.task(0)
    got = list(learner.adapt_path(sx, sy, 4))
    names = learner.inner.names
    p = {n: t.detach().requires_grad_() for n, t in model.named_parameters()}
    table = learner.model.inner_lr.detach()
    for k in range(4):
        out = torch.func.functional_call(model, p, (sx,))
        gs = torch.autograd.grad(torch.nn.functional.mse_loss(out, sy), [p[n] for n in names])
        p = {n: (p[n] - table[min(k, 1), j] * g).detach().requires_grad_()
             for j, (n, g) in enumerate(zip(names, gs))}
        for n in names:
            assert _close(got[k + 1][n], p[n]) < 1e-10, (k, n)
    assert set(got[-1]) == set(dict(model.named_parameters()))    # the network's names


def test_split_and_step_lr():
    model = MLP(1, (4,), 1)
    wrapped = InnerLRs(model, 4, 3, 0.2)
    net, lrs = split_lrs(wrapped, dict(wrapped.named_parameters()))
    assert set(net) == set(dict(model.named_parameters())) and lrs.shape == (3, 4)
    assert split_lrs(model, {"a": 1})[1] is None
    assert step_lr(0.5, 7) == 0.5
    assert torch.equal(step_lr(lrs, 9), lrs[2])
    x = torch.randn(5, 1)
    assert torch.equal(wrapped(x), model(x))


def test_errors_name_the_problem():
    model = MLP(1, (4,), 1)
    with pytest.raises(ValueError, match="checkpoint"):
        MAML(model, 0.1, 2, learn_lr=True, checkpoint=True)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        InnerLRs(model, 4, 0, 0.1)
    with pytest.raises(ValueError, match="net must be an nn.Module"):
        InnerLRs("model", 4, 1, 0.1)
    adapter = SGDAdapter(model, "mse", 0.1, 1)
    x, y = torch.randn(3, 1), torch.randn(3, 1)
    with pytest.raises(ValueError, match=r"lr table must be \[steps, 4\]"):
        adapter.run(dict(model.named_parameters()), x, y, lr=torch.ones(1, 3))
    with pytest.raises(ValueError, match="lr must be a positive float"):
        adapter.run(dict(model.named_parameters()), x, y, lr=-0.1)
    a = adapter.run(dict(model.named_parameters()), x, y, lr=0.3)      # a float: as lr=0.3
    b = SGDAdapter(model, "mse", 0.3, 1).run(dict(model.named_parameters()), x, y)
    assert all(torch.equal(a[n], b[n]) for n in a)


def test_columns_follow_the_networks_order_not_adapts():
    """Column j of the table is the j-th adapted tensor in ``named_parameters()`` order,
    whatever order ``adapt`` names them in, and ``columns`` says so: a zero step size in
    the column named "0.weight" leaves that tensor where it was and moves the other."""
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    learner = MAML(net, inner_lr=0.1, inner_steps=1, loss="ce", adapt=["2.bias", "0.weight"],
                   learn_lr=True)
    assert learner.model.columns == ("0.weight", "2.bias")
    with torch.no_grad():
        learner.model.inner_lr.copy_(torch.tensor([[0.0, 1.0]]))
    x, y = torch.randn(6, 4), torch.arange(3).repeat(2)
    adapted = learner.adapt(x, y)
    assert torch.equal(adapted["0.weight"], net[0].weight)
    assert not torch.equal(adapted["2.bias"], net[2].bias)
    with pytest.raises(ValueError, match="columns must be 2 parameter names"):
        InnerLRs(net, 2, 1, 0.1, columns=["0.weight"])
