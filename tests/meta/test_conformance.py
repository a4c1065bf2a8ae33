"""One conformance suite every gradient-based meta-learner passes.

The reference is written independently of metaloop's functional core: the networks are spelled
out with torch.nn.functional on plain tensors (BatchNorm as mean/variance arithmetic), and
each task's inner loop is unrolled explicitly with torch.autograd.grad.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import metaloop as ml
from metaloop.meta import ANIL, MAML, Reptile
from metaloop.models import MLP, Conv4

sys.path.insert(0, str(Path(__file__).parent))
from _reference import conv4_features_ref  # noqa: E402

RTOL = 1e-6


# every test here runs in float64 (the float64 fixture of tests/conftest.py)
pytestmark = pytest.mark.usefixtures("float64")


def mlp_ref(p, x):
    h = F.relu(x @ p["body.fc0.weight"].T + p["body.fc0.bias"])
    h = F.relu(h @ p["body.fc1.weight"].T + p["body.fc1.bias"])
    return h @ p["head.weight"].T + p["head.bias"]


def conv4_ref(p, x):
    return conv4_features_ref(p, x) @ p["head.weight"].T + p["head.bias"]


def reference_gradient(method, f, params, batch, loss, lr, steps, adapt_names):
    """Per-task unrolled reference of the meta-gradient (mean over tasks)."""
    names = list(params)
    total = {n: torch.zeros_like(v) for n, v in params.items()}
    for i in range(batch.num_tasks):
        sx, sy, qx, qy = batch.task(i)
        p = dict(params)
        for _ in range(steps):
            g = torch.autograd.grad(loss(f(p, sx), sy), [p[n] for n in adapt_names],
                                    create_graph=(method == "maml"))
            if method != "maml":
                g = [gi.detach() for gi in g]
            p = {**p, **{n: p[n] - lr * gi for n, gi in zip(adapt_names, g)}}
        if method == "reptile":
            for n in adapt_names:
                total[n] += (params[n] - p[n]).detach() / batch.num_tasks
            continue
        grads = torch.autograd.grad(loss(f(p, qx), qy), [params[n] for n in names],
                                    allow_unused=True)
        for n, g in zip(names, grads):
            if g is not None:
                total[n] += g / batch.num_tasks
    return total


def _setup(model_name):
    torch.manual_seed(1)
    if model_name == "mlp":
        model, f, loss = MLP(1, (16, 16), 1).double(), mlp_ref, F.mse_loss
        batch = ml.tasks.Sinusoid(5, 6).sample(3, torch.Generator().manual_seed(2),
                                               dtype=torch.float64)
    else:
        model, f, loss = Conv4(1, 8, 3, image_size=16).double(), conv4_ref, F.cross_entropy
        g = torch.Generator().manual_seed(2)
        sy = torch.arange(3).repeat(3, 2)                                     # [B, 6]
        qy = torch.arange(3).repeat(3, 3)                                     # [B, 9]
        batch = ml.TaskBatch(torch.randn(3, 6, 1, 16, 16, generator=g), sy,
                             torch.randn(3, 9, 1, 16, 16, generator=g), qy)
    return model, f, loss, batch


CASES = [
    ("maml", dict(first_order=False), "loop"),
    ("maml", dict(first_order=False), "vmap"),
    ("fomaml", dict(first_order=True), "loop"),
    ("fomaml", dict(first_order=True), "vmap"),
    ("anil", dict(), "loop"),
    ("anil", dict(), "vmap"),
    ("reptile", dict(), "loop"),
    ("reptile", dict(), "vmap"),
]


def _learner(kind, model, lr, steps, loss_name, batching, kw):
    if kind in ("maml", "fomaml"):
        return MAML(model, lr, steps, loss=loss_name, batching=batching, **kw)
    if kind == "anil":
        return ANIL(model, lr, steps, loss=loss_name, batching=batching)
    return Reptile(model, lr, steps, loss=loss_name, batching=batching)


@pytest.mark.parametrize("model_name", ["mlp", "conv4"])
@pytest.mark.parametrize("kind,kw,batching", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
@pytest.mark.parametrize("steps", [1, 3])
def test_meta_gradient_matches_unrolled_reference(model_name, kind, kw, batching, steps):
    model, f, loss, batch = _setup(model_name)
    lr = 0.1 if model_name == "mlp" else 0.4
    loss_name = "mse" if model_name == "mlp" else "ce"
    learner = _learner(kind, model, lr, steps, loss_name, batching, kw)
    params = dict(model.named_parameters())
    adapt = ["head.weight", "head.bias"] if kind == "anil" else list(params)
    method = {"maml": "maml", "fomaml": "fo", "anil": "maml", "reptile": "reptile"}[kind]
    ref = reference_gradient(method, f, params, batch, loss, lr, steps, adapt)

    got = learner.meta_gradient(batch)
    for p in model.parameters():
        p.grad = None
    learner.meta_loss(batch)[0].backward()
    for n, p in params.items():
        scale = ref[n].abs().max().clamp_min(1e-6)  # conv biases before BN: exactly 0
        assert (got[n] - ref[n]).abs().max() / scale < RTOL, (n, "meta_gradient")
        assert (p.grad - ref[n]).abs().max() / scale < RTOL, (n, "meta_loss().backward()")
    assert any(ref[n].abs().max() > 0 for n in params)


def test_meta_loss_does_not_mutate_model():
    model, _, _, batch = _setup("conv4")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    MAML(model, 0.4, 2, loss="ce").meta_gradient(batch)
    Reptile(model, 0.4, 2, loss="ce").meta_gradient(batch)
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_protonet_meta_gradient_matches_per_task_reference(batching):
    """The prototype head (closed form, no inner loop): class means of the support features,
    query logits ``-scale * ||q - c_k||^2``, written out per task and per class."""
    model, _, _, batch = _setup("conv4")
    learner = ml.meta.ProtoNet(model, scale=0.5, batching=batching)
    params = dict(learner.model.named_parameters())
    losses = []
    for i in range(batch.num_tasks):
        sx, sy, qx, qy = batch.task(i)
        fs = conv4_features_ref(params, sx, "backbone.")
        fq = conv4_features_ref(params, qx, "backbone.")
        protos = [fs[sy == k].mean(0) for k in range(3)]
        logits = torch.stack([-((fq - c) ** 2).sum(1) for c in protos], 1)   # [Q, 3]
        losses.append(F.cross_entropy(params["log_scale"].exp() * logits, qy))
    names = list(params)
    grads = torch.autograd.grad(torch.stack(losses).mean(), [params[n] for n in names],
                                allow_unused=True)
    got = learner.meta_gradient(batch)
    for n, g in zip(names, grads):
        ref = torch.zeros_like(params[n]) if g is None else g
        scale = ref.abs().max().clamp_min(1e-6)
        assert (got[n] - ref).abs().max() / scale < RTOL, n
    assert got["log_scale"].abs() > 0 and got["backbone.body.0.conv.weight"].abs().max() > 0


@pytest.mark.parametrize("model_name", ["mlp", "conv4"])
@pytest.mark.parametrize("kind,kw,batching", CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_shapes_and_determinism(model_name, kind, kw, batching):
    """Every learner of the suite: ``meta_gradient`` has one tensor per named parameter, of
    its shape, and is the same on a second call; ``meta_loss`` is a scalar with detached
    0-dim metrics; ``adapt`` gives the model's parameters and ``predict`` ``[Q, out]``."""
    model, _, _, batch = _setup(model_name)
    lr = 0.1 if model_name == "mlp" else 0.4
    learner = _learner(kind, model, lr, 2, "mse" if model_name == "mlp" else "ce", batching, kw)
    params = dict(model.named_parameters())
    first, again = learner.meta_gradient(batch), learner.meta_gradient(batch)
    assert list(first) == list(params)
    assert all(first[n].shape == p.shape and first[n].dtype == p.dtype for n, p in params.items())
    assert all(torch.equal(first[n], again[n]) for n in params)
    loss, metrics = learner.meta_loss(batch)
    assert loss.dim() == 0 and torch.equal(loss.detach(), learner.meta_loss(batch)[0].detach())
    assert all(v.dim() == 0 and not v.requires_grad for v in metrics.values())
    sx, sy, qx, qy = batch.task(0)
    adapted = learner.adapt(sx, sy)
    assert set(adapted) == set(params)
    out = learner.predict(adapted, qx)
    assert out.shape == (qx.shape[0], 1 if model_name == "mlp" else 3)
