"""Parameters as dicts: extract, partition, combine, and call a module functionally."""

from __future__ import annotations

import difflib
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call

Params = dict[str, torch.Tensor]
Selector = Callable[[str], bool] | Iterable[str]


def params_of(model: nn.Module) -> Params:
    """The model's parameters as a name -> tensor dict (the live Parameters, not copies).

    Args:
        model: the network; each of its parameters appears once, under the name
            ``named_parameters()`` gives it.

    Returns:
        name -> ``nn.Parameter``, in registration order.
    """
    return dict(model.named_parameters())


def _predicate(select: Selector) -> Callable[[str], bool]:
    if callable(select):
        return select
    names = frozenset(select)
    return names.__contains__


def partition(params: Mapping[str, torch.Tensor], select: Selector) -> tuple[Params, Params]:
    """Split params into (selected, rest) by a name predicate or a collection of names.

    Args:
        params: name -> tensor, e.g. ``params_of(model)``.
        select: a predicate ``name -> bool``, or a collection of parameter names (a list,
            tuple, set or other iterable of str).

    Returns:
        ``(selected, rest)``: two dicts name -> tensor that together hold ``params``.

    Raises:
        ValueError: if a collection of names names a parameter that does not exist, if
            nothing is selected, if ``select`` is a single string (a string is a
            collection of characters, not of names: pass ``[name]``), or if it is neither
            callable nor an iterable of strings (``3``, ``False``, ``[0]``).
    """
    if isinstance(select, (str, bytes)):
        kind = "string" if isinstance(select, str) else "bytes"
        raise ValueError(f"select must be a predicate or a collection of parameter names, got "
                         f"the {kind} {select!r}; pass [{select!r}] for that one name"
                         + ("" if isinstance(select, str) else " (as a str)"))
    if not callable(select):
        if not isinstance(select, Iterable):
            raise ValueError(f"select must be a predicate or a collection of parameter names, "
                             f"got {type(select).__name__} {select!r}")
        select = list(select)
        odd = [n for n in select if not isinstance(n, str)]
        if odd:
            raise ValueError(f"select must be a predicate or a collection of parameter names, "
                             f"got a collection holding {type(odd[0]).__name__} {odd[0]!r}")
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


def tied_names(model: nn.Module, names: Sequence[str]) -> dict[str, list[str]]:
    """For each of ``names`` (as ``named_parameters()`` gives them) whose tensor ``model``
    also uses under other names (tied weights, ``out.weight = inp.weight``), those other
    names; names of untied tensors are left out."""
    every: dict[int, list[str]] = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        every.setdefault(id(p), []).append(n)
    return {n: [m for m in every[id(p)] if m != n] for n, p in model.named_parameters()
            if n in names and len(every[id(p)]) > 1}


def last_linear_names(model: nn.Module) -> list[str]:
    """Parameter names of the default head, as ``params_of`` names them: the model's
    ``head`` when it is an ``nn.Linear`` (metaloop's networks, and a model of your own that
    names its output layer so, wherever it was registered), else the last ``nn.Linear``. A
    weight tied to an earlier module's (the same Parameter under two names, e.g. an output
    layer sharing the input embedding's) goes by its first name, the one
    ``named_parameters()`` keeps.

    Args:
        model: the network.

    Returns:
        The head's parameter names (weight, then bias if it has one).

    Raises:
        ValueError: ``model`` has no ``nn.Linear``.
    """
    last, head = None, getattr(model, "head", None)
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and (mod is head or not isinstance(head, nn.Linear)):
            last = name
    if last is None:
        raise ValueError(f"{type(model).__name__} has no nn.Linear to use as the head")
    first = {id(p): n for n, p in model.named_parameters()}     # one name per tensor
    return [first[id(p)] for _, p in model.get_submodule(last).named_parameters()]


# model -> the names of its parameters and buffers (tied aliases included): read once per
# model, so that forward's check is a set comparison, not a walk over the modules.
_TENSOR_NAMES: weakref.WeakKeyDictionary[nn.Module, frozenset[str]] = \
    weakref.WeakKeyDictionary()


def tensor_names(model: nn.Module) -> frozenset[str]:
    """The names ``functional_call`` accepts for ``model``: every parameter and buffer, with
    each alias of a tied (shared) tensor."""
    return frozenset(n for n, _ in model.named_parameters(remove_duplicate=False)) | \
        frozenset(n for n, _ in model.named_buffers(remove_duplicate=False))


def unknown_names(model: nn.Module, names) -> list[str]:
    """The ``names`` (a set-like of str) that are none of ``model``'s parameters or buffers,
    sorted. The model's names are cached per model (weakly), so the usual answer, none, is a
    set comparison; they are read again before any name is reported, so modules added to the
    model since (``add_lora``) are seen. Traced by ``torch.compile``, the names are read off
    the model itself: a guard on the cache would index its keys, which change as models are
    collected, and fail the compilation."""
    if torch.compiler.is_compiling():
        return sorted(set(names) - tensor_names(model))
    known = _TENSOR_NAMES.get(model)
    if known is not None and names <= known:
        return []
    known = _TENSOR_NAMES[model] = tensor_names(model)
    return sorted(set(names) - known)


def check_names(fn: str, model: nn.Module, params: Mapping[str, torch.Tensor]) -> None:
    """Every key of ``params`` names a parameter or buffer of ``model``.

    Costs a set comparison per call: the model's names are cached per model (weakly), and
    read again before any name is refused, so modules added to the model since (``add_lora``)
    are seen. Reads no tensor values: safe under ``vmap``, ``grad`` and ``torch.compile``.

    Raises:
        TypeError: ``params`` is not a mapping.
        ValueError: names the model does not have, each with the closest name it does have.
    """
    if not isinstance(params, Mapping):
        raise TypeError(f"{fn}: params must be a dict name -> tensor, got "
                        f"{type(params).__name__}")
    unknown = unknown_names(model, params.keys())
    if unknown:
        known = _TENSOR_NAMES[model]
        hints = []
        for n in unknown[:5]:
            close = difflib.get_close_matches(n, known, n=1)
            hints.append(f"{n!r} (did you mean {close[0]!r}?)" if close else repr(n))
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise ValueError(f"{fn}: params has names that {type(model).__name__} does not have: "
                         f"{', '.join(hints)}{more}; its names include {sorted(known)[:4]}")


def forward(model: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor,
            **kwargs) -> torch.Tensor:
    """``model(x, **kwargs)`` with ``params`` in place of its tensors (missing: the model's).

    Args:
        model: the network; called functionally, never mutated.
        params: name -> tensor, a subset of the model's parameter and buffer names (from
            ``params_of``, ``partition``, an inner loop); each tensor the shape of the one it
            replaces (with a leading task dim only under ``vmap``).
        x: the input, ``[N, ...]`` as ``model`` takes it. kwargs: passed to ``model``.

    Returns:
        ``model``'s output, e.g. ``[N, out]``.

    Raises:
        TypeError: ``params`` is not a mapping.
        ValueError: ``params`` names a tensor the model does not have (a misspelt name
            would otherwise be ignored and the model's own tensor used), or, when the call
            fails, a tensor whose shape, dtype or device differs from the model's (named;
            checked only then, so valid input costs nothing).
    """
    check_names("forward", model, params)
    try:
        return functional_call(model, dict(params), (x,), kwargs or None, strict=False)
    except RuntimeError as e:
        mismatch = mismatched(model, params)
        if mismatch:
            raise ValueError(f"forward: {mismatch}; pass params of this model (params_of(model), "
                             f"or an inner loop's)") from e
        raise


def mismatched(model: nn.Module, params: Mapping[str, torch.Tensor], shapes: bool = True
               ) -> str | None:
    """The first of ``params`` whose float dtype, device or (with ``shapes``) shape differs
    from the model's tensor of that name, described ("params['w'] is [3, 4] torch.float64 on
    cpu but the model's tensor of that name is ..."); None if all agree. Names the model
    lacks, and values that are not tensors, are left to the callers' own checks."""
    own: dict[str, torch.Tensor] = dict(model.named_parameters())
    own.update(model.named_buffers())
    for name, t in params.items():
        ref = own.get(name)
        if not isinstance(t, torch.Tensor) or ref is None:
            continue
        if (shapes and t.shape != ref.shape) or t.device != ref.device or (
                t.is_floating_point() and ref.is_floating_point() and t.dtype != ref.dtype):
            return (f"params[{name!r}] is {list(t.shape)} {t.dtype} on {t.device} but the "
                    f"model's tensor of that name is {list(ref.shape)} {ref.dtype} on "
                    f"{ref.device}")
    return None


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
    """Detached copies of params (sharing storage), optionally as new autograd leaves.

    Args:
        params: name -> tensor.
        requires_grad: whether each copy is a new autograd leaf that requires grad.

    Returns:
        name -> detached tensor, each sharing storage with the one it copies.
    """
    return {k: v.detach().requires_grad_(requires_grad) for k, v in params.items()}


@contextmanager
def eval_mode(model) -> Iterator[None]:
    """While active, every module of ``model`` is in eval mode (dropout off), as a trained
    network is scored; afterwards each module is back in its own mode (a submodule kept in
    eval mode, such as a frozen backbone, stays there). Nothing happens for a plain
    callable."""
    modes = [(m, m.training) for m in model.modules()] if isinstance(model, nn.Module) else []
    if modes:
        model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def named_layers(model: nn.Module, keep: Callable[[nn.Module], bool]) -> list[str]:
    """The modules of ``model`` that ``keep`` picks, as ``"name (Type)"`` (the model's own
    type for itself), for messages that name layers."""
    return [f"{n or type(model).__name__} ({type(m).__name__})"
            for n, m in model.named_modules() if keep(m)]


def updates_running_stats(module: nn.Module) -> bool:
    """Whether ``module`` is torch's BatchNorm/InstanceNorm in training mode with
    ``track_running_stats``: each call then updates its running statistics in place, outside
    any parameter dict (vmap refuses it; it would change a model passed in)."""
    return (isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats
            and module.training)
