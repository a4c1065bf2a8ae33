"""Second-order MAML on ResNet-12 (BatchNorm on batch statistics in every block, a residual
shortcut, max-pooling) gives the same meta-gradient under ``batching="vmap"`` as under the
per-task loop, and both agree with central finite differences of the meta-loss.

The meta-loss of a network with max-pooling and LeakyReLU is smooth only piecewise, and
second order makes it jump where the support gradient does (an argmax or a sign that
changes): the differences take steps of 1e-7, well inside the pieces of these coordinates
(steps of 1e-6 and above cross jumps here).

The two batchings run different BatchNorm code: the loop runs torch's fused
``F.batch_norm``, vmap the plain arithmetic of ``metaloop.models.conv4.BatchNorm`` (torch's
fused kernel has a wrong double backward under vmap, pytorch/functorch#534). A tiny network
(width 2, 16x16 images, float64, 2 tasks, 2 inner steps) keeps the test fast.
"""

from __future__ import annotations

import pytest
import torch

import metaloop as ml
from metaloop.meta import MAML
from metaloop.models import ResNet12

# every test here runs in float64 (the float64 fixture of tests/conftest.py)
pytestmark = pytest.mark.usefixtures("float64")

INNER_LR, INNER_STEPS = 0.1, 2
# (parameter, flat index): a coordinate of each kind, from the first block to the head
COORDS = [("body.0.conv1.weight", 4), ("body.0.bn1.weight", 1), ("body.1.shortcut.weight", 3),
          ("body.2.bn_shortcut.bias", 2), ("body.3.bn3.weight", 7), ("head.weight", 11)]


def _setup():
    """A ResNet-12 of width 2 (channels 2, 5, 10, 20) for 3 ways, and 2 tasks of random
    ``[1, 16, 16]`` images: 2 shots and 2 queries per class."""
    torch.manual_seed(0)
    net = ResNet12(in_channels=1, width=2, out_dim=3, image_size=16)
    g = torch.Generator().manual_seed(1)
    y = torch.arange(3).repeat(2, 2)                                      # [B=2, 6]
    batch = ml.TaskBatch(torch.randn(2, 6, 1, 16, 16, generator=g), y,
                         torch.randn(2, 6, 1, 16, 16, generator=g), y.clone())
    return net, batch


def _learner(net, batching):
    return MAML(net, INNER_LR, INNER_STEPS, first_order=False, loss="ce", batching=batching)


def test_vmap_meta_gradient_equals_the_loops():
    net, batch = _setup()
    vmap, loop = _learner(net, "vmap"), _learner(net, "loop")
    assert (vmap.batching, loop.batching) == ("vmap", "loop")
    got, ref = vmap.meta_gradient(batch), loop.meta_gradient(batch)
    assert set(got) == set(ref) == {n for n, _ in net.named_parameters()}
    top = max(float(r.abs().max()) for r in ref.values())
    assert top > 1e-3                                    # a gradient, not zeros
    for n in ref:
        assert float((got[n] - ref[n]).abs().max()) <= 1e-12 * top, n
    assert _loss(vmap, batch) == pytest.approx(_loss(loop, batch), rel=1e-13)


def _loss(learner, batch) -> float:
    return float(learner.meta_loss(batch)[0].detach())


@pytest.mark.parametrize("batching", ["vmap", "loop"])
def test_meta_gradient_matches_finite_differences(batching):
    net, batch = _setup()
    learner = _learner(net, batching)
    grads = learner.meta_gradient(batch)
    first = MAML(net, INNER_LR, INNER_STEPS, first_order=True, loss="ce",
                 batching=batching).meta_gradient(batch)
    params = dict(net.named_parameters())
    eps, missed = 1e-7, []
    for name, i in COORDS:
        flat = params[name].data.view(-1)
        old = float(flat[i])
        with torch.no_grad():
            flat[i] = old + eps
            up = _loss(learner, batch)
            flat[i] = old - eps
            down = _loss(learner, batch)
            flat[i] = old
        fd, got = (up - down) / (2 * eps), float(grads[name].view(-1)[i])
        assert abs(fd) > 1e-2, (name, i)                 # a coordinate that matters
        assert got == pytest.approx(fd, rel=1e-6), (name, i)
        missed.append(abs(float(first[name].view(-1)[i]) - fd) / abs(fd))
    assert max(missed) > 1e-3       # first order misses these: the check sees second order
