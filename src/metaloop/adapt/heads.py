"""A new head for a task: zero, random, or fitted on frozen features (the warm-up of LP-FT).

The head is the model's ``head`` ``nn.Linear``, else its last one (``weight [C, D]``,
``bias [C]``); a new head is sized to the task's C classes. Models give their features
with ``forward(x, head=False)``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from metaloop._random import draw_device
from metaloop.adapt._checks import check_lam
from metaloop.adapt._fit import check_generator_arg, check_lr, check_support, fit_path
from metaloop.adapt.newton_head import newton_head
from metaloop.adapt.ridge_head import ridge_head
from metaloop.func.params import Params, eval_mode, forward, last_linear_names, tied_names

HEAD_INITS = ("zero", "random")
SOLVERS = ("logistic", "ridge", "sgd")


def head_names(model: nn.Module, head: Sequence[str] | None = None) -> tuple[str, str]:
    """``(weight name, bias name)`` of the head (default: the ``head`` ``nn.Linear``,
    else the last one).

    Raises:
        ValueError: a single string for ``head`` (not a pair of names), or a head that is
            not one 2-D weight and one 1-D bias of the model.
    """
    if isinstance(head, str):
        raise ValueError(f"head must be the (weight name, bias name) pair of the head, got "
                         f"the single string {head!r} (write [{head + '.weight'!r}, "
                         f"{head + '.bias'!r}])")
    names = list(head) if head is not None else last_linear_names(model)
    params = dict(model.named_parameters())
    if len(names) != 2 or any(n not in params for n in names):
        raise ValueError(f"the head must be a weight and a bias of the model, got {names}")
    w, b = sorted(names, key=lambda n: params[n].dim(), reverse=True)
    if params[w].dim() != 2 or params[b].dim() != 1:
        raise ValueError(f"head {names}: need weight [C, D] and bias [C], got "
                         f"{list(params[w].shape)} and {list(params[b].shape)}")
    return w, b


def new_head_names(model: nn.Module, head: Sequence[str] | None = None) -> tuple[str, str]:
    """``head_names`` of a head that is to be replaced (a new head of the task's classes,
    or one fitted on features), which must be the head's alone.

    Raises:
        ValueError: as ``head_names``, or a head weight or bias that another layer also uses
            (tied weights, ``out.weight = embed.weight``): the new ``[C, D]`` head would
            replace that layer's tensor too.
    """
    w, b = head_names(model, head)
    for n, others in list(tied_names(model, (w, b)).items())[:1]:
        raise ValueError(f"the head tensor {n} is also the model's {', '.join(others)} "
                         f"(tied weights): a new head of the task's classes would replace "
                         f"that layer's too; "
                         f"untie the head (give it its own nn.Parameter) or give head= "
                         f"another layer")
    return w, b


def init_head(params: Mapping[str, torch.Tensor], head: tuple[str, str], n_classes: int,
              init: str = "zero", generator: torch.Generator | None = None) -> Params:
    """params with a new ``[C, D]`` / ``[C]`` head: all zeros, or ``nn.Linear``'s default
    init (uniform in +-1/sqrt(D)).

    A zero head gives logits exactly 0 (a uniform prediction) and no gradient to the body on
    the first step; a random one starts from random logits (Kumar et al. 2022 discuss how
    that distorts the pretrained features).

    Args:
        params: name -> tensor, holding the old head.
        head: ``(weight name, bias name)``, e.g. from ``head_names``; the weight
            ``[C_old, D]``.
        n_classes: C, an int >= 1.
        init: ``"zero"`` or ``"random"``.
        generator: the random source of ``"random"``.

    Returns:
        ``params`` with ``weight [C, D]`` and ``bias [C]`` replaced (the rest as they are).

    Raises:
        ValueError: an unknown ``init``; ``n_classes`` not an int >= 1; ``head`` not two
            names of ``params``, or its weight not 2-D.
        TypeError: a ``generator`` that is not a ``torch.Generator`` or None.
    """
    check_generator_arg("init_head", generator)
    if init not in HEAD_INITS:
        raise ValueError(f"head init must be one of {HEAD_INITS}, got {init!r}")
    if not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 1:
        raise ValueError(f"init_head: n_classes must be an int >= 1, got {n_classes!r}")
    if isinstance(head, str) or len(head) != 2:
        raise ValueError(f"init_head: head must be (weight name, bias name), got {head!r}")
    w, b = head
    unknown = [n for n in (w, b) if n not in params]
    if unknown:
        raise ValueError(f"init_head: head names {unknown} are not in params; available: "
                         f"{sorted(params)[:8]} (head_names(model) gives the model's head)")
    if params[w].dim() != 2:
        raise ValueError(f"init_head: the head weight {w!r} must be [C, D], got "
                         f"{list(params[w].shape)}; pass (weight name, bias name) in that order")
    d, ref = params[w].shape[1], params[w]
    if init == "zero":
        weight = ref.new_zeros(n_classes, d)                                    # [C, D]
        bias = ref.new_zeros(n_classes)                                         # [C]
    else:
        bound = 1.0 / math.sqrt(d)
        at = draw_device(generator)
        weight = torch.rand(n_classes, d, generator=generator, device=at).cpu()  # [C, D]
        bias = torch.rand(n_classes, generator=generator, device=at).cpu()       # [C]
        weight, bias = (weight * 2 - 1) * bound, (bias * 2 - 1) * bound
        weight, bias = weight.to(ref), bias.to(ref)
    return {**params, w: weight, b: bias}


def fit_head(features: torch.Tensor, labels: torch.Tensor, n_classes: int,
             solver: str = "logistic", lam: float = 1.0, steps: int | None = None,
             lr: float = 0.1, *, who: str = "fit_head") -> tuple[torch.Tensor, torch.Tensor]:
    """Fit a linear classifier on fixed features.

    Args:
        features: ``[N, D]`` float32/float64.
        labels: int64 ``[N]`` in ``[0, n_classes)``.
        n_classes: C, the number of classes (columns of the head).
        solver: ``"logistic"``: multinomial logistic regression by ``steps`` Newton steps
            (``newton_head``, a constant feature for the bias, ridge ``lam``; default 10
            steps), or, where the Newton system would have more than ``NEWTON_MAX``
            unknowns (``min(N, D + 1) * C``: its matrix has their square of entries, 6.4 GB
            for a 200-way 1-shot task of 384 features), the same objective minimised to
            convergence by L-BFGS in float64 (``steps`` then bounds nothing); ``"ridge"``:
            closed-form ridge regression on one-hot targets (``ridge_head`` with an
            unpenalised intercept, ridge ``lam``); ``"sgd"``: Adam on the unpenalised
            cross-entropy from a zero head, ``steps`` steps (default 100) at rate ``lr``.
        lam: ridge strength > 0 (``"logistic"``, ``"ridge"``).
        steps: None (the solver's default) or an int >= 1 (``"logistic"``, ``"sgd"``).
        lr: Adam's learning rate, finite and > 0 (``"sgd"``).
        who: the public function the caller called, which leads every error message
            (``linear_probe``, ``finetune``: those that fit a head through ``warm_head``).

    An option the chosen solver does not use must be left at its default (``lam=1.0``,
    ``steps=None``, ``lr=0.1``): any other value is refused rather than ignored.

    Features of a 16-bit float dtype (float16, bfloat16) are solved in float32, and the
    head returned in their dtype.

    Returns:
        ``(weight [C, D], bias [C])``, in the dtype of ``features``.

    Raises:
        ValueError: an unknown solver; features that are not a finite float ``[N, D]``;
            labels that are not int64 ``[N]`` in ``[0, n_classes)`` on the features' device;
            ``n_classes < 2`` (a support set of one class); bad ``lam``, ``steps`` (0
            included: an iterative solver takes at least one step) or ``lr``; a non-default
            option the solver does not use. Each message is led by ``who``.
    """
    if solver not in SOLVERS:
        raise ValueError(f"{who}: head solver must be one of {SOLVERS}, got {solver!r}")
    if not isinstance(features, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise ValueError(f"{who}: features and labels must be tensors, got "
                         f"{type(features).__name__} and {type(labels).__name__}")
    if features.dim() != 2 or labels.dim() != 1 or features.shape[0] != labels.shape[0]:
        raise ValueError(f"{who}: need features [N, D] and labels [N], got "
                         f"{list(features.shape)} and {list(labels.shape)}")
    _check_unused_options(who, solver, lam, steps, lr)
    if steps is not None and (not isinstance(steps, int) or isinstance(steps, bool)
                              or steps < 1):
        raise ValueError(f"{who}: steps must be None (the default, "
                         f"{_DEFAULT_STEPS[solver]}) or an int >= 1 for solver={solver!r}, "
                         f"got {steps!r}")
    _check_head_labels(who, features, labels, n_classes)
    if "lam" in _USES[solver]:
        check_lam(who, lam, features)     # named here, not by the solver fit_head calls
    features = features.detach()
    if features.dtype not in (torch.float32, torch.float64):
        weight, bias = fit_head(features.float(), labels, n_classes, solver, lam, steps, lr,
                                who=who)
        return weight.to(features.dtype), bias.to(features.dtype)
    if solver == "ridge":
        y = F.one_hot(labels, n_classes).to(features.dtype)                    # [N, C]
        W, b = ridge_head(features[None], y[None], lam, intercept=True)        # [1, D, C], [1, C]
        return W[0].mT.contiguous(), b[0]
    steps = _DEFAULT_STEPS[solver] if steps is None else steps
    if solver == "logistic":
        ones = features.new_ones(features.shape[0], 1)
        phi = torch.cat([features, ones], 1)                                   # [N, D+1]
        if min(phi.shape) * n_classes > NEWTON_MAX:
            W = _lbfgs_logistic(phi, labels, n_classes, check_lam(who, lam, phi))
        else:
            W = newton_head(phi[None], labels[None], n_classes, lam, steps)[0]  # [D+1, C]
        return W[:-1].mT.contiguous(), W[-1].contiguous()
    check_lr(who, lr=lr)
    start = {"weight": features.new_zeros(n_classes, features.shape[1]),
             "bias": features.new_zeros(n_classes)}
    *_, last = fit_path(lambda p, f: F.linear(f, p["weight"], p["bias"]), start,
                        [(lr, ["weight", "bias"])], features, labels, steps)
    return last["weight"], last["bias"]


# The most unknowns ``min(N, D + 1) * C`` of the Newton system that ``fit_head`` solves for
# a logistic head: 2,048 (a 16 MiB matrix) holds every 5-way task and 20-way tasks of up to
# 5 shots. Beyond, each Newton step is a dense solve of cubic cost (60-way 1-shot tasks of
# MiniLM's 384 features: 4.8 s a task, against 0.05 s by L-BFGS, to the same objective to
# 1e-12), and 200-way tasks asked for 6.4 GB.
NEWTON_MAX = 2048


def _lbfgs_logistic(phi: torch.Tensor, labels: torch.Tensor, n_classes: int,
                    lam: float | torch.Tensor) -> torch.Tensor:
    """``argmin_W sum_i CE(W^T phi_i, y_i) + lam / 2 ||W||_F^2`` (``newton_head``'s
    objective) by L-BFGS with a strong-Wolfe line search, in float64, from W = 0; phi
    ``[N, D']``, labels ``[N]`` -> W ``[D', C]`` in phi's dtype. The objective is smooth and
    strictly convex, so the minimum is unique; it stops once no gradient entry exceeds
    1e-9, or after 1,000 iterations. It computes gradients of its own under ``no_grad`` and
    ``inference_mode`` too; W is a constant (no gradient reaches phi or a tensor ``lam``)."""
    with torch.inference_mode(False), torch.enable_grad():
        # copies: ``.double()`` of float64 features is the tensor itself, and an inference
        # tensor (made under inference_mode) cannot be saved for the backward pass
        x, y = phi.detach().double().clone(), labels.clone()                  # [N, D'], [N]
        lam = lam.detach().double().clone() if isinstance(lam, torch.Tensor) else lam
        W = x.new_zeros(x.shape[1], n_classes, requires_grad=True)            # [D', C]
        opt = torch.optim.LBFGS([W], lr=1.0, max_iter=1000, history_size=20,
                                tolerance_grad=1e-9, tolerance_change=0.0,
                                line_search_fn="strong_wolfe")

        def objective() -> torch.Tensor:
            opt.zero_grad()
            loss = F.cross_entropy(x @ W, y, reduction="sum") + lam / 2 * W.square().sum()
            loss.backward()
            return loss

        opt.step(objective)
        return W.detach().to(phi.dtype)


_DEFAULT_STEPS = {"logistic": 10, "sgd": 100}
_USES = {"logistic": ("lam", "steps"), "ridge": ("lam",), "sgd": ("steps", "lr")}
_DEFAULTS = {"lam": 1.0, "steps": None, "lr": 0.1}


def check_solver_options(who: str, solver_kw: Mapping[str, object]) -> None:
    """A ValueError, led by ``who`` (the function called), for a key of ``solver_kw`` that
    is none of ``fit_head``'s solver options (Python's TypeError would name ``fit_head``)."""
    unknown = sorted(set(solver_kw) - set(_DEFAULTS))
    if unknown:
        raise ValueError(f"{who}: unknown head solver option(s) {unknown}; the options are "
                         f"{', '.join(_DEFAULTS)} (see fit_head)")


def _is_default(value: object, option: str) -> bool:
    default = _DEFAULTS[option]
    if default is None or value is None:
        return value is default
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == default


def _check_unused_options(who: str, solver: str, lam: object, steps: object,
                          lr: object) -> None:
    """An option ``solver`` does not use, set to other than its default, is an error: the
    caller expects it to change the result, and it would not."""
    given = {"lam": lam, "steps": steps, "lr": lr}
    unused = [k for k in given if k not in _USES[solver] and not _is_default(given[k], k)]
    if unused:
        what = {"ridge": "closed-form", "logistic": "solved by Newton steps",
                "sgd": "unpenalised"}[solver]
        raise ValueError(f"{who}: solver={solver!r} ({what}) does not use "
                         f"{', '.join(f'{k}={given[k]!r}' for k in unused)}; it takes "
                         f"{' and '.join(_USES[solver])} (leave the others at their defaults)")


def _check_head_labels(who: str, features: torch.Tensor, labels: torch.Tensor,
                       n_classes: object) -> None:
    """What every solver of ``fit_head`` needs (``newton_head`` checks the rest itself)."""
    if not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 2:
        raise ValueError(f"{who}: n_classes must be an int >= 2, got {n_classes!r}")
    if not features.is_floating_point():
        raise ValueError(f"{who}: features must be float [N, D], got {features.dtype}")
    if labels.dtype != torch.int64:
        raise ValueError(f"{who}: labels must be int64 class indices [N], got "
                         f"{labels.dtype}")
    if labels.device != features.device:
        raise ValueError(f"{who}: labels on {labels.device} but features on "
                         f"{features.device}")
    if labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= n_classes:
            raise ValueError(f"{who}: labels must lie in [0, n_classes={n_classes}), "
                             f"found {lo if lo < 0 else hi}")
    if not bool(torch.isfinite(features).all()):
        raise ValueError(f"{who}: features {list(features.shape)} have non-finite values "
                         f"(NaN or inf); the head would be NaN")


def warm_head(model: nn.Module, params: Mapping[str, torch.Tensor], support_x: torch.Tensor,
              support_y: torch.Tensor, head: Sequence[str] | None = None,
              solver: str = "logistic", *, who: str = "warm_head", **solver_kw) -> Params:
    """params with the head fitted on the frozen features of the support set (LP-FT's first
    phase). Every other tensor is passed through as is: the body stays bit-identical. The
    features are computed without gradients in eval mode (``eval_mode``: no dropout, torch
    BatchNorm normalising with its running statistics and never updating them), whatever
    the model's own mode, which is then restored.

    Args:
        model: with ``forward(x, head=False)`` giving features ``[S, D]``.
        params: the starting parameters.
        support_x: ``[S, ...]`` one task's support inputs.
        support_y: int64 ``[S]`` labels.
        head: head parameter names (default the ``head`` ``nn.Linear``, else the last).
        solver: as ``fit_head``: ``"logistic"``, ``"ridge"`` or ``"sgd"``.
        solver_kw: the solver's options, as ``fit_head`` takes them (``lam``, ``steps``,
            ``lr``).
        who: the public function the caller called, which leads every error message.

    Raises:
        ValueError: as ``check_support``, ``new_head_names`` (a head tied to another
            layer) and ``fit_head``; a ``solver_kw`` that is none of ``fit_head``'s options.
    """
    check_solver_options(who, solver_kw)
    n_classes = check_support(who, support_x, support_y, model)
    w, b = new_head_names(model, head)
    with torch.no_grad(), eval_mode(model):
        feats = forward(model, params, support_x, head=False)                  # [S, D]
    weight, bias = fit_head(feats, support_y, n_classes, solver, **solver_kw, who=who)
    return {**params, w: weight, b: bias}
