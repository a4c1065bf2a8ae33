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


def last_linear_module(model: nn.Module) -> str | None:
    """The name of the default head's module (``last_linear_names``): ``model.head`` when
    it is an ``nn.Linear`` (``"head"``), else the last ``nn.Linear`` registered; None where
    there is none."""
    last, head = None, getattr(model, "head", None)
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Linear) and (mod is head or not isinstance(head, nn.Linear)):
            last = name
    return last


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
    last = last_linear_module(model)
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
        model: the network; called functionally and left exactly as it was (every parameter
            and buffer the same object afterwards), a submodule registered under two names
            (``self.b = self.a``) and weights tied across modules (``out.weight =
            inp.weight``) included: a tensor given under one of its names is used wherever
            the model uses it. What ``model``'s own forward does in place is not undone: a
            torch BatchNorm in training mode with ``track_running_stats`` updates its
            running statistics, as any training-mode call does.
        params: name -> tensor, a subset of the model's parameter and buffer names (from
            ``params_of``, ``partition``, an inner loop); each tensor the shape of the one it
            replaces (with a leading task dim only under ``vmap``).
        x: the input, ``[N, ...]`` as ``model`` takes it. kwargs: passed to ``model``.

    Returns:
        ``model``'s output, e.g. ``[N, out]``.

    Raises:
        TypeError: ``params`` is not a mapping.
        ValueError: ``params`` names a tensor the model does not have (a misspelt name
            would otherwise be ignored and the model's own tensor used), gives one tensor
            (tied, or a module under two names) two different values, or, when the call
            fails, a tensor whose shape, dtype or device differs from the model's (named;
            checked only then, so valid input costs nothing).
        RuntimeError: the model's own failure on ``x``, the same exception, with the
            input's shape, the failing layer, its input's shape and what it takes appended to
            torch's message (``describe_input``; read only then).
    """
    check_names("forward", model, params)
    try:
        return functional_call(model, untied(model, params), (x,), kwargs or None,
                               strict=False, tie_weights=False)
    except RuntimeError as e:
        mismatch = mismatched(model, params)
        if mismatch:
            raise ValueError(f"forward: {mismatch}; pass params of this model (params_of(model), "
                             f"or an inner loop's)") from e
        if type(e) is RuntimeError and len(e.args) == 1 and isinstance(e.args[0], str):
            e.args = (f"{e.args[0]}\n{describe_input(model, x, e)}",)   # the same exception
        raise


# Bumped whenever any module registers a parameter, buffer or submodule (torch's global
# registration hooks, installed at the first functional call): the alias plans cached below
# are read again after any such change (``out.weight = inp.weight`` after a first call).
_GENERATION = [0]
_HOOKED = [False]


def _bump(*_args) -> None:
    _GENERATION[0] += 1


def _install_hooks() -> None:
    from torch.nn.modules import module as torch_module
    torch_module.register_module_parameter_registration_hook(_bump)
    torch_module.register_module_buffer_registration_hook(_bump)
    torch_module.register_module_module_registration_hook(_bump)
    _HOOKED[0] = True


# An alias plan: (name -> the first name of the same module attribute, for the later names
# of a submodule registered twice; name -> the first names of the other module attributes
# holding the same tensor, for tied weights). Both empty for most models.
_Plan = tuple[dict[str, str], dict[str, tuple[str, ...]]]
_PLANS: weakref.WeakKeyDictionary[nn.Module, tuple[int, _Plan]] = weakref.WeakKeyDictionary()


def alias_plan(model: nn.Module) -> _Plan:
    """How ``model``'s tensors are shared, read off its modules (see ``_Plan``)."""
    slots: dict[int, dict[tuple[int, str], str]] = {}      # tensor -> (module, attr) -> name
    same: dict[str, str] = {}
    for prefix, mod in model.named_modules(remove_duplicate=False):
        for store in (mod._parameters, mod._buffers):
            for attr, t in store.items():
                if t is None:
                    continue
                name = f"{prefix}.{attr}" if prefix else attr
                first = slots.setdefault(id(t), {}).setdefault((id(mod), attr), name)
                if first != name:
                    same[name] = first
    others: dict[str, tuple[str, ...]] = {}
    for by_slot in slots.values():
        if len(by_slot) > 1:
            firsts = tuple(by_slot.values())
            for n in firsts:
                others[n] = tuple(m for m in firsts if m != n)
    return same, others


def _cached_plan(model: nn.Module) -> _Plan:
    if torch.compiler.is_compiling():         # no guard on a global cache (unknown_names)
        return alias_plan(model)
    if not _HOOKED[0]:
        _install_hooks()
    hit = _PLANS.get(model)
    if hit is not None and hit[0] == _GENERATION[0]:
        return hit[1]
    generation = _GENERATION[0]     # read first: a registration while it is planned re-plans
    plan = alias_plan(model)
    _PLANS[model] = (generation, plan)
    return plan


def untied(model: nn.Module, params: Mapping[str, torch.Tensor]) -> Params:
    """``params`` as ``functional_call(..., tie_weights=False)`` needs them to leave ``model``
    as it was: each module attribute given once (torch's ``tie_weights=True`` swapped a
    submodule registered under two names twice and restored the swapped-in tensor), and a
    tensor tied across modules given for each of them. The plan is cached per model (a dict
    copy per call for a model that shares nothing).

    Raises:
        ValueError: two names of one tensor given two different values.
    """
    same, others = _cached_plan(model)
    if not same and not others:
        return dict(params)
    out: Params = {}
    given: dict[str, str] = {}                  # attribute's first name -> the name given
    for name, t in params.items():
        first = same.get(name, name)
        if first in out and out[first] is not t:
            _two_values(given[first], name)
        out[first], given[first] = t, name
    for first in list(given):
        for n in others.get(first, ()):
            if n in given and out[n] is not out[first]:
                _two_values(given[first], given[n])
            out[n] = out[first]
    return out


def _two_values(a: str, b: str) -> None:
    raise ValueError(f"forward: params gives {a!r} and {b!r} different values, but the model "
                     f"holds one tensor under both names (tied weights, or a module registered "
                     f"twice); give it under one name")


def describe_input(model: nn.Module, x, error: BaseException | None = None) -> str:
    """``x``'s shape and dtype, for an error raised by ``model(x)`` (torch's message from deep
    inside a layer names neither the input nor the layer), with the layer of ``model`` that
    raised it, read off ``error``'s traceback (the innermost frame whose ``self`` is one of
    ``model``'s modules), its input's shape and, for a convolution or a linear layer, the
    input size it takes. Costs nothing unless called, on the failure path."""
    try:
        what = f"forward: the input x is {list(x.shape)} {x.dtype}"
    except Exception:                               # noqa: BLE001 - not a tensor
        what = f"forward: the input x is a {type(x).__name__}"
    try:
        names = {id(m): n for n, m in model.named_modules()}
        layer = arg = None
        tb = error.__traceback__ if error is not None else None
        while tb is not None:
            loc = tb.tb_frame.f_locals
            me = loc.get("self")
            if isinstance(me, nn.Module) and id(me) in names:
                code = tb.tb_frame.f_code
                first = code.co_varnames[1] if code.co_argcount > 1 else None
                layer, arg = me, loc.get(first) if first else None
            tb = tb.tb_next
        if layer is None or layer is model:
            return what
        name = names[id(layer)]
        what += f"; the failing layer is {name} ({type(layer).__name__})"
        if isinstance(arg, torch.Tensor):
            what += f", whose input was {list(arg.shape)}"
        if isinstance(layer, nn.modules.conv._ConvNd):
            dims = len(layer.kernel_size)
            what += (f"; it takes [N, C, {', '.join('*' * dims)}] with C = "
                     f"{layer.in_channels} input channels")
        elif isinstance(layer, nn.Linear):
            what += f"; it takes [..., {layer.in_features}] ({layer.in_features} input features)"
    except Exception:                               # noqa: BLE001 - a hint only
        pass
    return what


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
