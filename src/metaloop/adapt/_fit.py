"""What the adaptation strategies share: the adapted predictor, support checks, and a
functional training loop over a chosen parameter subset."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from metaloop._random import check_generator, draw_device, seeded_rng
from metaloop.adapt.sgd import autograd_usable, gradients_on
from metaloop.func.losses import cross_entropy
from metaloop.func.params import Params, Selector, detach, eval_mode, forward, partition


@dataclass(frozen=True)
class Adapted:
    """A predictor adapted to one task: ``model`` called with ``params``.

    Attributes:
        model: the network (never mutated; for LoRA and soft prompts, the model that carries
            the adapters).
        params: name -> tensor, detached; the head is sized to the task's classes.
        trainable: how many numbers were adapted (0 for prompting).
        names: the adapted parameter names.
        info: strategy-specific details (the chosen prompt, ...).
    """

    model: nn.Module
    params: Params
    trainable: int
    names: tuple[str, ...] = ()
    info: dict = field(default_factory=dict)

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[N, C]`` for inputs ``[N, ...]``, computed in eval mode (``eval_mode``:
        no dropout, torch BatchNorm normalising with its running statistics and leaving
        them as they are), whatever the model's own mode, which is then restored: the
        same ``x`` always gives the same logits.

        Raises:
            ValueError: ``x`` on another device, or in another float dtype, than the params.
        """
        check_model_inputs("Adapted", self.model, x=x)
        with eval_mode(self.model):
            return forward(self.model, self.params, x)


def numel(params: Mapping[str, torch.Tensor], names=None) -> int:
    """Total size of ``params`` (or of the given names)."""
    names = params if names is None else names
    return sum(params[n].numel() for n in names)


def check_model_inputs(fn: str, model: nn.Module, **tensors: torch.Tensor) -> None:
    """``metaloop.meta._common.check_inputs``: each tensor on the device of ``model``'s
    parameters, a float input (a name ending in ``x``) in their dtype. Token ids of a text
    model (one with ``tokenize``) are float32 whatever the model's dtype, so they are checked
    for their device only.

    Raises:
        ValueError: naming ``fn``, the tensor, and both devices or dtypes.
    """
    from metaloop.meta._common import check_inputs  # metaloop.meta imports this package
    if callable(getattr(model, "tokenize", None)):
        tensors = {f"{k} (token ids)" if k.endswith("x") else k: v for k, v in tensors.items()}
    check_inputs(fn, model, **tensors)


def check_support(fn: str, x: torch.Tensor, y: torch.Tensor,
                  model: nn.Module | None = None) -> int:
    """Validate one task's support set; return its number of classes C.

    With ``model``, the tensors must also be on the device of its parameters, and a float
    ``x`` in their dtype (``metaloop.meta._common.check_inputs``).

    Raises:
        ValueError: an empty support set, x and y of different lengths, labels that are not
            int64 ``[S]``, a class in ``0..C-1`` without examples, one class only (C = 1),
            non-finite inputs, or
            tensors on another device or in another float dtype than ``model``.
    """
    if not isinstance(x, torch.Tensor) or not isinstance(y, torch.Tensor):
        raise ValueError(f"{fn}: support_x and support_y must be tensors")
    if model is not None:
        check_model_inputs(fn, model, support_x=x, support_y=y)
    if x.dim() == 0 or x.shape[0] == 0 or y.numel() == 0:
        raise ValueError(f"{fn}: the support set is empty (support_x {list(x.shape)}, "
                         f"support_y {list(y.shape)}); give at least one example per class")
    if y.dtype != torch.int64 or y.dim() != 1 or y.shape[0] != x.shape[0]:
        raise ValueError(f"{fn}: support_y must be int64 [S={x.shape[0]}] labels, got "
                         f"{y.dtype} {list(y.shape)}")
    if int(y.min()) < 0:
        raise ValueError(f"{fn}: labels must be >= 0, found {int(y.min())}")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{fn}: support_x {list(x.shape)} has non-finite values (NaN or inf); "
                         f"the adapted parameters would be NaN")
    c = int(y.max()) + 1
    missing = sorted(set(range(c)) - set(y.tolist()))
    if missing:
        raise ValueError(f"{fn}: classes {missing} have no support example (labels 0..{c - 1})")
    if c < 2:
        raise ValueError(f"{fn}: the support set has one class (every label is 0); a "
                         f"classifier needs at least 2 classes to tell apart")
    return c


def check_steps(fn: str, **values) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{fn}: {name} must be a non-negative int, got {v!r}")


def check_lr(fn: str, **values) -> None:
    for name, v in values.items():
        if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0 \
                or not math.isfinite(v):
            raise ValueError(f"{fn}: {name} must be a positive number (and finite), got {v!r}")


def check_generator_arg(fn: str, generator: object) -> None:
    """``generator`` must be a ``torch.Generator`` or None (``metaloop._random.check_generator``).

    Raises:
        TypeError: naming ``fn`` and ``generator``, and what was given.
    """
    check_generator(f"{fn}:", generator)


def adapter_dropouts(model: nn.Module) -> list[nn.Module]:
    """The dropout layers of LoRA adapters (peft's ``lora_dropout``) that drop something
    (p > 0): the only modules that ``fit`` runs in train mode."""
    return [m for n, m in model.named_modules()
            if ".lora_dropout." in f".{n}." and isinstance(m, nn.Dropout) and m.p > 0]


@contextmanager
def fitting_mode(model: nn.Module, generator: torch.Generator | None = None
                 ) -> Iterator[None]:
    """While active, ``model`` is in eval mode (``eval_mode``: no dropout, torch BatchNorm
    normalising with its running statistics and never updating them) except its LoRA
    adapters' dropout (``adapter_dropouts``), which then drops; afterwards every module is
    back in its own mode. Where adapter dropout acts and ``generator`` is given, its masks
    come from torch's generators of the CPU and of the model's CUDA device seeded by one
    draw from ``generator`` (the caller's global random state is restored afterwards), so
    the same seed gives the same result; with None they come from torch's global random
    state."""
    drops = adapter_dropouts(model)
    with eval_mode(model):
        for m in drops:
            m.train()
        if not drops or generator is None:
            yield
            return
        seed = int(torch.randint(2 ** 62, (), generator=generator,
                                 device=draw_device(generator)))
        with seeded_rng(seed, [p.device for p in model.parameters()]):
            yield


def fit_path(fwd: Callable[[Params, torch.Tensor], torch.Tensor],
             params: Mapping[str, torch.Tensor], groups: Sequence[tuple[float, Sequence[str]]],
             x: torch.Tensor, y: torch.Tensor, steps: int, optimizer: str = "adam",
             loss_fn=cross_entropy) -> Iterator[Params]:
    """Yield params after 0..steps optimiser steps on ``loss_fn(fwd(params, x), y)``.

    A pure function: the caller's tensors are neither mutated nor part of the graph. Only
    the names in ``groups`` change; the rest are detached and fixed. Each yielded dict holds
    its own copies of the trained tensors, which later steps leave as they are. The steps
    take their gradients whatever the caller's grad mode (``torch.no_grad()``,
    ``torch.inference_mode()``: ``gradients_on``), and the yielded tensors are ordinary
    ones (not inference tensors).

    Args:
        fwd: ``fwd(params, x) -> logits``.
        groups: ``(learning rate, names)`` pairs: the parameters trained, and at what rate.
        x, y: the support set ``[S, ...]``, ``[S]`` (full batch: support sets are small).
        steps: optimiser steps. optimizer: ``"adam"`` or ``"sgd"``. loss_fn: mean loss.
    """
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    groups = [(lr, list(ns)) for lr, ns in groups if len(ns)]
    names = [n for _, ns in groups for n in ns]
    with gradients_on():
        train = {n: params[n].detach().clone().requires_grad_() for n in names}
        rest = {k: autograd_usable(v) for k, v in
                detach({k: v for k, v in params.items() if k not in train}).items()}
        x, y = autograd_usable(x), autograd_usable(y)
        opt_cls = torch.optim.Adam if optimizer == "adam" else torch.optim.SGD
        opt = opt_cls([{"params": [train[n] for n in ns], "lr": lr} for lr, ns in groups])
        first = {**rest, **_snapshot(train)}
    yield first
    for _ in range(steps):
        with gradients_on():
            loss = loss_fn(fwd({**rest, **train}, x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            out = {**rest, **_snapshot(train)}
        yield out


def _snapshot(train: Mapping[str, torch.Tensor]) -> Params:
    """Detached copies of the trained leaves, which ``opt.step()`` updates in place."""
    return {n: t.detach().clone() for n, t in train.items()}


def fit(model: nn.Module, params: Mapping[str, torch.Tensor],
        groups: Sequence[tuple[float, Sequence[str]]],
        x: torch.Tensor, y: torch.Tensor, steps: int,
        generator: torch.Generator | None = None, **kw) -> Params:
    """The last params of ``fit_path`` with ``fwd = forward(model, ...)``, detached, the
    model in ``fitting_mode`` (eval mode but for LoRA dropout, whose masks ``generator``
    seeds) while it runs."""
    with fitting_mode(model, generator):
        *_, last = fit_path(lambda p, v: forward(model, p, v), params, groups, x, y, steps,
                            **kw)
    return last


def select(params: Mapping[str, torch.Tensor], adapt: Selector | None) -> list[str]:
    """Names chosen by a predicate / collection (all if None); ValueError if none match."""
    return list(params) if adapt is None else list(partition(params, adapt)[0])
