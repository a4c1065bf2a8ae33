"""``MAML(compile=True)`` on a GPU: ``metaloop train --device cuda`` picks vmap for any model,
so the compiled vmapped tasks run there too. Checked when a CUDA device is present (skipped
on the CPU-only CI): second-order MAML over the stride Conv4 against the eager vmap path,
float64."""

from __future__ import annotations

import pytest
import torch

import metaloop as ml
from metaloop.meta import MAML
from metaloop.models import Conv4

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_compiled_vmapped_conv4_matches_eager_on_cuda():
    torch.manual_seed(0)
    model = Conv4(1, 8, 3, pool="stride").double().cuda()
    g = torch.Generator().manual_seed(1)
    batch = ml.TaskBatch(torch.randn(4, 3, 1, 28, 28, generator=g, dtype=torch.float64),
                         torch.arange(3).repeat(4, 1),
                         torch.randn(4, 6, 1, 28, 28, generator=g, dtype=torch.float64),
                         torch.arange(6).repeat(4, 1) % 3).to("cuda")
    eager = MAML(model, 0.4, 1, loss="ce", batching="vmap").meta_gradient(batch)
    fused = MAML(model, 0.4, 1, loss="ce", batching="vmap", compile=True).meta_gradient(batch)
    scale = max(v.abs().max() for v in eager.values())
    assert max((eager[n] - fused[n]).abs().max() for n in eager) / scale < 1e-10
