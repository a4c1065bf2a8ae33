"""Inner-loop checkpointing changes memory, never the meta-gradient.

In float64, ``checkpoint=True`` must give the meta-gradient of ``checkpoint=False`` (both
``meta_loss(batch).backward()`` and ``meta_gradient(batch)``) for an MLP on sinusoid tasks and
for Conv4 with BatchNorm on tiny random images. No memory or timing is asserted here: that is
``benchmarks/bench_maml.py``'s job.
"""

from __future__ import annotations

import pytest
import torch

import metaloop as ml
from metaloop.adapt.sgd import sgd_path
from metaloop.func.losses import get_loss
from metaloop.meta import ANIL, MAML
from metaloop.models import MLP, Conv4

RTOL = 1e-6


# every test here runs in float64 (the float64 fixture of tests/conftest.py)
pytestmark = pytest.mark.usefixtures("float64")


def _setup(model_name):
    """(model, loss name, inner lr, batch): 3 tasks each."""
    torch.manual_seed(1)
    if model_name == "mlp":
        batch = ml.tasks.Sinusoid(5, 6).sample(3, torch.Generator().manual_seed(2),
                                               dtype=torch.float64)
        return MLP(1, (16, 16), 1).double(), "mse", 0.1, batch
    g = torch.Generator().manual_seed(2)
    sy = torch.arange(3).repeat(3, 1)                                  # [B, 3]: 3-way 1-shot
    qy = torch.arange(3).repeat(3, 2)                                  # [B, 6]
    batch = ml.TaskBatch(torch.randn(3, 3, 1, 16, 16, generator=g), sy,
                         torch.randn(3, 6, 1, 16, 16, generator=g), qy)
    return Conv4(1, 4, 3, image_size=16).double(), "ce", 0.4, batch


def _both_gradients(learner, batch):
    """(meta_gradient(batch), the .grad left by meta_loss(batch).backward())."""
    got = learner.meta_gradient(batch)
    for p in learner.model.parameters():
        p.grad = None
    learner.meta_loss(batch)[0].backward()
    return got, {n: p.grad.clone() for n, p in learner.model.named_parameters()}


def _assert_close(a, b, what):
    for n in b:
        scale = b[n].abs().max().clamp_min(1e-6)   # conv biases before BN: exactly 0
        assert (a[n] - b[n]).abs().max() / scale < RTOL, (n, what)


@pytest.mark.parametrize("model_name", ["mlp", "conv4"])
@pytest.mark.parametrize("first_order", [False, True], ids=["second", "first"])
@pytest.mark.parametrize("steps", [1, 3])
@pytest.mark.parametrize("method", [MAML, ANIL], ids=["maml", "anil"])
def test_checkpoint_gives_the_same_meta_gradient(model_name, first_order, steps, method):
    model, loss, lr, batch = _setup(model_name)
    plain, ckpt = (method(model, lr, steps, first_order, loss=loss, batching="loop",
                          checkpoint=c) for c in (False, True))
    ref_g, ref_b = _both_gradients(plain, batch)
    got_g, got_b = _both_gradients(ckpt, batch)
    assert any(ref_g[n].abs().max() > 0 for n in ref_g)
    _assert_close(ref_b, ref_g, "the two reference paths")
    _assert_close(got_g, ref_g, "meta_gradient")
    _assert_close(got_b, ref_b, "meta_loss().backward()")


def test_checkpointed_path_values_equal_plain_path():
    model, loss, lr, batch = _setup("conv4")
    sx, sy, _, _ = batch.task(0)
    params = dict(model.named_parameters())
    fwd = lambda p, x: torch.func.functional_call(model, p, (x,))  # noqa: E731
    runs = [list(sgd_path(fwd, get_loss(loss), params, list(params), sx, sy, lr, 3,
                          checkpoint=c)) for c in (False, True)]
    for a, b in zip(*runs):
        assert all(torch.allclose(a[n], b[n], rtol=1e-12, atol=1e-14) for n in a)
    assert all(type(v.grad_fn).__name__ == "_RecomputedStepBackward" for v in runs[1][-1].values())


def test_checkpoint_with_vmap_is_refused_by_name():
    model, loss, lr, _ = _setup("mlp")
    with pytest.raises(ValueError, match="checkpoint=True, batching='vmap'"):
        MAML(model, lr, 2, loss=loss, batching="vmap", checkpoint=True)
    assert MAML(model, lr, 2, loss=loss, checkpoint=True).batching == "loop"   # auto -> loop


def test_checkpoint_does_not_change_test_time_adaptation():
    model, loss, lr, batch = _setup("conv4")
    sx, sy, qx, _ = batch.task(1)
    a, b = (MAML(model, lr, 2, loss=loss, checkpoint=c) for c in (False, True))
    pa, pb = a.adapt(sx, sy), b.adapt(sx, sy)
    assert torch.allclose(a.predict(pa, qx), b.predict(pb, qx), rtol=1e-12, atol=1e-14)
