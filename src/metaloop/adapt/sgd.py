"""The SGD inner loop: a pure function of (params, support data), on any parameter subset."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from metaloop.func.losses import get_loss
from metaloop.func.params import Params, Selector, detach, forward, last_linear_names, partition

Forward = Callable[[Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]


def sgd_path(fwd: Forward, loss_fn, params: Mapping[str, torch.Tensor], adapt_names,
             x: torch.Tensor, y: torch.Tensor, lr: float, steps: int,
             create_graph: bool = True) -> Iterator[Params]:
    """Yield params after 0, 1, ..., ``steps`` SGD steps on ``loss_fn(fwd(params, x), y)``.

    Only the names in ``adapt_names`` change; the rest pass through. Nothing is mutated.
    With ``create_graph`` the steps are differentiable (second-order MAML); without it each
    step's gradient is a constant, so d(new)/d(old) is the identity (first-order MAML).

    Args:
        fwd: ``fwd(params, x) -> predictions``.
        loss_fn: mean loss ``(pred, y) -> scalar``.
        params: name -> tensor; the adapted ones must require grad.
        adapt_names: names to update.
        x: ``[S, ...]`` support inputs; y: ``[S]`` labels or ``[S, out]`` targets.
        lr: step size; steps: number of steps.
    """
    names = list(adapt_names)
    params = dict(params)
    yield params
    for _ in range(steps):
        loss = loss_fn(fwd(params, x), y)
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph)
        params = {**params, **{n: params[n] - lr * g for n, g in zip(names, grads)}}
        yield params


def sgd_path_func(fwd: Forward, loss_fn, params: Mapping[str, torch.Tensor], adapt_names,
                  x: torch.Tensor, y: torch.Tensor, lr: float, steps: int,
                  create_graph: bool = True) -> Iterator[Params]:
    """``sgd_path`` written with ``torch.func.grad``, so that it runs under ``vmap``.

    Same arguments and results as ``sgd_path``; ``create_graph=False`` detaches each step's
    gradient (first order).
    """
    names = list(adapt_names)
    params = dict(params)
    yield params

    def support_loss(adapted, rest):
        return loss_fn(fwd({**rest, **adapted}, x), y)

    for _ in range(steps):
        grads = torch.func.grad(support_loss)({n: params[n] for n in names}, params)
        if not create_graph:
            grads = {n: g.detach() for n, g in grads.items()}
        params = {**params, **{n: params[n] - lr * grads[n] for n in names}}
        yield params


def _positive(name: str, value, kind=float) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0
    if not ok or (kind is int and not isinstance(value, int)):
        raise ValueError(f"{name} must be a positive {kind.__name__}, got {value!r}")


@dataclass
class SGDAdapter:
    """How a learner adapts to one task: SGD on a chosen subset, from a chosen head start.

    Args:
        model: the network; called functionally, never mutated.
        loss: "mse", "ce" or a callable ``(pred, y) -> scalar``.
        lr: inner step size. steps: default number of inner steps.
        adapt: which parameters adapt (predicate or names); None adapts all.
        head_init: "learned" (the head is part of the meta-learned start) or "zero" (a new
            zero head of the task's output size: use it when tasks differ in output size).
        head: head parameter names; default the last nn.Linear.
    """

    model: nn.Module
    loss: str | Callable = "mse"
    lr: float = 0.01
    steps: int = 1
    adapt: Selector | None = None
    head_init: str = "learned"
    head: list[str] | None = None
    names: list[str] = field(init=False)

    def __post_init__(self):
        _positive("inner_lr", self.lr)
        _positive("inner_steps", self.steps, int)
        if self.head_init not in ("learned", "zero"):
            raise ValueError(f"head_init must be 'learned' or 'zero', got {self.head_init!r}")
        self.loss_fn = get_loss(self.loss)
        params = dict(self.model.named_parameters())
        self.head = list(self.head) if self.head is not None else last_linear_names(self.model)
        partition(params, self.head)  # validates the names
        self.names = list(params) if self.adapt is None else list(partition(params, self.adapt)[0])
        if self.head_init == "zero" and not set(self.head) <= set(self.names):
            raise ValueError(f"head_init='zero' needs the head {self.head} among the adapted "
                             f"parameters {self.names}")
        # Head-only adaptation of a model with a linear ``head`` and ``forward(x, head=False)``:
        # the body is fixed in the inner loop, so its features are computed once per task.
        self.head_only = (sorted(self.names) == sorted(self.head) == ["head.bias", "head.weight"]
                          and isinstance(getattr(self.model, "head", None), nn.Linear)
                          and hasattr(self.model, "feature_dim"))

    def fwd(self, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return forward(self.model, params, x)

    def start(self, params: Mapping[str, torch.Tensor], support_y: torch.Tensor) -> Params:
        """The starting point for one task: params, with a zero head if head_init == "zero".

        ``support_y`` is one task's ``[S]`` labels / ``[S, out]`` targets, or a whole batch's
        ``[B, S]`` / ``[B, S, out]`` (the head size is the same for every task of a batch).
        """
        if self.head_init == "learned":
            return dict(params)
        out = support_y.shape[-1] if support_y.is_floating_point() else int(support_y.max()) + 1
        ref = params[self.head[0]]
        zero = {n: ref.new_zeros((out, *params[n].shape[1:])).requires_grad_()
                for n in self.head}                                  # weight [out, D], bias [out]
        return {**params, **zero}

    def path(self, params, x, y, steps: int | None = None, create_graph: bool = True,
             started: bool = False, functional: bool = False):
        """Yield the task's params after 0..steps steps (differentiable if create_graph).

        ``started``: params already went through ``start`` (done outside ``vmap``).
        ``functional``: use the ``torch.func`` inner loop, required under ``vmap``.
        """
        steps = self.steps if steps is None else steps
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        start = dict(params) if started else self.start(params, y)
        loop = sgd_path_func if functional else sgd_path
        if not self.head_only:
            return loop(self.fwd, self.loss_fn, start, self.names, x, y, self.lr, steps,
                        create_graph)
        return self._head_path(loop, start, x, y, steps, create_graph)

    def _head_path(self, loop, params, x, y, steps, create_graph):
        feats = forward(self.model, params, x, head=False)            # [S, D], computed once
        head = {n: params[n] for n in self.names}
        for h in loop(_linear_head, self.loss_fn, head, self.names, feats, y, self.lr, steps,
                      create_graph):
            yield {**params, **h}

    def run(self, params, x, y, steps: int | None = None, create_graph: bool = True,
            **kw) -> Params:
        """The task's params after ``steps`` steps (keywords as ``path``)."""
        *_, last = self.path(params, x, y, steps, create_graph, **kw)
        return last

    def test_path(self, params, x, y, steps: int | None = None) -> Iterator[Params]:
        """Like path, for evaluation: no graph to the start, detached outputs."""
        with torch.enable_grad():
            start = detach(params, requires_grad=True)
            for p in self.path(start, x, y, steps, create_graph=False):
                yield detach(p)


def _linear_head(p: Mapping[str, torch.Tensor], feats: torch.Tensor) -> torch.Tensor:
    return F.linear(feats, p["head.weight"], p["head.bias"])          # [S, D] -> [S, out]
