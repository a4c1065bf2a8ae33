"""Several linear heads on one shared body, all in one flat parameter dict.

The body is any model with ``forward(x, head=False) -> features [N, D]`` (``MLP``, ``Conv4``);
its own ``head`` layer is not used. Head ``h`` is the pair ``heads.<h>.weight [C, D]`` and
``heads.<h>.bias [C]`` in the same dict as the body's parameters, so a parameter-name
partition chooses what trains (body, heads, adapters) and a params dict is the whole state.
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metaloop._random import draw_device
from metaloop.func.params import (
    Params,
    forward,
    last_linear_names,
    named_layers,
    params_of,
    updates_running_stats,
)

PREFIX = "heads."


def head_param_names(name: str) -> tuple[str, str]:
    """The parameter names ``("heads.<name>.weight", "heads.<name>.bias")`` of head ``name``.

    Args:
        name: the head's name (``"A"``, ``"task0"``, ``"all"``).
    """
    return f"{PREFIX}{name}.weight", f"{PREFIX}{name}.bias"


def init_heads(sizes: Mapping[str, int], feature_dim: int,
               generator: torch.Generator | None = None, *, dtype: torch.dtype | None = None,
               device: torch.device | str | None = None) -> Params:
    """New linear heads, initialised as ``nn.Linear`` is: ``U(-1/sqrt(D), 1/sqrt(D))``.

    Args:
        sizes: head name -> number of outputs C.
        feature_dim: D, the body's feature size.
        generator: random source.
        dtype: of the heads (default float32). The draws are made in float32 on the
            generator's device (the CPU for None), so a seeded CPU generator gives the same
            heads whatever ``dtype`` and ``device`` are.
        device: of the heads (default the CPU).

    Returns:
        ``{"heads.<h>.weight": [C, D], "heads.<h>.bias": [C]}`` for each head.

    Raises:
        ValueError: a feature size or an output size that is not a positive int.
    """
    if not isinstance(feature_dim, int) or isinstance(feature_dim, bool) or feature_dim <= 0:
        raise ValueError(f"feature_dim must be a positive int, got {feature_dim!r}")
    for name, c in sizes.items():
        if not isinstance(c, int) or isinstance(c, bool) or c <= 0:
            raise ValueError(f"head {name!r} needs a positive int number of outputs, got {c!r}")
    bound = 1.0 / math.sqrt(feature_dim)
    at = draw_device(generator)
    out: Params = {}
    for name, c in sizes.items():
        w, b = head_param_names(name)
        weight = torch.rand(c, feature_dim, generator=generator, device=at).cpu()   # [C, D]
        bias = torch.rand(c, generator=generator, device=at).cpu()                  # [C]
        out[w], out[b] = (weight * 2 - 1) * bound, (bias * 2 - 1) * bound
    if dtype is not None or device is not None:
        out = {k: v.to(dtype=dtype, device=device) for k, v in out.items()}
    return out


def own_head_names(model: nn.Module) -> list[str]:
    """Parameter names of the body's own head, which the continual heads replace: those of
    its ``head`` module when it has one (``MLP``, ``Conv4``, ``forward(x, head=...)``
    bodies), wherever it was registered; otherwise those of its last ``nn.Linear``
    (``last_linear_names``)."""
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        return last_linear_names(model)
    first = {id(p): n for n, p in model.named_parameters()}     # one name per tensor
    return [first[id(p)] for p in head.parameters()]


def check_body(model: nn.Module) -> None:
    """Refuse a body the continual functions cannot use, naming what is wrong.

    Raises:
        ValueError: a ``forward`` without a ``head`` keyword (the body must return its
            features with ``forward(x, head=False)``), or torch BatchNorm/InstanceNorm
            layers in training mode with ``track_running_stats=True``: they would update
            their running statistics in place on the model, outside the parameter dict,
            so the model passed in would change and every strategy started from it would
            share (and disturb) one set of statistics.
    """
    try:
        sig = inspect.signature(model.forward)
    except (TypeError, ValueError):
        sig = None
    if sig is not None and "head" not in sig.parameters and not any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()):
        raise ValueError(f"{type(model).__name__}.forward{sig} has no head keyword: a "
                         f"continual body must return its features [N, D] with "
                         f"forward(x, head=False), as metaloop's MLP and Conv4 do")
    stats = named_layers(model, updates_running_stats)
    if stats:
        raise ValueError(f"{', '.join(stats[:3])}{' ...' if len(stats) > 3 else ''}: in "
                         f"training mode with track_running_stats=True it updates its "
                         f"running statistics in place on the model, outside the parameter "
                         f"dict; build it with track_running_stats=False, use "
                         f"metaloop.models.conv4.BatchNorm, or put it in eval mode to keep "
                         f"its statistics fixed")


def init_params(model: nn.Module, experiences: Sequence,
                generator: torch.Generator | None = None) -> Params:
    """The body's parameters (copied, without the model's own head, ``own_head_names``)
    plus one new head for every distinct ``experience.head``.

    Args:
        model: the body, with ``forward(x, head=False)``.
        experiences: the stream (``head``, ``num_outputs``, ``train``).
        generator: random source of the heads' initialisation.

    Returns:
        The body's parameters and the heads, the heads in the dtype and on the device of
        the body's first floating-point parameter.

    Raises:
        ValueError: no experiences, two experiences that give one head different output
            sizes, a first experience whose inputs do not suit the body (``check_data``),
            or a body ``check_body`` refuses.
    """
    check_body(model)
    experiences = list(experiences)
    if not experiences:
        raise ValueError("init_params needs at least one experience (its heads and its data "
                         "give the heads' sizes)")
    own = set(own_head_names(model))
    body = {k: v.detach().clone() for k, v in params_of(model).items() if k not in own}
    sizes: dict[str, int] = {}
    for e in experiences:
        if sizes.setdefault(e.head, e.num_outputs) != e.num_outputs:
            raise ValueError(f"head {e.head!r} is given {sizes[e.head]} and {e.num_outputs} "
                             f"outputs by different experiences")
    check_data(body, experiences[:1])
    with torch.no_grad():
        dim = features(model, body, experiences[0].train[0][:2]).shape[1]
    ref = next((v for v in body.values() if v.is_floating_point()), None)
    where: dict[str, Any] = {} if ref is None else {"dtype": ref.dtype, "device": ref.device}
    return {**body, **init_heads(sizes, dim, generator, **where)}


def body_params(params: Mapping[str, torch.Tensor]) -> Params:
    """The body's parameters (with LoRA adapters, if any): everything but the heads."""
    return {k: v for k, v in params.items() if not k.startswith(PREFIX)}


def features(model: nn.Module, params: Mapping[str, torch.Tensor],
             x: torch.Tensor) -> torch.Tensor:
    """Body features ``[N, D]`` of inputs ``x [N, *shape]`` under ``params``.

    Args:
        model: the body, ``forward(x, head=False) -> [N, D]``.
        params: body (and head) parameters, name -> tensor.
        x: inputs ``[N, *shape]``.
    """
    return forward(model, body_params(params), x, head=False)


def logits_of_head(params: Mapping[str, torch.Tensor], head: str,
                   feats: torch.Tensor) -> torch.Tensor:
    """Logits ``[N, C]`` of the head named ``head`` (``heads.<head>.*`` in ``params``) on
    features ``[N, D]``.

    Args:
        params: parameters holding ``heads.<head>.weight`` ``[C, D]`` and ``.bias`` ``[C]``.
        head: the head's name.
        feats: features ``[N, D]``.

    Raises:
        ValueError: no such head in ``params`` (naming the heads there), or features whose
            last dimension, dtype or device is not the head's.
    """
    w, b = head_param_names(head)
    if w not in params or b not in params:
        have = sorted({k[len(PREFIX):].rsplit(".", 1)[0] for k in params if k.startswith(PREFIX)})
        raise ValueError(f"logits_of_head: params has no head {head!r} ({w}, {b}); its heads "
                         f"are {have}")
    weight = params[w]                                                 # [C, D]
    if feats.shape[-1:] != weight.shape[1:] or feats.dtype != weight.dtype \
            or feats.device != weight.device:
        raise ValueError(f"logits_of_head: features {list(feats.shape)} {feats.dtype} on "
                         f"{feats.device} do not fit head {head!r}, {w} {list(weight.shape)} "
                         f"{weight.dtype} on {weight.device}: they must be [N, "
                         f"{weight.shape[1]}] in its dtype and on its device")
    return F.linear(feats, weight, params[b])                          # [N, C]


def check_data(params: Mapping[str, torch.Tensor], experiences: Sequence) -> None:
    """Each experience's inputs on the device of the body's parameters and in their float
    dtype, and its training inputs finite (checked once, before training: a NaN input would
    make every parameter NaN).

    Raises:
        ValueError: naming the experience and the split, for inputs and labels of different
            lengths, inputs whose per-example shape differs from the first experience's,
            inputs or labels on another device, inputs in another dtype than the parameters
            (integer inputs included), or training inputs with NaN or inf.
    """
    ref = next((v for k, v in params.items()
                if not k.startswith(PREFIX) and v.is_floating_point()), None)
    shape = None                       # per-example input shape of the first experience
    for e in experiences:
        for split, (x, y) in (("train", e.train), ("val", e.val), ("test", e.test)):
            if x.dim() == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
                raise ValueError(f"experience {e.name!r} has {split} inputs {list(x.shape)} "
                                 f"and labels {list(y.shape)}: they must have one label per "
                                 f"input")
            if shape is None:
                shape, first = tuple(x.shape[1:]), e.name
            elif tuple(x.shape[1:]) != shape:
                raise ValueError(f"experience {e.name!r} has {split} inputs of shape "
                                 f"[N, {', '.join(map(str, x.shape[1:]))}] but experience "
                                 f"{first!r} has [N, {', '.join(map(str, shape))}]: every "
                                 f"experience needs inputs of the same shape")
            if ref is not None and not x.is_floating_point():
                raise ValueError(f"experience {e.name!r} has {split} inputs of dtype {x.dtype} "
                                 f"but the params are {ref.dtype}; cast the inputs (e.g. "
                                 f"x.float() / 255 for uint8 pixels)")
            for what, t in (("inputs", x), ("labels", y)):
                if ref is not None and t.device != ref.device:
                    raise ValueError(f"experience {e.name!r} has {split} {what} on {t.device} "
                                     f"but the params are on {ref.device}; move one of them")
            if ref is not None and x.is_floating_point() and x.dtype != ref.dtype:
                raise ValueError(f"experience {e.name!r} has {split} inputs of dtype {x.dtype} "
                                 f"but the params are {ref.dtype}; cast one of them")
        x = e.train[0]
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError(f"experience {e.name!r} has non-finite (NaN or inf) training "
                             f"inputs; training on them would make every parameter NaN")


def check_heads(params: Mapping[str, torch.Tensor], experiences: Sequence, feature_dim: int,
                role: str = "head") -> None:
    """Check that each experience's head exists with shape ``[num_outputs, feature_dim]``,
    that its labels fit the head, and that they are among its ``classes`` (which decide the
    outputs a kept head distils, so a label outside them would train an output that no
    distillation protects).

    Raises:
        ValueError: naming the head, its shape and the experience, for a missing head, a
            wrong output or input size, labels that are not int64 ``[N]``, a label outside
            the head's outputs, ``classes`` that are not int outputs of the head, or labels
            outside ``classes`` (naming them).
    """
    heads = sorted({k[len(PREFIX):].rsplit(".", 1)[0] for k in params if k.startswith(PREFIX)})
    for e in experiences:
        w, b = head_param_names(e.head)
        if w not in params or b not in params:
            raise ValueError(f"{role} {e.head!r} of experience {e.name!r} is not in the "
                             f"params; heads present: {heads}")
        want = (e.num_outputs, feature_dim)
        if tuple(params[w].shape) != want or tuple(params[b].shape) != want[:1]:
            raise ValueError(f"{role} {e.head!r} has output size {params[w].shape[0]} "
                             f"({w} {list(params[w].shape)}, {b} {list(params[b].shape)}), but "
                             f"experience {e.name!r} needs [{want[0]}, {want[1]}] "
                             f"({e.num_outputs} outputs on {feature_dim} features)")
        for split, (_, y) in (("train", e.train), ("val", e.val), ("test", e.test)):
            if y.dtype != torch.int64 or y.dim() != 1:
                raise ValueError(f"experience {e.name!r} has {split} labels {y.dtype} "
                                 f"{list(y.shape)}; they must be int64 class indices [N]")
            if y.numel() and not (0 <= int(y.min()) and int(y.max()) < e.num_outputs):
                raise ValueError(f"experience {e.name!r} has {split} labels in "
                                 f"{int(y.min())}..{int(y.max())}, outside the {e.num_outputs} "
                                 f"outputs of {role} {e.head!r}")
        _check_classes(e, role)


def _check_classes(e, role: str) -> None:
    """``e.classes`` int outputs of its head, and every label of ``e`` among them (an
    experience without ``classes`` is not checked)."""
    classes = getattr(e, "classes", None)
    if classes is None:
        return
    try:
        values = None if isinstance(classes, str | bytes) else tuple(classes)
    except TypeError:
        values = None
    bad = [c for c in values or () if isinstance(c, bool)
           or not isinstance(c, numbers.Integral) or not 0 <= int(c) < e.num_outputs]
    if values is None or bad:
        raise ValueError(f"experience {e.name!r} has classes {classes!r}: they must be a "
                         f"sequence of int outputs of {role} {e.head!r}, in "
                         f"0..{e.num_outputs - 1}" + (f" ({bad[:5]} are not)" if bad else ""))
    values = tuple(int(c) for c in values)
    for split, (_, y) in (("train", e.train), ("val", e.val), ("test", e.test)):
        allowed = torch.tensor(values, dtype=torch.int64, device=y.device)
        outside = y[~torch.isin(y, allowed)]
        if outside.numel():
            labels = outside.unique().tolist()
            raise ValueError(f"experience {e.name!r} has {split} labels {labels[:10]}"
                             f"{' ...' if len(labels) > 10 else ''} outside its classes "
                             f"{values}: the classes decide which outputs of head "
                             f"{e.head!r} are distilled when it is kept; add those labels to "
                             f"the classes or drop their examples")
