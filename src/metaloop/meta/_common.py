"""What every meta-learner shares: the ``Learner`` protocol and per-task helpers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from metaloop.adapt.learned_lr import split_lrs
from metaloop.adapt.sgd import SGDAdapter
from metaloop.func.losses import accuracy
from metaloop.func.params import Params, detach
from metaloop.meta._threads import check_threadable
from metaloop.tasks.batch import TaskBatch


class InnerRule(Protocol):
    """What the training loop and ``evaluate`` read of a learner's ``inner``: its default
    number of adaptation steps and its query loss."""

    steps: int
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@runtime_checkable
class Learner(Protocol):
    """Everything ``metaloop.train`` and ``metaloop.evaluate`` use of a learner.

    Every meta-learner and baseline of ``metaloop.meta`` satisfies it, and so can a class
    of your own: nothing needs to inherit from it.

    Attributes:
        model: the module whose ``named_parameters()`` are the meta-parameters: the training
            loop's optimiser steps them, checkpoints store them, data-parallel ranks average
            their gradients.
        meta_trains: False for a learner with nothing to meta-train (``Scratch``): the loop
            then skips its iterations.
        batching: ``"loop"``, ``"vmap"`` or ``"threads"``; with ``"vmap"``, ``evaluate``
            scores a whole batch of tasks at once through ``adapt_path_batched`` and
            ``predict_batched``.
        inner: the adaptation rule: ``inner.steps`` is the step count validation scores at,
            ``inner.loss_fn(pred, y)`` the query loss ``evaluate`` reports.
    """

    model: nn.Module
    meta_trains: bool
    batching: str
    inner: InnerRule

    def meta_loss(self, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean query loss over the batch's tasks after adaptation (differentiable in
        ``model``'s parameters) and its metrics ``{"loss", "accuracy"?}``: detached 0-dim
        tensors on the model's device (``float(v)`` reads one; the training loop reads them
        only when it logs, so a CUDA step has no host synchronisation)."""

    def meta_gradient(self, batch: TaskBatch, with_metrics: bool = False):
        """d meta_loss / d parameter, name -> tensor over ``model.named_parameters()``
        (zeros where unused); ``(grads, metrics)`` with ``with_metrics``."""

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor,
              steps: int | None = None) -> Params:
        """Adapted parameters for ONE task (support ``[S, ...]``, labels ``[S]`` or targets
        ``[S, out]``), detached."""

    def adapt_path(self, support_x: torch.Tensor, support_y: torch.Tensor,
                   steps: int | None = None) -> Iterator[Params]:
        """One task's detached parameters after 0, 1, ..., ``steps`` adaptation steps (a
        learner with a solved head may yield fewer; ``evaluate`` reuses the last)."""

    def predict(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Predictions ``[N, out]`` on x ``[N, ...]`` with adapted ``params``."""

    def adapt_path_batched(self, support_x: torch.Tensor, support_y: torch.Tensor,
                           steps: int | None = None) -> list[Params]:
        """``adapt_path`` for B tasks at once (support ``[B, S, ...]``): a list over steps of
        params whose per-task entries carry a leading ``[B]`` dimension."""

    def predict_batched(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """``predict`` for batched params and x ``[B, N, ...]`` -> ``[B, N, out]``."""


class AdaptsBySGD:
    """Test-time adaptation by the learner's ``inner`` SGDAdapter (composed, not inherited).

    Its constructor serves the learners without an inner loop in meta-training (``Pretrain``,
    ``Scratch``): ``inner`` is only their test-time fine-tuning rule.
    """

    def __init__(self, model: nn.Module, inner_lr: float = 0.01, inner_steps: int = 1,
                 loss="mse", adapt=None, head_init: str = "learned", batching: str = "auto"):
        self.model = model
        self.inner = SGDAdapter(model, loss, inner_lr, inner_steps, adapt, head_init)
        self.batching = resolve_batching(batching, model)   # for test-time adaptation

    def adapt(self, support_x: torch.Tensor, support_y: torch.Tensor,
              steps: int | None = None) -> Params:
        """Adapted parameters for ONE task (support_x ``[S, ...]``), detached."""
        *_, last = self.adapt_path(support_x, support_y, steps)
        return last

    def adapt_path(self, support_x, support_y, steps: int | None = None) -> Iterator[Params]:
        """Yield one task's detached params after 0..steps inner SGD steps (with a learned
        step-size table, ``metaloop.adapt.learned_lr``, steps past its rows reuse its last)."""
        net, lrs = split_lrs(self.model, dict(self.model.named_parameters()))
        return self.inner.test_path(net, support_x, support_y, steps, lr=lrs)

    def predict(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """Predictions ``[N, out]`` of the network with ``params`` on x ``[N, ...]``."""
        return self.inner.fwd(params, x)

    def adapt_path_batched(self, support_x, support_y, steps: int | None = None) -> list[Params]:
        """All tasks of a batch at once under ``vmap``: params after 0..steps steps, each
        tensor with a leading task dim ``[B, ...]``. Inputs ``[B, S, ...]``. Detached.
        """
        net, lrs = split_lrs(self.model, detach(dict(self.model.named_parameters())))
        start = self.inner.start(net, support_y)

        def run(sx, sy):
            return list(self.inner.path(start, sx, sy, steps, create_graph=False,
                                        started=True, functional=True, lr=lrs))
        return [detach(p) for p in torch.func.vmap(run)(support_x, support_y)]

    def predict_batched(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """``predict`` for ``[B, ...]``-batched params and x ``[B, N, ...]`` -> ``[B, N, out]``."""
        return torch.func.vmap(self.predict)(params, x)


class ScoresEitherWay:
    """The switch that Reptile and the solved heads share: ``transductive`` (True: a task's
    queries are normalised together by BatchNorm; False: each with its support set's
    statistics, ``metaloop.models.bn_stats``), changeable after construction, and the
    ``evaluation`` label that records and printed results carry."""

    _transductive: bool = True

    @property
    def transductive(self) -> bool:
        """Whether a task's queries are scored together (see the class)."""
        return self._transductive

    @transductive.setter
    def transductive(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise ValueError(f"transductive must be True or False, got {value!r}")
        self._transductive = value

    @property
    def evaluation(self) -> str:
        """How queries are scored: "transductive" or "non-transductive"."""
        return "transductive" if self.transductive else "non-transductive"


def resolve_batching(batching: str, model: nn.Module, threads: bool = False) -> str:
    """"loop", "vmap" or "threads" from "loop" | "vmap" | "threads" | "auto" (vmap for
    plain MLP-like models, else loop). "threads" only where the learner supports it
    (``threads``), for models without buffers."""
    allowed = ("loop", "vmap", "threads", "auto") if threads else ("loop", "vmap", "auto")
    if batching not in allowed:
        raise ValueError(f"batching must be one of {', '.join(map(repr, allowed))}, "
                         f"got {batching!r}")
    if batching == "threads":
        check_threadable(model)
    if batching != "auto":
        return batching
    heavy = (nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.LayerNorm)
    plain = not any(isinstance(m, heavy) or "Norm" in type(m).__name__ for m in model.modules())
    return "vmap" if plain else "loop"


def check_batch(batch) -> TaskBatch:
    if not isinstance(batch, TaskBatch):
        raise ValueError(f"expected a metaloop.TaskBatch, got {type(batch).__name__}")
    return batch


def task_metrics(out: torch.Tensor, y: torch.Tensor, loss: torch.Tensor
                 ) -> dict[str, torch.Tensor]:
    """loss, and accuracy for classification (out ``[Q, C]``, y int64 ``[Q]``), as detached
    0-dim tensors on the model's device: reading them is left to whoever logs them, so a
    CUDA training step needs no host synchronisation (``float(v)`` gives the number)."""
    m = {"loss": loss.detach()}
    if not y.is_floating_point():
        m["accuracy"] = accuracy(out.detach(), y)
    return m


def mean_metrics(per_task: list[dict]) -> dict:
    """The mean of each metric over tasks (tensors stay tensors, on their device)."""
    return {k: sum(m[k] for m in per_task) / len(per_task) for k in per_task[0]}


def grads_to_dict(names, grads, params) -> dict[str, torch.Tensor]:
    """autograd.grad output (None for unused) -> name -> tensor with zeros for None.

    Contiguous like the parameters (with channels-last inputs, e.g. a user's, conv weight
    gradients come back in a channels-last layout).
    """
    return {n: torch.zeros_like(params[n]) if g is None else g.contiguous()
            for n, g in zip(names, grads)}


def accumulate(total: dict | None, grads: dict, scale: float) -> dict:
    if total is None:
        return {k: g * scale for k, g in grads.items()}
    for k, g in grads.items():
        total[k].add_(g, alpha=scale)
    return total
