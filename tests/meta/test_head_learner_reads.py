"""The head learners' training step inside ``valid_by_construction()``: it reads no value
back to the host (proved on torch's ``meta`` device, where any read raises), computes the
same meta-gradient as the checked step, and is what ``metaloop.train`` runs on
``DeviceTasks``' batches."""

import sys
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch

import metaloop as ml
from metaloop.meta import ProtoNet
from metaloop.models import Conv4
from metaloop.tasks.batch import valid_by_construction, values_trusted
from metaloop.tasks.device import DeviceTasks

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference import head_learners  # noqa: E402

LEARNERS = head_learners()


@pytest.fixture(scope="module")
def omniglot():
    return ml.tasks.Omniglot(split="val", ways=5, shots=2, queries=2, image_size=14)


def _net(device="cpu"):
    torch.manual_seed(0)
    return Conv4(1, 8, 5, pool="stride", image_size=14).to(device)


@pytest.mark.parametrize("name", LEARNERS)
def test_the_step_reads_nothing_back_only_inside_the_context(omniglot, name):
    batch = DeviceTasks(omniglot, "meta").sample(2)
    learner = LEARNERS[name](_net("meta"))
    with pytest.raises(RuntimeError, match="meta tensors"):
        learner.meta_gradient(batch, with_metrics=True)       # the checks read the labels
    with valid_by_construction():
        assert values_trusted()
        grads, metrics = learner.meta_gradient(batch, with_metrics=True)
    assert not values_trusted()
    assert metrics["loss"].device.type == "meta"
    assert {n: g.shape for n, g in grads.items()} == {
        n: p.shape for n, p in learner.model.named_parameters()}


@pytest.mark.parametrize("name", LEARNERS)
def test_the_unchecked_step_is_the_checked_step(omniglot, name):
    """The same numbers: the checks only read, and MetaOptNet's line search, which then runs
    every halving instead of stopping once all steps are accepted, chooses the same steps."""
    batch = DeviceTasks(omniglot, "cpu").sample(3, torch.Generator().manual_seed(1))
    out = []
    for context in (nullcontext, valid_by_construction):
        learner = LEARNERS[name](_net())
        with context():
            out.append(learner.meta_gradient(batch, with_metrics=True))
    (g1, m1), (g2, m2) = out
    assert all(torch.equal(g1[n], g2[n]) for n in g1)
    assert torch.equal(m1["loss"], m2["loss"])


def test_train_steps_inside_the_context_only_on_batches_valid_by_construction(omniglot):
    seen = {}
    for label, family in (("host", omniglot), ("device", DeviceTasks(omniglot, "cpu"))):
        learner = ProtoNet(_net())
        step = learner.meta_gradient

        def spy(batch, with_metrics=False, _step=step, _label=label):
            seen.setdefault(_label, set()).add(values_trusted())
            return _step(batch, with_metrics=with_metrics)

        learner.meta_gradient = spy
        ml.train(learner, family, iterations=2, meta_batch=2, progress=False)
    assert seen == {"host": {False}, "device": {True}}
    assert not values_trusted()


def test_a_torchrun_shard_of_a_valid_batch_is_not_checked_again(omniglot):
    """``TaskBatch.slice`` (each rank's share of the meta-batch) re-runs the batch checks,
    which read labels, except inside the context."""
    batch = DeviceTasks(omniglot, "meta").sample(4)
    with pytest.raises(RuntimeError, match="meta tensors"):
        batch.slice(0, 2)
    with valid_by_construction():
        part = batch.slice(1, 3)
    assert part.support_x.shape[0] == 2 and part.classes.shape == (2, 5)
    assert part.support_y.shape == (2, 10) and part.query_x.shape == (2, 10, 1, 14, 14)


def test_outside_the_context_bad_labels_are_still_named():
    from metaloop.adapt import prototypes
    feats = torch.randn(1, 4, 3)
    with pytest.raises(ValueError, match=r"labels must lie in \[0, n_classes=2\), found 5"):
        prototypes(feats, torch.tensor([[0, 1, 5, 1]]), 2)
    with valid_by_construction():                # a caller's promise: not read, not checked
        assert prototypes(feats, torch.tensor([[0, 1, 0, 1]]), 2).shape == (1, 2, 3)
