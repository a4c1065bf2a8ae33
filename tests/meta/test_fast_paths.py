"""The CPU fast paths of the SGD learners give the same results as the plain computation.

Kept (docs/benchmarks.md, bench_maml): Conv4 applies its ReLU after the max-pool, and the
query pass may be compiled. The reference here is a plain per-task ``torch.autograd.grad``
loop on NCHW inputs with the ReLU before the pool, as a user would write it; everything runs
in float64. (Channels-last image batches were dropped: exact in float64, not
in float32 on real images; ``tests/meta/test_float32.py`` guards that.)
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import metaloop as ml
from metaloop.func.params import channels_last
from metaloop.meta import ANIL, MAML
from metaloop.models import Conv4

sys.path.insert(0, str(Path(__file__).parent))
from _reference import (  # noqa: E402
    conv4_plain,
    conv4_plain_stride,
    plain_batch,
    plain_meta_gradient,
    rel_err,
)

RTOL = 1e-6


# every test here runs in float64 (the float64 fixture of tests/conftest.py)
pytestmark = pytest.mark.usefixtures("float64")


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("first_order", [False, True])
def test_maml_conv4_matches_plain_nchw_loop(steps, first_order):
    torch.manual_seed(0)
    model = Conv4(1, 8, 3)
    batch = plain_batch()
    learner = MAML(model, inner_lr=0.4, inner_steps=steps, first_order=first_order, loss="ce",
                   batching="loop")
    got = learner.meta_gradient(batch)
    params = dict(model.named_parameters())
    ref = plain_meta_gradient(params, batch, 0.4, steps, list(params), not first_order)
    assert rel_err(got, ref) < RTOL
    assert all(g.is_contiguous() for g in got.values())


def test_compiled_query_pass_matches_plain_nchw_loop():
    """MAML(compile=True): torch.compile'd query forward (and backward), exact in float64;
    the second order still flows through the eager support graph. ANIL shares the path."""
    torch.manual_seed(2)
    model = Conv4(1, 8, 3, pool="stride")
    batch = plain_batch(seed=2)
    params = dict(model.named_parameters())
    for steps, adapt in ((2, list(params)), (1, ["head.weight", "head.bias"])):
        learner = (MAML(model, 0.4, steps, loss="ce", compile=True) if len(adapt) > 2 else
                   ANIL(model, 0.4, steps, loss="ce", compile=True))
        assert learner.compile and learner.batching == "loop"
        ref = plain_meta_gradient(params, batch, 0.4, steps, adapt, fwd=conv4_plain_stride)
        assert rel_err(learner.meta_gradient(batch), ref) < RTOL


def test_compile_refuses_threads():
    with pytest.raises(ValueError, match="compile=True.*not 'threads'"):
        MAML(Conv4(1, 8, 3), 0.4, 1, loss="ce", batching="threads", compile=True)


def mlp_plain(p, x):
    """metaloop's MLP(4, (16,), 3) written out: fc0, ReLU, head."""
    h = F.relu(F.linear(x, p["body.fc0.weight"], p["body.fc0.bias"]))
    return F.linear(h, p["head.weight"], p["head.bias"])


def mlp_batch(seed=3):
    """Three 3-way tasks of 4-d vectors, 6 support and 9 query examples each."""
    g = torch.Generator().manual_seed(seed)
    return ml.TaskBatch(torch.randn(3, 6, 4, generator=g), torch.arange(6).repeat(3, 1) % 3,
                        torch.randn(3, 9, 4, generator=g), torch.arange(9).repeat(3, 1) % 3)


@pytest.mark.parametrize("steps, first_order, head_only", [(2, False, False), (1, True, False),
                                                           (2, False, True)])
def test_compiled_vmapped_tasks_match_plain_loop(steps, first_order, head_only):
    """MAML(compile=True) on an MLP ("auto" picks vmap): the vmapped tasks' inner loops, query
    passes and backward compiled as one function, second order included; exact in float64
    against a per-task autograd loop, and run again on a second batch of the same shape
    without compiling anew (the same numbers as the eager learner)."""
    torch.manual_seed(4)
    model = ml.models.MLP(4, (16,), 3)
    params = dict(model.named_parameters())
    adapt = ["head.weight", "head.bias"] if head_only else list(params)
    make = ANIL if head_only else MAML
    learner = make(model, 0.3, steps, first_order=first_order, loss="ce", compile=True)
    assert learner.compile and learner.batching == "vmap"
    for seed in (3, 5):
        batch = mlp_batch(seed)
        ref = plain_meta_gradient(params, batch, 0.3, steps, adapt, not first_order,
                                  fwd=mlp_plain)
        assert rel_err(learner.meta_gradient(batch), ref) < RTOL
    assert list(learner._compiled_vmap) == [first_order]      # one compiled function


def _graph_breaks() -> int:
    from torch._dynamo.utils import counters
    return sum(counters["graph_break"].values())


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_compiled_vmapped_tasks_are_one_graph(loss):
    """No graph break: the vmapped tasks are compiled whole, classification included (the
    cross-entropy label check asked functorch for its level, which dynamo cannot trace, so
    the tasks ran eager behind a break)."""
    torch.manual_seed(7)
    out = 3 if loss == "ce" else 2
    learner = MAML(ml.models.MLP(4, (16,), out), 0.3, 1, loss=loss, compile=True)
    batch = mlp_batch(11)
    if loss == "mse":
        batch = ml.TaskBatch(batch.support_x, torch.randn(3, 6, 2), batch.query_x,
                             torch.randn(3, 9, 2))
    torch._dynamo.reset()        # traced afresh: an earlier test's code for the same model
    before = _graph_breaks()     # and shapes would be reused, and its breaks not counted
    learner.meta_gradient(batch)
    assert _graph_breaks() == before


def test_compiled_vmapped_regression_matches_plain_loop():
    """The MSE path (the sinusoid's) against a per-task autograd loop, second order, float64."""
    torch.manual_seed(8)
    model = ml.models.MLP(4, (16,), 2)
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(9)
    batch = ml.TaskBatch(torch.randn(3, 6, 4, generator=g), torch.randn(3, 6, 2, generator=g),
                         torch.randn(3, 9, 4, generator=g), torch.randn(3, 9, 2, generator=g))
    learner = MAML(model, 0.3, 2, loss="mse", compile=True)
    assert learner.batching == "vmap"
    ref = {n: torch.zeros_like(v) for n, v in params.items()}
    for i in range(3):
        sx, sy, qx, qy = batch.task(i)
        p = dict(params)
        for _ in range(2):
            gs = torch.autograd.grad(F.mse_loss(mlp_plain(p, sx), sy), list(p.values()),
                                     create_graph=True)
            p = {n: p[n] - 0.3 * gi for n, gi in zip(p, gs)}
        for n, gi in zip(params, torch.autograd.grad(F.mse_loss(mlp_plain(p, qx), qy),
                                                    list(params.values()))):
            ref[n] += gi / 3
    assert rel_err(learner.meta_gradient(batch), ref) < RTOL


def test_compiled_vmapped_meta_loss_matches_eager_and_names_bad_labels():
    torch.manual_seed(6)
    model = ml.models.MLP(4, (16,), 3)
    eager, fused = (MAML(model, 0.3, 2, loss="ce", compile=c) for c in (False, True))
    batch = mlp_batch()
    loss, metrics = fused.meta_loss(batch)
    ref, ref_metrics = eager.meta_loss(batch)
    assert loss.requires_grad and torch.allclose(loss, ref, rtol=1e-12)
    assert torch.allclose(metrics["accuracy"], ref_metrics["accuracy"])
    with torch.no_grad():                       # the value alone, through the first-order one
        assert torch.allclose(fused.meta_loss(batch)[0], ref, rtol=1e-12)
    bad = ml.TaskBatch(batch.support_x, batch.support_y + 1, batch.query_x, batch.query_y + 1)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, C=3\).*found 3"):
        fused.meta_gradient(bad)              # as the eager path says, not inductor's error


def test_conv4_relu_after_pool_is_the_same_function_to_second_order():
    """Same outputs bit for bit, and the same gradient and Hessian-vector product."""
    torch.manual_seed(2)
    model = Conv4(1, 8, 3)
    x = torch.randn(6, 1, 28, 28)
    params = dict(model.named_parameters())
    assert torch.equal(model(x), conv4_plain(params, x))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    v = {n: torch.randn_like(p) for n, p in params.items()}
    hvps = []
    for f in (lambda p: ml.func.params.forward(model, p, x), lambda p: conv4_plain(p, x)):
        g = torch.autograd.grad(F.cross_entropy(f(params), y), list(params.values()),
                                create_graph=True)
        dot = sum((gi * v[n]).sum() for gi, n in zip(g, params))
        hvps.append([*g, *torch.autograd.grad(dot, list(params.values()))])
    for a, b in zip(*hvps):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-12)


def test_channels_last_keeps_values_and_only_touches_cpu_image_batches():
    for c in (1, 3):
        x = torch.randn(4, c, 5, 6)
        y = channels_last(x)
        assert torch.equal(x, y) and y.shape == x.shape
        assert y.stride() == (5 * 6 * c, 1, 6 * c, c)
        assert torch.nn.Conv2d(c, 2, 3)(y).is_contiguous(memory_format=torch.channels_last)
    flat = torch.randn(4, 3)
    assert channels_last(flat) is flat
    labels = torch.zeros(2, 1, 3, 3, dtype=torch.long)
    assert channels_last(labels) is labels
    # inside torch.func transforms the input is left alone (vmap batching)
    out = torch.func.vmap(lambda t: channels_last(t).sum())(torch.randn(2, 4, 1, 5, 5))
    assert out.shape == (2,)

