"""``ml.evaluate`` refuses what would give a wrong number without a word: a loss that does
not fit the tasks' targets, a family that returns more or fewer tasks than asked for; and
documents each of its arguments."""

import inspect
import re

import pytest
import torch

import metaloop as ml
from metaloop.evaluate.heldout import evaluate
from metaloop.func.losses import cross_entropy
from metaloop.models import MLP


def regression_learner():
    torch.manual_seed(0)
    return ml.meta.MAML(MLP(in_dim=1, hidden=(8,), out_dim=1), loss="mse")


def classification_family():
    g = torch.Generator().manual_seed(0)
    return ml.tasks.Episodes(torch.randn(40, 2, generator=g), torch.arange(4).repeat(10),
                             ways=3, shots=2, queries=2)


def test_cross_entropy_on_regression_tasks_is_refused():
    fam = ml.tasks.Sinusoid(shots=5, queries=5)
    with pytest.raises(ValueError, match=r"evaluate: the tasks of Sinusoid do not fit the loss: "
                                         r"loss='ce' needs int64 class labels, but this "
                                         r"TaskBatch holds float regression targets \[3, 5, 1\]; "
                                         r"use loss='mse'"):
        ml.evaluate(regression_learner(), fam, tasks=3, steps=(0, 1), loss="ce")


def test_mse_on_classification_tasks_is_refused():
    torch.manual_seed(0)
    learner = ml.meta.MAML(MLP(in_dim=2, hidden=(8,), out_dim=3), loss="ce")
    with pytest.raises(ValueError, match=r"the tasks of Episodes do not fit the loss: "
                                         r"loss='mse' needs float regression targets"):
        ml.evaluate(learner, classification_family(), tasks=2, steps=(0,), loss="mse")


def test_a_fitting_loss_by_name_is_the_learners_own():
    torch.manual_seed(0)
    learner = ml.meta.MAML(MLP(in_dim=2, hidden=(8,), out_dim=3), loss="ce")
    fam = classification_family()
    named = ml.evaluate(learner, fam, tasks=4, steps=(0, 1), loss="ce")
    default = ml.evaluate(learner, fam, tasks=4, steps=(0, 1))
    assert named["per_task"] == default["per_task"]
    assert all(v > 0 for v in named["loss"]["mean"])
    fam = ml.tasks.Sinusoid(shots=5, queries=5)
    r = ml.evaluate(regression_learner(), fam, tasks=3, steps=(0,), loss="mse")
    assert r["loss"]["mean"][0] > 0


@pytest.mark.parametrize("labels", [torch.zeros(4, dtype=torch.int64), torch.rand(4, 1)])
def test_cross_entropy_refuses_one_class(labels):
    with pytest.raises(ValueError, match=r"cross_entropy: logits \[4, 1\] have one class "
                                         r"\(C = 1\): the loss is 0 whatever the model "
                                         r"predicts"):
        cross_entropy(torch.randn(4, 1), labels)
    assert float(cross_entropy(torch.zeros(4, 2), torch.zeros(4, dtype=torch.int64))) == \
        pytest.approx(0.6931471805599453)


class OffByOne:
    """A family of one's own that returns ``extra`` more tasks than asked for."""

    def __init__(self, extra):
        self.extra = extra

    def sample(self, n, generator=None):
        x = torch.randn(n + self.extra, 3, 1, generator=generator)
        return ml.TaskBatch(x, x, x, x)


@pytest.mark.parametrize("extra", [1, -1])
def test_a_family_returning_other_than_the_tasks_asked_for_is_refused(extra):
    with pytest.raises(ValueError, match=rf"OffByOne.sample\(3\) returned a TaskBatch of "
                                         rf"{3 + extra} tasks, not 3"):
        ml.evaluate(regression_learner(), OffByOne(extra), tasks=3, steps=(0,))


def test_a_family_is_asked_in_chunks_and_each_is_checked():
    """250 tasks are asked for as 100, 100 and 50; a family right for the first chunks and
    wrong for the last is still refused."""
    asked = []

    class ShortAtTheEnd:
        def sample(self, n, generator=None):
            asked.append(n)
            x = torch.randn(n if n == 100 else n - 1, 2, 1, generator=generator)
            return ml.TaskBatch(x, x, x, x)
    with pytest.raises(ValueError, match=r"ShortAtTheEnd.sample\(50\) returned a TaskBatch of "
                                         r"49 tasks"):
        ml.evaluate(regression_learner(), ShortAtTheEnd(), tasks=250, steps=(0,))
    assert asked == [100, 100, 50]


def test_every_argument_of_evaluate_is_documented():
    doc = inspect.getdoc(evaluate)
    args = doc.split("Args:")[1].split("Returns:")[0]
    documented = set(re.findall(r"^    (\w+):", args, flags=re.M))
    assert documented == set(inspect.signature(evaluate).parameters)
    assert "Raises:" in doc and "device" in doc.split("Raises:")[1]


@pytest.mark.parametrize("batching", ["loop", "vmap"])
def test_a_float64_model_scores_a_float32_family_as_train_trains_on_it(batching):
    """ml.train casts each batch to the model's dtype; evaluate refused the same pair
    ("support_x is torch.float32 but the model's parameters are torch.float64"). It now
    casts too: the scores are those of the family's batches cast by hand."""
    torch.manual_seed(0)
    learner = ml.meta.MAML(MLP(in_dim=1, hidden=(8,), out_dim=1).double(), 0.05, loss="mse",
                           batching=batching)
    fam = ml.tasks.Sinusoid(shots=5, queries=5)
    ml.train(learner, fam, iterations=2, meta_batch=2, progress=False)     # as train takes it

    class Cast:                                         # the same family, cast by hand
        def sample(self, n, generator=None):
            return fam.sample(n, generator=generator).to(dtype=torch.float64)
    got = evaluate(learner, fam, tasks=3, steps=(0, 1))
    assert got == evaluate(learner, Cast(), tasks=3, steps=(0, 1))
    assert fam.sample(1, torch.Generator()).support_x.dtype == torch.float32


def test_a_scoring_loss_of_your_own_may_return_a_number():
    """evaluate only reads the query loss's value; a metric returning a Python float scored
    before the training losses' check (a 0-dim tensor) refused it here too."""
    torch.manual_seed(0)
    learner = ml.meta.MAML(MLP(in_dim=1, hidden=(8,), out_dim=1), loss="mse")
    fam = ml.tasks.Sinusoid(shots=5, queries=5)
    got = evaluate(learner, fam, tasks=3, steps=(1,), seed=1,
                   loss=lambda p, y: float(((p - y) ** 2).mean()))
    ref = evaluate(learner, fam, tasks=3, steps=(1,), seed=1, loss="mse")
    assert got["per_task"].keys() == ref["per_task"].keys()
    for k in ref["per_task"]:                  # [steps][tasks]: approx takes flat sequences
        assert torch.tensor(got["per_task"][k]).flatten().tolist() == pytest.approx(
            torch.tensor(ref["per_task"][k]).flatten().tolist(), rel=1e-6)

