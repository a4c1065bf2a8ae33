"""A learner of your own: what ``ml.train`` and ``ml.evaluate`` need of it (less than the
``Learner`` protocol's every member, as its docstring says), and ``sgd_path_func`` as a
building block under ``torch.func.vmap`` (first order exact with a LayerNorm; second order
there is documented as wrong)."""

from __future__ import annotations

import types

import torch
from torch import nn

import metaloop as ml
from metaloop.meta import MAML, Learner
from metaloop.models import MLP


class _LoopOnly:
    """A learner of one's own without the batched members (it never runs under vmap)."""

    batching = "loop"
    meta_trains = True

    def __init__(self):
        self._maml = MAML(MLP(1, (8,), 1), 0.1, batching="loop")
        self.model = self._maml.model
        self.inner = types.SimpleNamespace(steps=1, loss_fn=ml.func.get_loss("mse"))

    def meta_gradient(self, batch, with_metrics=False):
        return self._maml.meta_gradient(batch, with_metrics)

    def adapt_path(self, support_x, support_y, steps=None):
        return self._maml.adapt_path(support_x, support_y, steps)

    def predict(self, params, x):
        return self._maml.predict(params, x)


def test_a_loop_learner_without_batched_members_trains_and_evaluates():
    torch.manual_seed(0)
    learner = _LoopOnly()
    assert not isinstance(learner, Learner)        # every member is checked
    family = ml.tasks.Sinusoid(5, 5)
    ml.train.train(learner, family, iterations=2, meta_batch=2, progress=False,
                   val_family=family, val_every=1, val_tasks=2)
    result = ml.evaluate.evaluate(learner, family, tasks=2, steps=(0, 1))
    assert len(result["loss"]["mean"]) == 2


def test_the_protocol_docstring_says_what_each_use_needs():
    doc = " ".join((Learner.__doc__ or "").split())
    for text in ("``ml.train``: ``model`` and ``meta_gradient``",
                 "``ml.evaluate``: ``adapt_path`` and ``predict``",
                 '(``batching == "vmap"`` only): ``adapt_path_batched`` and '
                 "``predict_batched``",
                 "``inner`` (the type ``InnerRule``",
                 "``steps``, an int", "``loss_fn``, a callable"):
        assert text in doc, text


def test_sgd_path_func_docstring_names_the_vmap_second_order_limit():
    doc = " ".join((ml.adapt.sgd_path_func.__doc__ or "").split())
    for text in ("pytorch/functorch#534", "``nn.LayerNorm``", "``nn.BatchNorm*``",
                 "``nn.InstanceNorm*``", "``create_graph=False``", "per-task Python loop"):
        assert text in doc, text


class _LN(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1, self.ln, self.head = nn.Linear(4, 6), nn.LayerNorm(6), nn.Linear(6, 3)

    def forward(self, x, head=True):
        f = torch.relu(self.ln(self.l1(x)))
        return self.head(f) if head else f


def test_sgd_path_func_first_order_under_vmap_is_exact_with_a_layernorm():
    """What the docstring advises: vmap for first order, whatever the norm layers."""
    torch.manual_seed(0)
    model = _LN().double()
    g = torch.Generator().manual_seed(1)
    sx, qx = (torch.randn(2, n, 4, generator=g, dtype=torch.float64) for n in (3, 6))
    sy, qy = torch.arange(3).repeat(2, 1), torch.arange(3).repeat(2, 2)
    loss = ml.func.get_loss("ce")
    params = {k: v.detach() for k, v in ml.func.params_of(model).items()}

    def task(p, a, b, c, d):
        *_, last = ml.adapt.sgd_path_func(lambda q, x: ml.func.forward(model, q, x), loss, p,
                                          list(p), a, b, 0.3, 2, create_graph=False)
        return loss(ml.func.forward(model, last, c), d)

    batched = torch.func.grad(
        lambda p: torch.func.vmap(lambda *t: task(p, *t))(sx, sy, qx, qy).mean())(params)
    looped = torch.func.grad(
        lambda p: sum(task(p, sx[i], sy[i], qx[i], qy[i]) for i in range(2)) / 2)(params)
    for name in params:
        torch.testing.assert_close(batched[name], looped[name], rtol=0, atol=1e-12)
