"""``adapt_path_batched`` (the vmap path of evaluation) refuses support sets with NaN or inf
as ``adapt`` does, naming the task of the batch that holds them, for the solved heads and
the SGD learners alike; inside ``valid_by_construction()`` it reads no value."""

import sys
from pathlib import Path

import pytest
import torch

import metaloop as ml
from metaloop.models import MLP, Conv4
from metaloop.tasks.batch import valid_by_construction

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference import head_learners  # noqa: E402

HEADS = head_learners()


def _conv():
    torch.manual_seed(0)
    return Conv4(1, 8, 5, pool="stride", image_size=14)


def _images(b: int = 4):
    g = torch.Generator().manual_seed(0)
    sx = torch.rand(b, 10, 1, 14, 14, generator=g)                  # [B, S, C, H, W]
    sy = torch.arange(5).repeat_interleave(2).expand(b, -1).contiguous()  # [B, S]
    return sx, sy


def _sgd_learners():
    torch.manual_seed(0)
    return {
        "MAML": ml.meta.MAML(MLP(1, (8,), 1), inner_lr=0.01, inner_steps=2, loss="mse"),
        "Reptile": ml.meta.Reptile(MLP(1, (8,), 1), inner_lr=0.01, inner_steps=2, loss="mse"),
        "ANIL": ml.meta.ANIL(MLP(1, (8,), 1), inner_lr=0.01, inner_steps=2, loss="mse"),
    }


def _sinusoid(b: int = 4):
    batch = ml.tasks.Sinusoid(5, 5).sample(b, torch.Generator().manual_seed(0))
    return batch.support_x.clone(), batch.support_y.clone()


@pytest.mark.parametrize("name", HEADS)
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_head_learner_names_the_task_with_non_finite_support(name, bad):
    learner = HEADS[name](_conv())
    sx, sy = _images()
    sx[2, 3, 0, 5, 5] = bad
    with pytest.raises(ValueError, match=r"support_x \[4, 10, 1, 14, 14\] has non-finite "
                                         r"values \(NaN or inf\) in task 2 of the batch"):
        learner.adapt_path_batched(sx, sy)
    sx[0, 0, 0, 0, 0] = bad
    with pytest.raises(ValueError, match=r"in tasks 0, 2 of the batch; the adapted parameters "
                                         r"would be NaN"):
        learner.adapt_path_batched(sx, sy)


@pytest.mark.parametrize("name", ["MAML", "Reptile", "ANIL"])
def test_the_sgd_learners_name_the_task_with_non_finite_support(name):
    learner = _sgd_learners()[name]
    sx, sy = _sinusoid()
    sx[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=rf"{name}: support_x \[4, 5, 1\] has non-finite values "
                                         r"\(NaN or inf\) in task 1 of the batch"):
        learner.adapt_path_batched(sx, sy)
    sx, sy = _sinusoid()
    sy[3, 4, 0] = float("-inf")
    with pytest.raises(ValueError, match=r"support_y \[4, 5, 1\] has non-finite values .* in "
                                         r"task 3 of"):
        learner.adapt_path_batched(sx, sy)


def test_many_bad_tasks_are_cut_short():
    learner = HEADS["protonet"](_conv())
    sx, sy = _images(8)
    sx[:, 0] = float("nan")
    with pytest.raises(ValueError, match=r"in tasks 0, 1, 2, 3, 4, \.\.\. of the batch"):
        learner.adapt_path_batched(sx, sy)


def test_finite_batches_adapt_as_the_single_task_path():
    """The check only reads: the batched heads are those of ``adapt`` task by task."""
    learner = HEADS["r2d2"](_conv())
    sx, sy = _images(3)
    batched = learner.adapt_path_batched(sx, sy)[-1]
    for i in range(3):
        one = learner.adapt(sx[i], sy[i])
        torch.testing.assert_close(batched["W"][i], one["W"])


def test_valid_by_construction_reads_nothing():
    """On ``meta`` any read raises: inside the context the batched paths read no value."""
    sx = torch.empty(2, 10, 1, 14, 14, device="meta")
    sy = torch.arange(5).repeat_interleave(2).expand(2, -1).to("meta")
    learner = ml.meta.ProtoNet(_conv().to("meta"), ways=5)
    with pytest.raises((RuntimeError, NotImplementedError), match="meta"):
        learner.adapt_path_batched(sx, sy)
    with valid_by_construction():
        out = learner.adapt_path_batched(sx, sy)
    assert out[0]["W"].device.type == "meta"
