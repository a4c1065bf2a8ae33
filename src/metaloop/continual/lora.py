"""A minimal low-rank adapter (LoRA, Hu et al. 2021) on a body's ``nn.Linear`` layers.

TEMPORARY. This exists only so that ``metaloop forgetting`` can run its ``lora`` strategy
before the adaptation issue's LoRA (built on Hugging Face peft) lands; then this module
should go and the strategy should use that one through ``finetune(trainable=...)``.

The adapter of a weight ``X.weight [out, in]`` is two extra entries in the params dict,
``lora.X.A [r, in]`` (random, as peft initialises it) and ``lora.X.B [out, r]`` (zeros), and
the weight used in the forward pass is ``X.weight + B @ A``, so a new adapter starts as the
identity change. Only ``nn.Linear`` layers are adapted (not convolutions, not the heads).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
from torch import nn

from metaloop.func.params import Params

PREFIX = "lora."


def is_adapter(name: str) -> bool:
    """True for the adapter parameters ``lora.*``."""
    return name.startswith(PREFIX)


def add(model: nn.Module, params: Mapping[str, torch.Tensor], rank: int = 8,
        generator: torch.Generator | None = None) -> Params:
    """``params`` plus a fresh rank-``rank`` adapter on every ``nn.Linear`` of the body.

    Args:
        model: the body; its last linear layer (its own head) is not adapted.
        params: the current parameters (body and ``heads.*``).
        rank: r.
        generator: random source for ``A`` (uniform, bound ``1/sqrt(in)``).

    Returns:
        A new dict; ``params`` is not mutated.

    Raises:
        ValueError: bad rank, an adapter already present, or no ``nn.Linear`` in the body.
    """
    if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
        raise ValueError(f"LoRA rank must be a positive int, got {rank!r}")
    if any(is_adapter(k) for k in params):
        raise ValueError("params already hold LoRA adapters; merge them first (lora.merge)")
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)][:-1]
    targets = [n for n in linears if f"{n}.weight" in params]
    if not targets:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer in its body to adapt "
                         f"(this temporary LoRA covers nn.Linear only)")
    out = dict(params)
    for n in targets:
        d_out, d_in = params[f"{n}.weight"].shape
        bound = 1.0 / math.sqrt(d_in)
        out[f"{PREFIX}{n}.A"] = (torch.rand(rank, d_in, generator=generator) * 2 - 1) * bound
        out[f"{PREFIX}{n}.B"] = torch.zeros(d_out, rank)
    return out


def merge(params: Mapping[str, torch.Tensor]) -> Params:
    """Fold every adapter into its weight (``W + B @ A``) and drop the ``lora.*`` entries.

    Differentiable in both ``W`` and the adapters; without adapters it returns a plain copy
    of the dict.
    """
    out = {k: v for k, v in params.items() if not is_adapter(k)}
    for k in params:
        if is_adapter(k) and k.endswith(".A"):
            layer = k[len(PREFIX):-len(".A")]
            w = f"{layer}.weight"
            out[w] = params[w] + params[f"{PREFIX}{layer}.B"] @ params[k]   # [out, in]
    return out
