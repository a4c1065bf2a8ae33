"""Learners and meta-batches shared by test_distributed.py and _dist_worker.py (float64)."""

import torch

import metaloop as ml
from metaloop.meta import ANIL, MAML, Pretrain, Reptile
from metaloop.meta.metaoptnet import MetaOptNet
from metaloop.meta.r2d2 import R2D2
from metaloop.models import MLP

REGRESSION = ("maml", "fomaml", "reptile", "anil", "pretrain")
KINDS = (*REGRESSION, "r2d2", "metaoptnet")
META_BATCH = 5       # shards of 2 and 3 tasks on 2 ranks: unequal weights
SEED = 3


class Blobs:
    """3-way 2-shot classification of Gaussian blobs in 4-d, class centres drawn per task."""

    kind = "classification"

    def sample(self, n, generator=None):
        ways, shots, queries = 3, 2, 3
        f32 = torch.float32
        centres = torch.randn(n, ways, 1, 4, generator=generator, dtype=f32) * 2  # [n, 3, 1, 4]
        x = centres + torch.randn(n, ways, shots + queries, 4, generator=generator, dtype=f32)
        label = torch.arange(ways)
        return ml.TaskBatch(x[:, :, :shots].reshape(n, -1, 4),
                            label.repeat_interleave(shots).expand(n, -1).contiguous(),
                            x[:, :, shots:].reshape(n, -1, 4),
                            label.repeat_interleave(queries).expand(n, -1).contiguous())


def family(kind: str):
    return ml.tasks.Sinusoid(5, 5) if kind in REGRESSION else Blobs()


def learner(kind: str):
    torch.manual_seed(0)
    if kind in REGRESSION:
        model = MLP(1, (16, 16), 1).double()
    else:
        model = MLP(4, (8,), 3).double()
    make = {"maml": lambda: MAML(model, 0.01, 1),
            "fomaml": lambda: MAML(model, 0.01, 2, first_order=True),
            "reptile": lambda: Reptile(model, 0.02, 3),
            "anil": lambda: ANIL(model, 0.1, 2),
            "pretrain": lambda: Pretrain(model),
            "r2d2": lambda: R2D2(model),
            "metaoptnet": lambda: MetaOptNet(model, steps=5)}
    lrn = make[kind]()
    lrn.model.double()          # head-based learners add parameters around the backbone
    return lrn


def batch(kind: str):
    return family(kind).sample(META_BATCH, generator=torch.Generator().manual_seed(SEED)).to(
        dtype=torch.float64)
