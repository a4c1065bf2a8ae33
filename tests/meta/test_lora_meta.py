"""The LoRA meta-learner's meta-gradients (``metaloop.meta.lora_meta.lora_learner``) against a
float64 reference written without metaloop or peft: an MLP whose hidden layers carry LoRA
adapters, ``W x + b + (alpha / r) B A x``, spelled out with plain tensors, each task's inner
loop unrolled with ``torch.autograd.grad`` on ``logit_scale`` x the logits, in both the inner
and the outer loss.

Second-order MAML, first-order MAML (the inner gradients held constant) and Reptile (the
direction theta_0 - theta_final, inner SGD or Adam with beta1 = 0), each with a learned and a
zero head, at a logit scale other than 1 (at 1 the learner takes the plain "ce" loss).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import metaloop as ml
from metaloop.meta.lora_meta import lora_learner
from metaloop.models import MLP

pytest.importorskip("peft", reason="LoRA needs the text extra: pip install -e '.[text]'")

R, ALPHA, LR, STEPS, SCALE = 2, 3.0, 0.1, 2, 3.0
WAYS, D_IN, WIDTH = 3, 3, 4
RTOL = 1e-9
HEAD = ("head.weight", "head.bias")


def net_ref(p, frozen, x):
    """``MLP(D_IN, (WIDTH, WIDTH), WAYS)`` with LoRA on both hidden layers: ``[N, D_IN] ->
    [N, WAYS]``; ``p`` holds the adapters and the head, ``frozen`` the base weights."""
    h = x
    for i in range(2):
        lay = f"body.fc{i}."
        A, B = p[lay + "lora_A.default.weight"], p[lay + "lora_B.default.weight"]   # [r, *], [*, r]
        h = F.relu(h @ frozen[lay + "base_layer.weight"].T + frozen[lay + "base_layer.bias"]
                   + ALPHA / R * (h @ A.T @ B.T))                                   # [N, WIDTH]
    return h @ p["head.weight"].T + p["head.bias"]                                  # [N, WAYS]


def loss_ref(out, y, scale=SCALE):
    return F.cross_entropy(scale * out, y)


def _learner(method, head_init, inner_optimizer="sgd"):
    torch.manual_seed(0)
    learner = lora_learner(MLP(D_IN, (WIDTH, WIDTH), WAYS).double(), method, r=R, alpha=ALPHA,
                           inner_lr=LR, inner_steps=STEPS, head_init=head_init,
                           logit_scale=SCALE, inner_optimizer=inner_optimizer)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():                        # lora_B starts at 0: move every adapter
        for p in learner.model.parameters():
            p.add_(0.5 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return learner


def _batch():
    """Two 3-way tasks of float64 vectors, 2 shots and 2 queries per class."""
    g = torch.Generator().manual_seed(2)
    sy = torch.arange(WAYS).repeat_interleave(2).repeat(2, 1)                      # [2, 6]
    return ml.TaskBatch(torch.randn(2, 6, D_IN, generator=g, dtype=torch.float64), sy,
                        torch.randn(2, 6, D_IN, generator=g, dtype=torch.float64), sy.clone())


def _start(params, head_init):
    """A task's starting point: the meta-learned one, or with a new zero head."""
    if head_init == "learned":
        return dict(params)
    zero = {"head.weight": torch.zeros(WAYS, WIDTH, dtype=torch.float64, requires_grad=True),
            "head.bias": torch.zeros(WAYS, dtype=torch.float64, requires_grad=True)}
    return {**params, **zero}


def maml_reference(learner, batch, head_init, second_order, scale=SCALE):
    """(mean query loss, its gradient name -> tensor) after STEPS inner SGD steps on every
    trainable tensor, the inner gradients kept in the graph (second order) or constants;
    both losses on ``scale`` x the logits."""
    params = dict(learner.model.named_parameters())
    frozen = dict(learner.model.named_buffers())
    names = list(params)
    total = 0.0
    for i in range(batch.num_tasks):
        sx, sy, qx, qy = batch.task(i)
        theta = _start(params, head_init)
        for _ in range(STEPS):
            g = torch.autograd.grad(loss_ref(net_ref(theta, frozen, sx), sy, scale),
                                    [theta[n] for n in names], create_graph=second_order)
            theta = {n: theta[n] - LR * gn for n, gn in zip(names, g)}
        total = total + loss_ref(net_ref(theta, frozen, qx), qy, scale) / batch.num_tasks
    g = torch.autograd.grad(total, [params[n] for n in names], allow_unused=True)
    return total.detach(), {n: torch.zeros_like(params[n]) if gn is None else gn
                            for n, gn in zip(names, g)}


def reptile_reference(learner, batch, head_init, inner_optimizer):
    """mean_i (theta_0 - theta_final_i) over the trainable tensors (not a zero head's start),
    inner SGD or Adam (beta1 = 0, beta2 = 0.999, eps 1e-8, fresh moments per task)."""
    params = {n: p.detach() for n, p in learner.model.named_parameters()}
    frozen = dict(learner.model.named_buffers())
    names = list(params)
    want = {n: torch.zeros_like(p) for n, p in params.items()}
    for i in range(batch.num_tasks):
        sx, sy, _, _ = batch.task(i)
        theta = _start(params, head_init)
        v = {n: torch.zeros_like(theta[n]) for n in names}
        for k in range(STEPS):
            th = {n: t.detach().requires_grad_(True) for n, t in theta.items()}
            g = torch.autograd.grad(loss_ref(net_ref(th, frozen, sx), sy), [th[n] for n in names])
            for n, gn in zip(names, g):
                if inner_optimizer == "sgd":
                    theta[n] = theta[n].detach() - LR * gn
                    continue
                v[n] = 0.999 * v[n] + 0.001 * gn ** 2
                theta[n] = theta[n].detach() - LR * gn / ((v[n] / (1 - 0.999 ** (k + 1))).sqrt()
                                                          + 1e-8)
        for n in names:
            if not (head_init == "zero" and n in HEAD):
                want[n] += (params[n] - theta[n].detach()) / batch.num_tasks
    return want


def assert_close(got, ref):
    assert set(got) == set(ref)
    for n in ref:
        scale = ref[n].abs().max().clamp_min(1e-12)
        assert float((got[n] - ref[n]).abs().max() / scale) < RTOL, n


def rel_diff(a, b):
    return max(float((a[n] - b[n]).abs().max() / b[n].abs().max().clamp_min(1e-12)) for n in b)


@pytest.mark.parametrize("head_init", ["learned", "zero"])
@pytest.mark.parametrize("method", ["maml", "fomaml"])
def test_maml_meta_gradient_matches_the_unrolled_reference(method, head_init):
    learner = _learner(method, head_init)
    batch = _batch()
    value, ref = maml_reference(learner, batch, head_init, second_order=method == "maml")
    got = learner.meta_gradient(batch)
    assert_close(got, ref)
    loss, _ = learner.meta_loss(batch)
    assert float(loss.detach()) == pytest.approx(float(value), rel=1e-12)
    for p in learner.model.parameters():
        p.grad = None
    loss.backward()
    assert_close({n: torch.zeros_like(p) if p.grad is None else p.grad     # a zero head's
                  for n, p in learner.model.named_parameters()}, ref)       # start: unused
    # the reference tells the orders apart: a learner that dropped (or kept) the second-order
    # terms would fail above
    _, other = maml_reference(learner, batch, head_init, second_order=method != "maml")
    assert rel_diff(other, ref) > 1e-3
    if head_init == "zero":                      # each task starts from its own zero head
        assert not got["head.weight"].any() and not got["head.bias"].any()


def test_the_logit_scale_enters_the_inner_and_the_outer_loss():
    """At scale 3 the reference differs from the scale-1 one by far more than the tolerance,
    so the comparison above would catch a learner that dropped the scale from either loss."""
    learner = _learner("maml", "learned")
    batch = _batch()
    _, ref = maml_reference(learner, batch, "learned", second_order=True)
    _, unscaled = maml_reference(learner, batch, "learned", second_order=True, scale=1.0)
    assert rel_diff(unscaled, ref) > 1e-2
    assert_close(learner.meta_gradient(batch), ref)


@pytest.mark.parametrize("head_init", ["learned", "zero"])
@pytest.mark.parametrize("inner_optimizer", ["sgd", "adam"])
def test_reptile_direction_matches_the_written_out_inner_loop(inner_optimizer, head_init):
    learner = _learner("reptile", head_init, inner_optimizer)
    batch = _batch()
    want = reptile_reference(learner, batch, head_init, inner_optimizer)
    got = learner.meta_gradient(batch)
    assert_close(got, want)
    for n in HEAD:
        assert got[n].any() == (head_init == "learned"), n
