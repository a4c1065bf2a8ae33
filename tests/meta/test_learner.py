"""The ``Learner`` protocol: every learner of ``metaloop.meta`` satisfies it, and an object
with only its members can be trained and evaluated."""

from __future__ import annotations

import pytest
import torch

import metaloop as ml
from metaloop.meta import (
    ANIL,
    MAML,
    R2D2,
    Learner,
    MetaOptNet,
    Pretrain,
    ProtoNet,
    Reptile,
    Scratch,
)
from metaloop.models import MLP, Conv4


@pytest.mark.parametrize("make", [
    lambda: MAML(MLP(1, (8,), 1), 0.1),
    lambda: ANIL(MLP(1, (8,), 1), 0.1),
    lambda: Reptile(MLP(1, (8,), 1), 0.1),
    lambda: Pretrain(MLP(1, (8,), 1)),
    lambda: Scratch(MLP(1, (8,), 1)),
    lambda: R2D2(Conv4(1, 4, 3, image_size=16)),
    lambda: MetaOptNet(Conv4(1, 4, 3, image_size=16)),
    lambda: ProtoNet(Conv4(1, 4, 3, image_size=16)),
], ids=["maml", "anil", "reptile", "pretrain", "scratch", "r2d2", "metaoptnet", "protonet"])
def test_every_learner_satisfies_the_protocol(make):
    learner = make()
    assert isinstance(learner, Learner)
    assert isinstance(learner.inner.steps, int) and callable(learner.inner.loss_fn)


def test_the_protocol_is_what_train_and_evaluate_use():
    """A learner that forwards exactly the protocol's members to MAML trains and evaluates."""
    class Minimal:
        def __init__(self, inner):
            for name in ("model", "meta_trains", "batching", "inner", "meta_loss",
                         "meta_gradient", "adapt", "adapt_path", "predict",
                         "adapt_path_batched", "predict_batched"):
                setattr(self, name, getattr(inner, name))

    torch.manual_seed(0)
    learner = Minimal(MAML(MLP(1, (8,), 1), 0.1, batching="loop"))
    assert isinstance(learner, Learner)
    family = ml.tasks.Sinusoid(5, 5)
    ml.train.train(learner, family, iterations=2, meta_batch=2, progress=False,
                   val_family=family, val_every=1, val_tasks=2)
    result = ml.evaluate.evaluate(learner, family, tasks=2, steps=(0, 1))
    assert len(result["loss"]["mean"]) == 2
