"""Approach 2, fine-tuning with a new head: zero (default) or random, optionally warmed up
on frozen features first (LP-FT, Kumar et al. 2022). With ``adapt`` it trains any subset:
LoRA and soft prompts (approach 3) are this function with a parameter partition."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from metaloop.adapt._fit import (
    Adapted,
    check_generator_arg,
    check_lr,
    check_steps,
    check_support,
    fit,
    numel,
    select,
)
from metaloop.adapt.heads import HEAD_INITS, init_head, new_head_names, warm_head
from metaloop.func.params import Selector, detach, params_of


def finetune(model: nn.Module, support_x: torch.Tensor, support_y: torch.Tensor,
             steps: int = 20, lr: float = 1e-4, head_lr: float = 1e-2, head_init: str = "zero",
             warmup: str | None = None, warmup_kw: dict | None = None,
             adapt: Selector | None = None, optimizer: str = "adam",
             head: Sequence[str] | None = None,
             generator: torch.Generator | None = None) -> Adapted:
    """Train a new head and the chosen parameters on one task's support set.

    Phases: (1) the head: ``head_init`` (``"zero"``: logits exactly 0 at the start;
    ``"random"``: ``nn.Linear``'s init), or with ``warmup`` a head fitted on the frozen
    features (``warm_head``, solver ``"logistic"``, ``"ridge"`` or ``"sgd"``; the body stays
    bit-identical in this phase); (2) ``steps`` optimiser steps on the head (rate
    ``head_lr``) and the ``adapt`` parameters (rate ``lr``) together. Nothing is mutated.

    Both phases run the model in eval mode (no dropout, torch BatchNorm normalising with
    its running statistics and never updating them), whatever its own mode, which is then
    restored: the model's tensors and buffers never change, and a call is reproducible.
    The one exception is the dropout of LoRA adapters (``add_lora(dropout=p)``), which
    drops while phase 2 trains; its masks come from ``generator`` where one is given.

    Args:
        model: the pretrained network (``forward(x, head=False)`` for warm-up).
        support_x: ``[S, ...]`` one task's support inputs.
        support_y: int64 ``[S]`` labels.
        steps: optimiser steps of phase 2 (0 only with ``warmup``).
        lr: rate of the adapted body parameters.
        head_lr: rate of the head (a new head needs a larger rate than the pretrained body).
        head_init: ``"zero"`` or ``"random"`` (with ``warmup``, leave it at ``"zero"``).
        warmup: None, or the head solver of LP-FT's first phase (``"logistic"``,
            ``"ridge"`` or ``"sgd"``).
        warmup_kw: the options of that solver (``lam``, ``steps``, ``lr``; only with
            ``warmup``).
        adapt: predicate or names of the body parameters to train (default all: full
            fine-tuning); the head is always trained.
        optimizer: ``"adam"`` or ``"sgd"``.
        head: head names (default the ``head`` ``nn.Linear``, else the last).
        generator: random source of a random head and of the masks of LoRA dropout, where
            they are drawn (one generator may be given to every approach: where nothing
            random is drawn, it is not used).

    Returns:
        ``Adapted``; ``trainable`` counts the head and the adapted parameters.

    Raises:
        ValueError: an empty support set, bad steps or rates (zero, negative, inf), inputs
            with NaN or inf, or on another device / in another dtype than ``model``,
            ``adapt`` matching nothing, or a head tied to another layer (``new_head_names``);
            an option that would change nothing: ``warmup_kw`` without ``warmup``,
            ``head_init="random"`` with ``warmup``; ``steps=0`` without ``warmup`` (the
            head would stay untrained; with ``warmup`` it is the warm-up phase alone).
        TypeError: a ``generator`` that is not a ``torch.Generator`` or None.
    """
    return _finetune("finetune", model, support_x, support_y, steps, lr, head_lr, head_init,
                     warmup, warmup_kw, adapt, optimizer, head, generator)


def lpft(model: nn.Module, support_x: torch.Tensor, support_y: torch.Tensor,
         steps: int = 20, lr: float = 1e-4, head_lr: float = 1e-2, head_init: str = "zero",
         warmup: str | None = "logistic", warmup_kw: dict | None = None,
         adapt: Selector | None = None, optimizer: str = "adam",
         head: Sequence[str] | None = None,
         generator: torch.Generator | None = None) -> Adapted:
    """LP-FT (Kumar et al. 2022): ``finetune`` whose head is first fitted on frozen features
    (``warmup="logistic"``: multinomial logistic regression), then everything is trained
    together. Same errors (led by ``lpft:``) and return value as ``finetune``.

    Args:
        model: the pretrained network (``forward(x, head=False)`` for the warm-up).
        support_x: ``[S, ...]`` one task's support inputs.
        support_y: int64 ``[S]`` labels.
        steps: optimiser steps of the second phase.
        lr: rate of the adapted body parameters.
        head_lr: rate of the head.
        head_init: ``"zero"`` (leave it so with a warm-up) or ``"random"``.
        warmup: the head solver of the first phase: ``"logistic"`` (default), ``"ridge"``
            or ``"sgd"``.
        warmup_kw: the options of that solver (``lam``, ``steps``, ``lr``).
        adapt: predicate or names of the body parameters to train (default all).
        optimizer: ``"adam"`` or ``"sgd"``.
        head: head names (default the ``head`` ``nn.Linear``, else the last).
        generator: random source of a random head and of LoRA dropout's masks.
    """
    return _finetune("lpft", model, support_x, support_y, steps, lr, head_lr, head_init,
                     warmup, warmup_kw, adapt, optimizer, head, generator)


def _finetune(who: str, model: nn.Module, support_x: torch.Tensor, support_y: torch.Tensor,
              steps: int = 20, lr: float = 1e-4, head_lr: float = 1e-2,
              head_init: str = "zero", warmup: str | None = None,
              warmup_kw: dict | None = None, adapt: Selector | None = None,
              optimizer: str = "adam", head: Sequence[str] | None = None,
              generator: torch.Generator | None = None) -> Adapted:
    """``finetune``, its errors led by ``who`` (the public function called: ``finetune``,
    ``lpft``, ``lora_finetune``, ``soft_prompt_finetune``)."""
    n_classes = check_support(who, support_x, support_y, model)
    check_steps(who, steps=steps)
    check_lr(who, lr=lr, head_lr=head_lr)
    check_generator_arg(who, generator)
    _check_unused_options(who, head_init, warmup, warmup_kw, steps)
    names = new_head_names(model, head)
    params = detach(params_of(model))
    if warmup is not None:
        params = warm_head(model, params, support_x, support_y, names, warmup,
                           who=who, **(warmup_kw or {}))
    else:
        params = init_head(params, names, n_classes, head_init, generator)
    body = [n for n in select(params, adapt) if n not in names]
    params = fit(model, params, [(lr, body), (head_lr, list(names))], support_x, support_y,
                 steps, generator=generator, optimizer=optimizer)
    info = {"head_init": "warmup:" + warmup if warmup else head_init, "steps": steps}
    return Adapted(model, params, numel(params, [*body, *names]), (*body, *names), info)


def _check_unused_options(who: str, head_init: object, warmup: object,
                          warmup_kw: object, steps: int) -> None:
    """An option that changes nothing is an error (as ``fit_head``'s): the caller expects
    it to change the result, and it would not."""
    if head_init not in HEAD_INITS:
        raise ValueError(f"{who}: head init must be one of {HEAD_INITS}, got {head_init!r}")
    if warmup is None and warmup_kw:
        raise ValueError(f"{who}: warmup_kw={warmup_kw!r} is given without warmup, which "
                         f"would ignore it; give warmup= (its solver) too, or leave warmup_kw "
                         f"out")
    if warmup is None and steps == 0:
        raise ValueError(f"{who}: steps=0 without warmup trains nothing: the new head stays "
                         f"as head_init={head_init!r} made it (zero: uniform logits; random: "
                         f"random ones); give steps >= 1, or warmup= (e.g. \"logistic\") for "
                         f"a head fitted on the features alone")
    if warmup is not None and head_init != "zero":
        raise ValueError(f"{who}: head_init={head_init!r} is given with warmup={warmup!r}, "
                         f"whose head is fitted on the features instead; leave head_init out")
