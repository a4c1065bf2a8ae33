"""The SGD inner loop: a pure function of (params, support data), on any parameter subset."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, cast

import torch
from torch import nn
from torch.autograd.function import once_differentiable

from metaloop.adapt.learned_lr import step_lr
from metaloop.func.losses import LOSSES, checked_loss, get_loss
from metaloop.func.params import (
    Params,
    Selector,
    detach,
    forward,
    last_linear_names,
    partition,
    tied_names,
)

Forward = Callable[[Mapping[str, torch.Tensor], torch.Tensor], torch.Tensor]


def sgd_step(fwd: Forward, loss_fn, params: Mapping[str, torch.Tensor], names: list[str],
             x: torch.Tensor, y: torch.Tensor, lr, create_graph: bool = True) -> Params:
    """One SGD step: ``params`` with each of ``names`` moved by ``-lr * grad`` (shapes kept).

    Args as ``sgd_path``; ``names`` is a list of the adapted names; ``lr`` a float or a
    ``[len(names)]`` tensor of per-tensor step sizes (differentiable). An adapted tensor
    that the loss does not use has a zero gradient: it stays as it is (as under
    ``torch.func.grad``, ``sgd_path_func``), instead of failing in autograd.
    """
    loss = loss_fn(fwd(params, x), y)
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph,
                                allow_unused=True)
    return {**params, **_update(params, names, grads, lr)}


def _update(params, names, grads, lr) -> Params:
    """{name: param - lr * grad} with a shared float lr or the per-name entries of a tensor;
    a None gradient (a tensor the loss does not use) leaves the tensor as it is."""
    if isinstance(lr, torch.Tensor):
        return {n: params[n] if g is None else params[n] - lr[i] * g
                for i, (n, g) in enumerate(zip(names, grads))}
    return {n: params[n] if g is None else params[n] - lr * g for n, g in zip(names, grads)}


def _leaves(tensors, grad_at) -> list[torch.Tensor]:
    """Detached copies of ``tensors``; those at the indices ``grad_at`` require grad."""
    return [t.detach().requires_grad_(i in grad_at) for i, t in enumerate(tensors)]


class _RecomputedStep(torch.autograd.Function):
    """theta_k -> theta_{k+1} by ``run``, keeping only the inputs for the backward pass.

    ``forward(ctx, run, adapted, *tensors)``: ``tensors`` are every params tensor, then x and
    y; ``adapted`` their indices that the step updates; ``run(tensors, create_graph)`` returns
    the updated tensors in the order of ``adapted``. The forward pass computes the values
    without a graph; the backward pass recomputes the step with ``create_graph=True`` (one
    step's activations alive at a time) and returns its vector-Jacobian product. The
    recomputation runs from the random state the forward pass started from (the CPU's and
    the inputs' CUDA devices'), so dropout in training mode draws the same masks, and leaves
    the random state as it found it. ``keep``: tensors the recomputation leaves as it found
    them (a model's running statistics, which the forward pass already updated once).
    """

    @staticmethod
    def forward(ctx, run, adapted, keep, *tensors):
        ctx.run, ctx.adapted, ctx.keep = run, adapted, keep
        ctx.save_for_backward(*tensors)
        ctx.devices = sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})
        if ctx.devices and torch.cuda.is_current_stream_capturing():
            ctx.devices = []            # a CUDA graph's generator state is not read mid-capture
        ctx.rng = (torch.get_rng_state(), [torch.cuda.get_rng_state(d) for d in ctx.devices])
        with torch.enable_grad():
            out = run(_leaves(tensors, set(adapted)), False)
        return tuple(o.detach() for o in out)

    @staticmethod
    @once_differentiable
    def backward(ctx, *v):
        need = [i for i, r in enumerate(ctx.needs_input_grad[3:]) if r]
        kept = [t.clone() for t in ctx.keep]
        with torch.random.fork_rng(devices=ctx.devices), torch.enable_grad():
            torch.set_rng_state(ctx.rng[0])
            for d, state in zip(ctx.devices, ctx.rng[1]):
                torch.cuda.set_rng_state(state, d)
            inputs = _leaves(ctx.saved_tensors, set(ctx.adapted) | set(need))
            out = ctx.run(inputs, True)
            g = torch.autograd.grad(out, [inputs[i] for i in need], v, allow_unused=True)
        with torch.no_grad():
            for t, was in zip(ctx.keep, kept):
                t.copy_(was)
        grads: list[torch.Tensor | None] = [None] * len(inputs)
        for i, gi in zip(need, g):
            grads[i] = gi
        return (None, None, None, *grads)


def recomputed_step(fwd: Forward, loss_fn, params: Mapping[str, torch.Tensor],
                    names: list[str], x: torch.Tensor, y: torch.Tensor, lr: float,
                    keep: Sequence[torch.Tensor] = ()) -> Params:
    """``sgd_step`` with ``create_graph``, checkpointed: only the inputs (theta_k, x, y) are
    kept for the backward pass, which recomputes the step's forward, gradient and update
    (with the random state of the forward pass, so dropout draws its masks again, and
    leaving the tensors in ``keep``, e.g. running statistics, as it found them).

    Once differentiable: the result supports ``backward``/``autograd.grad`` of an outer loss,
    not a further derivative of that gradient. Not usable under ``vmap``.
    """
    keys = list(params)

    def run(tensors, graph):
        new = sgd_step(fwd, loss_fn, dict(zip(keys, tensors)), names, tensors[-2],
                       tensors[-1], lr, graph)
        return [new[n] for n in names]

    out = _RecomputedStep.apply(run, [keys.index(n) for n in names], list(keep),
                                *params.values(), x, y)
    return {**params, **dict(zip(names, out))}


def check_path_args(fn: str, params: Mapping[str, torch.Tensor], adapt_names, lr,
                    steps) -> list[str]:
    """Validate ``sgd_path``'s arguments; return ``adapt_names`` as a list.

    Only Python values, names and shapes are read (never a tensor's values), so this is
    cheap and safe under ``vmap`` and ``torch.func.grad``.

    Raises:
        ValueError: as ``sgd_path``.
    """
    if not isinstance(params, Mapping):
        raise ValueError(f"{fn}: params must be a dict name -> tensor, got "
                         f"{type(params).__name__}")
    if isinstance(adapt_names, str) or not isinstance(adapt_names, Iterable):
        what = f"the string {adapt_names!r}" if isinstance(adapt_names, str) \
            else type(adapt_names).__name__
        raise ValueError(f"{fn}: adapt_names must be a list of parameter names, got {what}"
                         + (f"; pass [{adapt_names!r}] for that one name"
                            if isinstance(adapt_names, str) else ""))
    names = list(adapt_names)
    if not names:
        raise ValueError(f"{fn}: adapt_names is empty; name at least one parameter to adapt")
    unknown = [n for n in names if n not in params]
    if unknown:
        raise ValueError(f"{fn}: adapt_names has names that params does not have: "
                         f"{unknown[:5]}; available: {sorted(params)[:8]}")
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise ValueError(f"{fn}: adapt_names repeats {dup}; name each parameter once")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
        raise ValueError(f"{fn}: steps must be a non-negative int, got {steps!r}")
    if isinstance(lr, torch.Tensor):
        if lr.dim() != 2 or lr.shape[0] < 1 or lr.shape[1] != len(names):
            raise ValueError(f"{fn}: an lr table must be [rows >= 1, len(adapt_names)="
                             f"{len(names)}] (one row per step, one column per adapted "
                             f"tensor), got shape {list(lr.shape)}")
        if not lr.is_floating_point():
            raise ValueError(f"{fn}: an lr table must be a float tensor, got {lr.dtype}")
    elif isinstance(lr, bool) or not isinstance(lr, numbers.Real) \
            or not 0 < float(lr) < math.inf:
        raise ValueError(f"{fn}: lr must be a finite number > 0 (or a [rows, "
                         f"{len(names)}] table of step sizes), got {lr!r}")
    return names


def sgd_path(fwd: Forward, loss_fn, params: Mapping[str, torch.Tensor], adapt_names,
             x: torch.Tensor, y: torch.Tensor, lr, steps: int,
             create_graph: bool = True, checkpoint: bool = False,
             keep: Sequence[torch.Tensor] = ()) -> Iterator[Params]:
    """Yield params after 0, 1, ..., ``steps`` SGD steps on ``loss_fn(fwd(params, x), y)``.

    Only the names in ``adapt_names`` change; the rest pass through. Nothing is mutated.
    With ``create_graph`` the steps are differentiable (second-order MAML); without it each
    step's gradient is a constant, so d(new)/d(old) is the identity (first-order MAML).
    The arguments are checked when this is called, before the first step.

    Args:
        fwd: ``fwd(params, x) -> predictions``.
        loss_fn: mean loss ``(pred, y) -> scalar``; a callable other than the built-in
            losses is checked on every call (``metaloop.func.losses.CheckedLoss``).
        params: name -> tensor; the adapted ones must require grad (unless ``checkpoint``).
        adapt_names: a list (any non-string iterable) of distinct names of ``params`` to
            update.
        x: ``[S, ...]`` support inputs.
        y: ``[S]`` labels or ``[S, out]`` targets.
        lr: step size: a finite float > 0, or a float ``[rows, len(adapt_names)]`` tensor
            of per-step, per-tensor step sizes (``metaloop.adapt.learned_lr``;
            differentiable; steps past the last row reuse it). The table's values are not
            checked (that would read them back from the device): a meta-learned table may
            hold any sign.
        steps: number of steps, an int >= 0 (0 yields only ``params``).
        create_graph: make the steps differentiable (second order); False treats each
            step's gradient as a constant (first order).
        checkpoint: with ``create_graph``, keep only the params at each step for the
            backward pass and recompute one step's activations at a time there
            (``recomputed_step``): memory O(steps x params + one step's activations), about
            one more forward-and-gradient pass per step. Without ``create_graph`` no
            activations outlive a step anyway, and it changes nothing. The recomputation
            draws the forward pass's dropout masks again.
        keep: with ``checkpoint``, tensors that ``fwd`` updates in place and the
            recomputation must leave as it found them: the model's buffers, e.g. a torch
            BatchNorm's running statistics in training mode (updated once per step, as
            without ``checkpoint``).

    Raises:
        ValueError: ``adapt_names`` a string, empty, repeating a name or naming a tensor
            not in ``params``; ``steps`` not an int >= 0; ``lr`` not a finite number > 0
            nor a float ``[rows, len(adapt_names)]`` table; an adapted tensor that does not
            require grad (when steps are taken without ``checkpoint``); ``checkpoint`` with
            a table ``lr`` that requires grad; ``loss_fn`` not callable, or (at a step) not
            returning a 0-dim floating tensor.
    """
    names = check_path_args("sgd_path", params, adapt_names, lr, steps)
    loss_fn = checked_loss(loss_fn)
    recompute = checkpoint and create_graph
    if recompute and isinstance(lr, torch.Tensor) and lr.requires_grad:
        raise ValueError("sgd_path: checkpoint=True does not support learned inner step "
                         "sizes (a tensor lr that requires grad); use checkpoint=False")
    if steps and not recompute:
        frozen = [n for n in names if not params[n].requires_grad]
        if frozen:
            raise ValueError(f"sgd_path: the adapted tensors {frozen[:5]} do not require "
                             f"grad, so they have no gradient; pass params through "
                             f"metaloop.func.detach(params, requires_grad=True)")
    return _sgd_path(fwd, loss_fn, dict(params), names, x, y, lr, steps, create_graph,
                     recompute, keep)


def _sgd_path(fwd, loss_fn, params: Params, names: list[str], x, y, lr, steps: int,
              create_graph: bool, recompute: bool, keep=()) -> Iterator[Params]:
    yield params
    for k in range(steps):
        if recompute:
            params = recomputed_step(fwd, loss_fn, params, names, x, y, step_lr(lr, k), keep)
        else:
            params = sgd_step(fwd, loss_fn, params, names, x, y, step_lr(lr, k), create_graph)
        yield params


def sgd_path_func(fwd: Forward, loss_fn, params: Mapping[str, torch.Tensor], adapt_names,
                  x: torch.Tensor, y: torch.Tensor, lr, steps: int,
                  create_graph: bool = True) -> Iterator[Params]:
    """``sgd_path`` written with ``torch.func.grad``, so that it runs under ``vmap``.

    Same checks and results as ``sgd_path`` (the params need not require grad);
    ``create_graph=False`` detaches each step's gradient (first order).

    Second order under ``torch.func.vmap`` is silently wrong for models with torch's fused
    normalisation layers: the double backward of ``nn.BatchNorm*``, ``nn.InstanceNorm*`` and
    ``nn.LayerNorm`` (and of ``F.batch_norm``, ``F.instance_norm``, ``F.layer_norm``) is
    wrong under vmap (pytorch/functorch#534), so a meta-gradient taken through
    ``create_graph=True`` steps that adapt a parameter at or before such a layer differs from
    the per-task one without any error (float64: 6.9e-4 on gradients of 0.13 for an MLP with
    a LayerNorm, two steps). ``metaloop.meta.MAML(batching="vmap")`` refuses that case by
    name; this function cannot see the model and does not. With such a layer, vmap it only
    for first order (``create_graph=False``, exact) or for steps that adapt only the head
    after the last norm layer, and take second order over a per-task Python loop (exact), or
    use ``nn.GroupNorm``, ``nn.RMSNorm`` or ``metaloop.models.conv4.BatchNorm`` (plain
    arithmetic, exact under vmap).

    Args:
        fwd: ``fwd(params, x) -> predictions``.
        loss_fn: mean loss ``(pred, y) -> scalar``.
        params: name -> tensor.
        adapt_names: a list (any non-string iterable) of distinct names of ``params`` to
            update.
        x: ``[S, ...]`` support inputs.
        y: ``[S]`` labels or ``[S, out]`` targets.
        lr: step size: a finite float > 0, or a ``[rows, len(adapt_names)]`` table (as
            ``sgd_path``).
        steps: number of steps, an int >= 0.
        create_graph: keep each step's gradient differentiable (second order).

    Yields:
        name -> tensor after 0, 1, ..., ``steps`` steps.

    Raises:
        ValueError: as ``sgd_path``.
    """
    names = check_path_args("sgd_path_func", params, adapt_names, lr, steps)
    loss_fn = checked_loss(loss_fn)
    return _sgd_path_func(fwd, loss_fn, dict(params), names, x, y, lr, steps, create_graph)


def _sgd_path_func(fwd, loss_fn, params: Params, names: list[str], x, y, lr, steps: int,
                   create_graph: bool) -> Iterator[Params]:
    yield params

    def support_loss(adapted, rest):
        return loss_fn(fwd({**rest, **adapted}, x), y)

    for k in range(steps):
        grads = torch.func.grad(support_loss)({n: params[n] for n in names}, params)
        if not create_graph:
            grads = {n: g.detach() for n, g in grads.items()}
        params = {**params, **_update(params, names, [grads[n] for n in names], step_lr(lr, k))}
        yield params


@contextmanager
def gradients_on() -> Iterator[None]:
    """Gradients recorded while it holds, whatever the caller's mode: inside
    ``torch.no_grad()`` and ``torch.inference_mode()`` too. An inner loop differentiates
    its support loss, so adapting needs them even where the caller only evaluates
    (``metaloop.adapt.heads`` solves its L-BFGS head the same way)."""
    with torch.inference_mode(False), torch.enable_grad():
        yield


def autograd_usable(t):
    """``t``, or an ordinary copy of it where it is an inference tensor (one made under
    ``torch.inference_mode()``, which autograd cannot save for a backward pass); anything
    that is not a tensor passes through. Call it inside ``gradients_on()``."""
    return t.clone() if isinstance(t, torch.Tensor) and t.is_inference() else t


def detached_steps(path: Iterator[Params]) -> Iterator[Params]:
    """Each params dict of ``path`` detached, each step computed inside ``gradients_on()``:
    the caller's grad mode holds between the yields (a ``with torch.enable_grad()`` around
    the yields would leave gradients on in the caller's loop body)."""
    while True:
        with gradients_on():
            p = next(path, None)
            if p is None:
                return
            out = detach(p)
        yield out


def _positive(name: str, value, kind=float) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 \
        and math.isfinite(value)
    if not ok or (kind is int and not isinstance(value, int)):
        raise ValueError(f"{name} must be a positive {kind.__name__}, got {value!r}")


def default_head(model: nn.Module) -> list[str] | None:
    """The names of ``model``'s default head (``last_linear_names``: its ``head``
    ``nn.Linear``, else its last one), or None for a model without an ``nn.Linear`` (a 1x1
    convolution or a bare ``nn.Parameter`` as its output layer). Only ``head_init="zero"``
    and ANIL's default head need one, and say which argument to give where it is missing;
    second-order MAML's vmap check takes it as the head where there is one."""
    if not any(isinstance(m, nn.Linear) for m in model.modules()):
        return None
    return last_linear_names(model)


def _check_one_output_layer(head: list[str], params: Mapping[str, torch.Tensor]) -> None:
    """A zero head is rebuilt per task as ``[ways, ...]`` tensors (``SGDAdapter.start``), so
    its tensors must all have the outputs as their first dimension: one output layer (a
    weight ``[out, D]`` and a bias ``[out]``, or a 1x1 convolution's ``[out, D, 1, 1]``).

    Raises:
        ValueError: a 0-dim tensor, or tensors whose first dimensions differ (two layers).
    """
    shapes = {n: tuple(params[n].shape) for n in head}
    if any(not s for s in shapes.values()) or len({s[0] for s in shapes.values()}) > 1:
        raise ValueError(f"head_init='zero' starts the head at zero with one row per class, "
                         f"so its tensors must share their first dimension (the outputs), "
                         f"as one output layer's weight [out, D] and bias [out] do; got "
                         f"{', '.join(f'{n} {list(s)}' for n, s in shapes.items())}: name "
                         f"only the output layer's parameters as the head")


def check_one_task_output(owner: str, loss, x: torch.Tensor, out) -> None:
    """``predict``'s counterpart of ``adapt``'s one-task check: with a built-in ``loss``
    (``"ce"``/``"mse"``, by name or as the function), the predictions of ONE task's
    ``x [N, ...]`` are ``[N, out]``. A batch of
    tasks ``[B, N, ...]`` given to an MLP would otherwise come back ``[B, N, out]`` without a
    word. Only shapes are read (under ``vmap``, the per-task ones).

    Raises:
        ValueError: naming ``owner`` and both shapes.
    """
    builtin = isinstance(loss, str) or any(loss is f for f in LOSSES.values())
    if builtin and isinstance(out, torch.Tensor) and out.dim() != 2:
        raise ValueError(f"{owner}.predict takes ONE task's inputs x [N, ...] and gives "
                         f"predictions [N, out], but x {list(x.shape)} gave "
                         f"{list(out.shape)}; for a batch of tasks use predict_batched "
                         f"(x [B, N, ...]) or predict each task's x")


def zero_head(owner: str, head, head_init: str):
    """``head`` as given to ``MAML``'s or ``Reptile``'s ``head=`` (a predicate or names, or
    None), which only ``head_init="zero"`` reads. ANIL's ``head`` (``owner`` "ANIL") is
    what adapts, and passes with any ``head_init``.

    Raises:
        ValueError: ``head`` given with another ``head_init``, where it would change
            nothing.
    """
    if head is not None and head_init != "zero" and owner != "ANIL":
        raise ValueError(f"{owner}(head=...) names the head that head_init='zero' starts at "
                         f"zero; with head_init={head_init!r} it would change nothing: "
                         f"leave it out (adapt= chooses what adapts)")
    return head


def _check_untied_head(model: nn.Module, head: list[str]) -> None:
    """A zero head must be the head's alone: a head tensor that another layer also uses
    (tied weights, ``out.weight = inp.weight``) would be zeroed in that layer too, and
    resized to the task's ways.

    Raises:
        ValueError: naming the head tensor and the other names it goes by.
    """
    for n, others in list(tied_names(model, head).items())[:1]:
        raise ValueError(f"head_init='zero' would zero {n}, which the model also uses as "
                         f"{', '.join(others)} (tied weights); use head_init='learned', "
                         f"or untie the head")


def _check_first_names(model: nn.Module, select: Selector | None) -> None:
    """A tied tensor goes by its first name only (``named_parameters()``): name a list that
    gives it by another of its names, rather than call that name unknown; and refuse a
    predicate that selects one of its names but not another, rather than let its first
    name alone decide.

    Raises:
        ValueError: naming the given name and the name to use, or the two names the
            predicate tells apart.
    """
    if select is None or isinstance(select, str):
        return
    kept = dict(model.named_parameters())
    if callable(select):
        for n, others in tied_names(model, list(kept)).items():
            for alias in others:
                if bool(select(alias)) != bool(select(n)):
                    yes, no = (alias, n) if select(alias) else (n, alias)
                    raise ValueError(f"the selector chooses {yes} but not {no}, which is the "
                                     f"same tensor (tied weights, known as {n}): select both "
                                     f"names or neither")
        return
    for n, others in tied_names(model, list(kept)).items():
        for alias in others:
            if alias in select and alias not in kept:
                raise ValueError(f"{alias} is the same tensor as {n} (tied weights), which "
                                 f"goes by its first name: name it {n!r}")


@dataclass
class SGDAdapter:
    """How a learner adapts to one task: SGD on a chosen subset, from a chosen head start.

    Args:
        model: the network; called functionally with the adapted parameters, which are
            never written back (a torch BatchNorm that tracks running statistics does
            update those buffers on every call in training mode, as in plain training;
            metaloop's BatchNorm keeps none).
        loss: "mse", "ce" or a callable ``(pred, y) -> scalar``.
        lr: inner step size.
        steps: default number of inner steps.
        adapt: which parameters adapt (predicate or names); None adapts all.
        head_init: "learned" (the head is part of the meta-learned start) or "zero" (a new
            zero head of the task's output size: use it when tasks differ in output size).
        head: predicate or names of the head's parameters, the head that
            ``head_init="zero"`` starts at zero (kept as a list of names). Default
            ``default_head``: the ``head`` nn.Linear, else the last one, or None for a model
            without an nn.Linear (then ``head_init="zero"`` needs it given).
        checkpoint: recompute each differentiable inner step in the backward pass instead
            of keeping its activations (see ``sgd_path``); not with ``functional``/vmap.
        path_fn: another inner loop over the same settings, called as ``path_fn(adapter,
            loop, start, x, y, steps, create_graph, lr)`` with ``loop`` the plain SGD path
            (``sgd_path`` or, under vmap, ``sgd_path_func``); None runs ``loop`` on the whole
            network. ANIL sets it to its head-only path
            (``metaloop.meta.anil.head_only_path``).
    """

    model: nn.Module
    loss: str | Callable = "mse"
    lr: float = 0.01
    steps: int = 1
    adapt: Selector | None = None
    head_init: str = "learned"
    head: list[str] | None = None          # a predicate too, made names in __post_init__
    checkpoint: bool = False
    path_fn: Callable | None = None
    names: list[str] = field(init=False)

    def __post_init__(self):
        if not isinstance(self.model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module, got {type(self.model).__name__}")
        _positive("inner_lr", self.lr)
        _positive("inner_steps", self.steps, int)
        if self.head_init not in ("learned", "zero"):
            raise ValueError(f"head_init must be 'learned' or 'zero', got {self.head_init!r}")
        self.loss_fn = get_loss(self.loss)
        params = dict(self.model.named_parameters())
        select: Selector | None = cast(Any, self.head)    # names or a predicate, as adapt
        for given in (select, self.adapt):
            _check_first_names(self.model, given)
        head = default_head(self.model) if select is None else \
            list(partition(params, select)[0])          # validates the names
        self.head = head
        self.names = list(params) if self.adapt is None else list(partition(params, self.adapt)[0])
        if self.head_init == "zero":
            if head is None:
                raise ValueError(f"head_init='zero' starts the head at zero, but "
                                 f"{type(self.model).__name__} has no nn.Linear to take as "
                                 f"its head: name the head's parameters with head=[...] (e.g. "
                                 f"{self.names[-2:]})")
            if not set(head) <= set(self.names):
                raise ValueError(f"head_init='zero' needs the head {head} among the adapted "
                                 f"parameters {self.names}")
            _check_untied_head(self.model, head)
            _check_one_output_layer(head, params)

    def fwd(self, params: Mapping[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        """The network with ``params`` on ``x`` (image batches stay NCHW: on the CPU the
        channels-last layout is faster but its float32 BatchNorm is not exact,
        docs/benchmarks.md)."""
        return forward(self.model, params, x)

    def start(self, params: Mapping[str, torch.Tensor], support_y: torch.Tensor) -> Params:
        """The starting point for one task: params, with a zero head if head_init == "zero".

        ``support_y`` is one task's ``[S]`` labels / ``[S, out]`` targets, or a whole batch's
        ``[B, S]`` / ``[B, S, out]`` (the head size is the same for every task of a batch).
        """
        if self.head_init == "learned":
            return dict(params)
        out = support_y.shape[-1] if support_y.is_floating_point() else int(support_y.max()) + 1
        assert self.head is not None                                 # set by __post_init__
        ref = params[self.head[0]]
        zero = {n: ref.new_zeros((out, *params[n].shape[1:])).requires_grad_()
                for n in self.head}                                  # weight [out, D], bias [out]
        return {**params, **zero}

    def path(self, params, x, y, steps: int | None = None, create_graph: bool = True,
             started: bool = False, functional: bool = False, lr=None):
        """Yield the task's params after 0..steps steps (differentiable if create_graph).

        ``started``: params already went through ``start`` (done outside ``vmap``).
        ``functional``: use the ``torch.func`` inner loop, required under ``vmap``.
        ``lr``: None (the adapter's float ``lr``), another positive float, or a
        ``[rows, len(self.names)]`` table of per-step, per-tensor step sizes
        (``metaloop.adapt.learned_lr``).

        Raises:
            ValueError: on a bad ``steps``, or ``functional`` with ``checkpoint`` (the
                checkpointed step is an autograd.Function without a vmap rule).
        """
        steps = self.steps if steps is None else steps
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 0:
            raise ValueError(f"steps must be a non-negative int, got {steps!r}")
        if functional and self.checkpoint and create_graph:
            raise ValueError("checkpoint=True does not support the functional (vmap) inner "
                             "loop; use batching='loop'")
        if lr is None:
            lr = self.lr
        elif not isinstance(lr, torch.Tensor):
            _positive("lr", lr)
        elif lr.dim() != 2 or lr.shape[1] != len(self.names):
            raise ValueError(f"lr table must be [steps, {len(self.names)}] (one column per "
                             f"adapted tensor), got shape {list(lr.shape)}")
        start = dict(params) if started else self.start(params, y)
        loop = sgd_path_func if functional else partial(
            sgd_path, checkpoint=self.checkpoint,
            keep=list(self.model.buffers()) if self.checkpoint else ())
        if self.path_fn is not None:
            return self.path_fn(self, loop, start, x, y, steps, create_graph, lr)
        return loop(self.fwd, self.loss_fn, start, self.names, x, y, lr, steps, create_graph)

    def run(self, params, x, y, steps: int | None = None, create_graph: bool = True,
            **kw) -> Params:
        """The task's params after ``steps`` steps (keywords as ``path``)."""
        *_, last = self.path(params, x, y, steps, create_graph, **kw)
        return last

    def test_path(self, params, x, y, steps: int | None = None, lr=None) -> Iterator[Params]:
        """Like path, for evaluation: no graph to the start, detached outputs.

        The steps take their gradients whatever the caller's grad mode (``torch.no_grad()``,
        ``torch.inference_mode()``: ``gradients_on``), and only while each step runs: the
        caller's mode holds between the yields. The yielded tensors are ordinary ones (not
        inference tensors), usable in and out of inference mode.
        """
        lr = lr.detach() if isinstance(lr, torch.Tensor) else lr
        with gradients_on():
            start = detach(params, requires_grad=True)
            path = self.path(start, autograd_usable(x), autograd_usable(y), steps,
                             create_graph=False, lr=lr)
        yield from detached_steps(path)
