"""The head learners' evaluation path: adapting and predicting with the model's own parameters
calls the model itself, not ``torch.func.functional_call`` (the same logits, bit for bit),
and checks a support set once for the learner and once as a task; meta-training and params
of anyone else's still go through ``functional_call``."""

import sys
from pathlib import Path

import pytest
import torch

from metaloop.evaluate import evaluate
from metaloop.func import params as func_params
from metaloop.meta import _common, _head_learner
from metaloop.models import Conv4
from metaloop.tasks.batch import TaskBatch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _reference import head_learners  # noqa: E402

LEARNERS = head_learners()


def _learner(name: str, batching: str = "loop"):
    torch.manual_seed(0)
    learner = LEARNERS[name](Conv4(1, 8, 5, pool="stride", image_size=14))
    learner.batching = batching
    return learner


def _task(seed: int = 0, shots: int = 2, queries: int = 3):
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(5 * shots, 1, 14, 14, generator=g)                 # [S, 1, H, W]
    qx = torch.randn(5 * queries, 1, 14, 14, generator=g)               # [Q, 1, H, W]
    return sx, torch.arange(5).repeat(shots), qx, torch.arange(5).repeat(queries)


def _count(monkeypatch, module, name: str) -> list:
    """Calls of ``module.name`` as the head learner reaches it, recorded (with their
    keyword arguments' names) while the test runs."""
    calls, real = [], getattr(module, name)

    def counted(*args, **kwargs):
        calls.append(sorted(kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def _scored(learner, sx, sy, qx, batched: bool) -> torch.Tensor:
    """The query logits as ``evaluate`` scores them (without gradients)."""
    with torch.no_grad():
        if batched:
            params = learner.adapt_path_batched(sx[None], sy[None])[0]
            return learner.predict_batched(params, qx[None])[0]
        return learner.predict(learner.adapt(sx, sy), qx)


@pytest.mark.parametrize("batched", [False, True], ids=["adapt", "batched"])
@pytest.mark.parametrize("batching", ["loop", "vmap"])
@pytest.mark.parametrize("name", LEARNERS)
def test_evaluation_calls_the_model_and_scores_as_functional_call(monkeypatch, name, batching,
                                                                  batched):
    learner = _learner(name, batching)
    sx, sy, qx, _ = _task()
    calls = _count(monkeypatch, _head_learner, "forward")
    got = _scored(learner, sx, sy, qx, batched)
    assert calls == []                                  # no functional_call at all
    # the functional path everywhere: what evaluation computed before
    monkeypatch.setattr(_head_learner, "_own_parameters", lambda model, body: False)
    want = _scored(learner, sx, sy, qx, batched)
    assert calls                                        # it did go through functional_call
    assert torch.equal(got, want)


def test_evaluate_scores_every_task_as_through_functional_call(monkeypatch):
    learner = _learner("protonet")
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 5 * 4, 1, 14, 14, generator=g)                   # [B, S+Q, 1, H, W]
    y = torch.arange(5).repeat(4).expand(3, -1)                         # [B, S+Q]
    tasks = type("Fixed", (), {"sample": lambda self, n, generator=None: TaskBatch(
        x[:n, :10], y[:n, :10], x[:n, 10:], y[:n, 10:])})()
    got = evaluate(learner, tasks, tasks=3, steps=[0])
    monkeypatch.setattr(_head_learner, "_own_parameters", lambda model, body: False)
    assert evaluate(learner, tasks, tasks=3, steps=[0])["per_task"] == got["per_task"]


@pytest.mark.parametrize("name", ["protonet", "r2d2-non-transductive"])
def test_params_other_than_the_models_own_go_through_functional_call(monkeypatch, name):
    """Changed params (a copy, an edited tensor) and anything with gradients recorded are
    the model's only through ``functional_call``."""
    learner = _learner(name)
    sx, sy, qx, qy = _task()
    params = learner.adapt(sx, sy)
    copy = {k: v.clone() for k, v in params.items()}
    calls = _count(monkeypatch, _head_learner, "forward")
    with torch.no_grad():
        same = learner.predict(copy, qx)
        assert len(calls) == 1
        copy["log_scale"] = copy["log_scale"] + 1.0
        moved = learner.predict(copy, qx)
        assert len(calls) == 2
        own = learner.predict(params, qx)
        assert len(calls) == 2
    assert torch.equal(same, own) and not torch.equal(moved, own)
    learner.predict(params, qx)                      # gradients recorded: functional_call
    assert len(calls) == 3
    batch = TaskBatch(sx[None], sy[None], qx[None], qy[None])
    learner.meta_gradient(batch)                     # meta-training: functional_call
    assert len(calls) > 3


def test_adapt_checks_the_support_set_once_for_the_learner_and_once_as_a_task(monkeypatch):
    """``adapt`` checked the support set's device and dtype four times (its own call,
    ``_check_support`` twice, ``check_task``) and the steps twice."""
    learner = _learner("r2d2")
    sx, sy, _, _ = _task()
    inputs = _count(monkeypatch, _head_learner, "check_inputs")
    in_task = _count(monkeypatch, _common, "check_inputs")      # check_task's own
    steps = _count(monkeypatch, _head_learner, "check_steps")
    learner.adapt(sx, sy)
    support = ["support_x", "support_y"]
    assert inputs + in_task == [support, support] and len(steps) == 1
    with pytest.raises(ValueError, match=r"support_x is torch.float64 but the model's "
                                         r"parameters are torch.float32"):
        learner.adapt(sx.double(), sy)
    with pytest.raises(ValueError, match=r"support_x \[10, 1, 14, 14\] has non-finite"):
        learner.adapt(sx.clone().fill_(float("nan")), sy)


def test_the_own_parameters_are_recognised_as_views_of_all_of_them():
    learner = _learner("r2d2")
    own = dict(learner.model.named_parameters())
    assert _head_learner._own_parameters(learner.model, own)
    assert _head_learner._own_parameters(learner.model, func_params.detach(own))
    name = next(k for k, v in own.items() if v.dim() == 4)
    for other in ({**own, name: own[name].detach()[:1]},            # part of it
                  {**own, name: own[name].detach().transpose(0, 1)},  # other strides
                  {k: v for k, v in own.items() if k != name},        # one missing
                  {**own, name: own[name].double()}):                # another dtype
        assert not _head_learner._own_parameters(learner.model, other)
