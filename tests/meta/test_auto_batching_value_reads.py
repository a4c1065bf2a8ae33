"""``batching="auto"`` falls back to the loop where the forward pass or a loss of the user's
own reads a tensor's value (``.item()``, ``float(t)``, a Python ``if`` on a tensor), which
the loop runs and ``torch.func.vmap`` cannot: before, "auto" raised torch's RuntimeError for
such a forward, and the loss's ValueError for such a loss. An explicit ``batching="vmap"``
gets a ValueError naming the value read."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import metaloop as ml


class Branchy(nn.Module):
    """A Python ``if`` on a tensor in forward."""

    def __init__(self):
        super().__init__()
        self.l1, self.head = nn.Linear(8, 16), nn.Linear(16, 5)

    def forward(self, x, head=True):
        f = torch.relu(self.l1(x))
        if f.abs().sum() > 1e9:          # never true here: the numbers are the loop's
            f = f * 0
        return self.head(f) if head else f


class Itemy(Branchy):
    """``.item()`` in forward."""

    def forward(self, x, head=True):
        f = torch.relu(self.l1(x))
        f = f * (1.0 if f.max().item() < 1e9 else 0.0)
        return self.head(f) if head else f


def branchy_loss(logits, y):
    loss = F.cross_entropy(logits, y)
    if loss > 1e9:
        loss = loss * 0
    return loss


def _batch(B=3, ways=5, S=1, Q=2):
    g = torch.Generator().manual_seed(1)
    sx, qx = torch.randn(B, ways * S, 8, generator=g), torch.randn(B, ways * Q, 8, generator=g)
    sy = torch.arange(ways).repeat_interleave(S).repeat(B, 1)
    qy = torch.arange(ways).repeat_interleave(Q).repeat(B, 1)
    return ml.TaskBatch(sx, sy, qx, qy)


LEARNERS = {
    "maml": lambda m, b, loss: ml.meta.MAML(m, inner_lr=0.3, loss=loss, batching=b),
    "fomaml": lambda m, b, loss: ml.meta.MAML(m, inner_lr=0.3, loss=loss, first_order=True,
                                              batching=b),
    "reptile": lambda m, b, loss: ml.meta.Reptile(m, inner_lr=0.3, inner_steps=2, loss=loss,
                                                  batching=b),
    "protonet": lambda m, b, loss: ml.meta.ProtoNet(m, batching=b),
}
# (method, model class, loss): ProtoNet takes no loss
CASES = [(m, cls, loss) for m in LEARNERS
         for cls, loss in [(Branchy, "ce"), (Itemy, "ce"), (nn.Module, branchy_loss)]
         if not (m == "protonet" and loss is branchy_loss)]


def _model(cls):
    if cls is nn.Module:                           # a plain MLP; the loss reads the value
        return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 5))
    return cls()


@pytest.mark.parametrize("method, cls, loss", CASES)
def test_auto_falls_back_to_the_loop_with_its_numbers(method, cls, loss):
    torch.manual_seed(0)
    model = _model(cls)
    auto = LEARNERS[method](model, "auto", loss)
    loop = LEARNERS[method](copy.deepcopy(model), "loop", loss)
    assert auto.batching == "vmap"
    batch = _batch()
    for seed in (0, 1):
        torch.manual_seed(seed)
        got = auto.meta_gradient(batch)
        torch.manual_seed(seed)
        want = loop.meta_gradient(batch)
        assert auto.batching == "loop"
        for k in want:
            assert torch.equal(got[k], want[k]), k


@pytest.mark.parametrize("method, cls, loss", CASES)
def test_explicit_vmap_names_the_value_read(method, cls, loss):
    learner = LEARNERS[method](_model(cls), "vmap", loss)
    words = "loss branchy_loss must return" if loss is branchy_loss else \
        "reads a tensor's value"
    with pytest.raises(ValueError, match=words):
        learner.meta_gradient(_batch())
