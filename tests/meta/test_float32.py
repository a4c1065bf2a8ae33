"""Training runs in float32: its meta-gradients on real Omniglot images match float64.

A channels-last CPU fast path (once used by every learner) gave
float32 meta-gradients off by 1e-2 to 0.2 (per tensor, ||error|| / ||float64 value||) on
Omniglot batches, while float64 and random-image tests were exact: torch's fused CPU
BatchNorm on channels-last float32 tensors loses precision on the near-constant channels
that Omniglot's blank backgrounds produce. The learners now feed NCHW batches, which are
within 7e-6; this test is the guard, at 1e-4.
"""

from __future__ import annotations

import pytest
import torch

from metaloop.meta import MAML
from metaloop.meta.metaoptnet import MetaOptNet
from metaloop.meta.r2d2 import R2D2
from metaloop.models import Conv4
from metaloop.tasks import Omniglot

TOL = 1e-4


@pytest.fixture(scope="module")
def batch(omniglot_root):
    fam = Omniglot(omniglot_root, split="train", ways=20, shots=1, queries=5)
    return fam.sample(2, generator=torch.Generator().manual_seed(0))


def _learner(kind, dtype):
    torch.manual_seed(0)
    model = Conv4(1, 64, 20, pool="stride", image_size=28).to(dtype)
    if kind == "maml":
        return MAML(model, 0.1, 2, loss="ce", batching="loop")
    if kind == "r2d2":
        return R2D2(model, batching="loop")
    return MetaOptNet(model, batching="loop")


def _worst(got, ref):
    """The largest per-tensor relative error ||got - ref|| / ||ref||. Tensors whose gradient
    is 0 are left out: the conv biases (BatchNorm follows them) and, for the head learners,
    Conv4's own unused linear head."""
    return max(float((got[n].double() - ref[n]).norm() / ref[n].norm())
               for n in ref if not n.endswith("conv.bias") and float(ref[n].abs().max()) > 0)


@pytest.mark.parametrize("kind", ["maml", "r2d2", "metaoptnet"])
def test_float32_meta_gradient_matches_float64_on_omniglot(batch, kind):
    ref = _learner(kind, torch.float64).meta_gradient(batch.to(torch.device("cpu"),
                                                               torch.float64))
    got = _learner(kind, torch.float32).meta_gradient(batch)
    assert set(got) == set(ref)
    assert _worst(got, ref) < TOL
