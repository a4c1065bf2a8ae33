"""Parameters as dicts: extract, partition, combine, and call a module functionally."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]
Selector = Callable[[str], bool] | Iterable[str]


def params_of(model: nn.Module) -> Params:
    """The model's parameters as a name -> tensor dict (the live Parameters, not copies)."""
    return dict(model.named_parameters())


def _predicate(select: Selector) -> Callable[[str], bool]:
    if callable(select):
        return select
    names = frozenset(select)
    return names.__contains__


def partition(params: Mapping[str, torch.Tensor], select: Selector) -> tuple[Params, Params]:
    """Split params into (selected, rest) by a name predicate or a collection of names.

    Raises:
        ValueError: if a collection of names names a parameter that does not exist, if
            nothing is selected, or if ``select`` is a single string (a string is a
            collection of characters, not of names: pass ``[name]``).
    """
    if isinstance(select, str):
        raise ValueError(f"select must be a predicate or a collection of parameter names, got "
                         f"the string {select!r}; pass [{select!r}] for that one name")
    if not callable(select):
        select = list(select)
        missing = sorted(set(select) - set(params))
        if missing:
            raise ValueError(f"unknown parameter names {missing}; available: {sorted(params)}")
    pred = _predicate(select)
    chosen = {k: v for k, v in params.items() if pred(k)}
    if not chosen:
        raise ValueError(f"the selector matches no parameter; available: {sorted(params)}")
    return chosen, {k: v for k, v in params.items() if not pred(k)}


def combine(*parts: Mapping[str, torch.Tensor]) -> Params:
    """Merge dicts; later dicts win (so ``combine(base, adapted)`` overrides ``base``)."""
    out: Params = {}
    for p in parts:
        out.update(p)
    return out


def last_linear_names(model: nn.Module) -> list[str]:
    """Parameter names of the last ``nn.Linear`` in ``model`` (the default head)."""
    last = None
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear):
            last = name
    if last is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear to use as the head")
    return [f"{last}.{n}" if last else n for n, _ in model.get_submodule(last).named_parameters()]


def forward(model: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor,
            **kwargs) -> torch.Tensor:
    """``model(x, **kwargs)`` with ``params`` in place of its tensors (missing: the model's)."""
    return functional_call(model, dict(params), (x,), kwargs or None, strict=False)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """A CPU image batch ``[N, C, H, W]`` in the channels-last layout (same values and shape).

    Not used by metaloop's learners: on the CPU, oneDNN convolutions and max-pooling are
    faster on channels-last tensors, but torch's fused float32 BatchNorm on them is not
    exact (relative meta-gradient errors of 1e-2 to 0.6 against float64 on Omniglot Conv4,
    where NCHW gives 1e-5; ``benchmarks/bench_layout.py``, docs/benchmarks.md). Kept for the
    benchmarks that measure that trade. With one channel the two layouts hold the same
    memory and torch cannot tell them apart, so the strides are set explicitly. Anything
    else (other ranks, other devices, inside a ``torch.func`` transform) is returned as it is.
    """
    if (x.dim() != 4 or x.device.type != "cpu" or not x.is_floating_point()
            or torch._C._functorch.maybe_current_level() is not None):
        return x
    n, c, h, w = x.shape
    x = x.contiguous(memory_format=torch.channels_last)
    return x.as_strided(x.shape, (h * w * c, 1, w * c, c)) if c == 1 else x


def detach(params: Mapping[str, torch.Tensor], requires_grad: bool = False) -> Params:
    """Detached copies of params (sharing storage), optionally as new autograd leaves."""
    return {k: v.detach().requires_grad_(requires_grad) for k, v in params.items()}
