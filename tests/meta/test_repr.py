"""Learners, task families and task batches print as what they are, not as an address."""

from __future__ import annotations

import re

import pytest
import torch

import metaloop as ml


def _mlp(out=1):
    return ml.models.MLP(in_dim=4, hidden=(8,), out_dim=out)


def test_the_gradient_step_learners_show_their_method_and_settings():
    m = _mlp()
    assert repr(ml.meta.ANIL(m, batching="loop")) == (
        "ANIL(inner_lr=0.01, inner_steps=1, first_order=False, loss='mse', "
        "head_init='learned', batching='loop')")
    assert repr(ml.meta.MAML(m, inner_lr=0.4, inner_steps=3, first_order=True, loss="ce",
                             batching="loop")) == (
        "MAML(inner_lr=0.4, inner_steps=3, first_order=True, loss='ce', "
        "head_init='learned', batching='loop')")
    assert repr(ml.meta.Reptile(m, inner_optimizer="adam", batching="loop")) == (
        "Reptile(inner_lr=0.01, inner_steps=5, inner_optimizer='adam', loss='mse', "
        "head_init='learned', batching='loop')")
    assert repr(ml.meta.Pretrain(m, head_init="zero", batching="loop")) == (
        "Pretrain(inner_lr=0.01, inner_steps=1, loss='mse', head_init='zero', "
        "batching='loop')")
    assert repr(ml.meta.Scratch(m, inner_steps=2, batching="loop")) == (
        "Scratch(inner_lr=0.01, inner_steps=2, loss='mse', head_init='learned', "
        "batching='loop')")


def test_the_head_learners_are_named_by_the_builder_that_made_them():
    m = _mlp(out=5)
    assert repr(ml.meta.R2D2(m, batching="loop")) == (
        "R2D2(scale=10.0, lam=1.0, ways=None, batching='loop', transductive=True)")
    assert repr(ml.meta.MetaOptNet(m, batching="loop")).startswith(
        "MetaOptNet(head='svm', scale=")
    assert repr(ml.meta.ProtoNet(m, ways=5, batching="loop", refine=2)) == (
        "ProtoNet(scale=1.0, ways=5, batching='loop', transductive=True, refine=2)")


def test_an_ensemble_names_its_members():
    m = _mlp(out=5)
    ens = ml.meta.Ensemble([ml.meta.MAML(m, loss="ce"), ml.meta.ANIL(m, loss="ce")])
    assert repr(ens) == ("Ensemble(members=[MAML, ANIL], combine='probabilities', "
                         "refine_jointly=False)")


@pytest.mark.parametrize("make", [ml.meta.MAML, ml.meta.ANIL, ml.meta.Reptile,
                                  ml.meta.Pretrain, ml.meta.Scratch, ml.meta.R2D2,
                                  ml.meta.MetaOptNet, ml.meta.ProtoNet])
def test_no_learner_prints_as_an_address(make):
    assert not re.search(r"object at 0x", repr(make(_mlp(out=5))))


def test_a_sinusoid_family_shows_its_settings():
    fam = ml.tasks.Sinusoid(shots=5, queries=7, amplitude=(1.0, 2.0))
    assert repr(fam) == ("Sinusoid(shots=5, queries=7, amplitude=(1.0, 2.0), "
                         "phase=(0.0, 3.141592653589793), x_range=(-5.0, 5.0))")


def test_a_task_batch_shows_shapes_and_dtypes_not_values():
    batch = ml.tasks.Sinusoid().sample(64, generator=torch.Generator().manual_seed(0))
    assert repr(batch) == (
        "TaskBatch(support_x=[64, 10, 1] float32, support_y=[64, 10, 1] float32, "
        "query_x=[64, 10, 1] float32, query_y=[64, 10, 1] float32, classes=None, "
        "device=cpu)")
    x = torch.zeros(2, 3, 4)
    y = torch.tensor([[0, 1, 2], [0, 1, 2]])
    cls = ml.TaskBatch(x, y, x, y, classes=torch.tensor([[4, 5, 6], [1, 2, 3]]))
    assert "support_y=[2, 3] int64" in repr(cls) and "classes=[2, 3] int64" in repr(cls)


def test_a_half_built_object_prints_as_python_prints_it():
    """The settings reprs read attributes __init__ sets: a __new__-only object (or one whose
    __init__ raised, as a traceback or debugger shows it) raised AttributeError."""
    import metaloop as ml
    from metaloop.meta._head_learner import HeadLearner
    from metaloop.meta.ensemble import Ensemble

    for cls in (ml.meta.MAML, ml.meta.Reptile, HeadLearner, Ensemble, ml.TaskBatch,
                ml.tasks.Sinusoid):
        obj = object.__new__(cls)
        assert repr(obj).startswith(f"<{cls.__module__}.{cls.__qualname__} object at 0x")
