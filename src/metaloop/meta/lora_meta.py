"""Meta-learning over LoRA: MAML / first-order MAML / Reptile on the LoRA adapters and head.

"Making a model better at being fine-tuned": the pretrained weights stay fixed; the outer
loop meta-learns the LoRA initialisation (and, with ``head_init="learned"``, the head's),
and the inner loop adapts only the LoRA adapters and the head. Nothing new is needed beyond
a parameter partition: ``trainable_only`` turns every other parameter into a buffer, so the
unchanged ``MAML`` and ``Reptile`` (and ``ml.train``, checkpoints, ``ml.evaluate``) see the
adapters and the head as the model's only parameters.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from metaloop.adapt.heads import head_names
from metaloop.adapt.lora import add_lora, is_lora
from metaloop.func.params import Selector
from metaloop.meta.maml import MAML
from metaloop.meta.reptile import Reptile

METHODS = ("maml", "fomaml", "reptile")


def trainable_only(model: nn.Module, keep: Selector) -> nn.Module:
    """A copy of ``model`` whose parameters outside ``keep`` are buffers (same names).

    Forward is unchanged (modules read buffers and parameters alike), but
    ``named_parameters`` then lists only the kept ones: what the outer optimiser updates and
    checkpoints store.

    Args:
        model: the network; it is deep-copied, not changed.
        keep: which parameters stay parameters: a predicate on the full parameter name
            as ``named_parameters`` gives it (``"...lora_A.default.weight"``) or a
            collection of such names.

    Raises:
        ValueError: if ``keep`` matches no parameter.
    """
    pred = keep if callable(keep) else frozenset(keep).__contains__
    names = [n for n, _ in model.named_parameters()]
    if not any(pred(n) for n in names):
        raise ValueError(f"trainable_only: the selector keeps no parameter; available: "
                         f"{names[:10]}{' ...' if len(names) > 10 else ''}")
    new = copy.deepcopy(model)
    for mod_name, mod in new.named_modules():
        for leaf, p in list(mod._parameters.items()):
            full = f"{mod_name}.{leaf}" if mod_name else leaf
            if p is not None and not pred(full):
                del mod._parameters[leaf]
                mod.register_buffer(leaf, p.detach().requires_grad_(False))
    return new


def scaled_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                         scale: float = 1.0) -> torch.Tensor:
    """Mean cross-entropy of ``scale * logits`` ``[N, C]`` (a temperature of 1 / scale)."""
    return F.cross_entropy(scale * logits, labels)


def lora_learner(model: nn.Module, method: str = "fomaml", r: int = 8, alpha: float = 16.0,
                 target_modules: Sequence[str] | None = None, inner_lr: float = 0.05,
                 inner_steps: int = 3, head_init: str = "zero", logit_scale: float = 30.0,
                 inner_optimizer: str = "sgd"):
    """A meta-learner whose model is ``model`` + LoRA, with only LoRA and the head trainable.

    Args:
        model: the pretrained network (not modified), e.g. a ``TextEncoder``.
        method: ``"maml"`` (second order; a Hugging Face encoder is switched to "eager"
            attention, whose double backward exists), ``"fomaml"`` (first order) or
            ``"reptile"``.
        r: adapter rank (as ``add_lora``).
        alpha: LoRA scale numerator (as ``add_lora``).
        target_modules: the modules given adapters (as ``add_lora``).
        inner_lr: step size of the inner loop on the LoRA adapters and the head.
        inner_steps: steps of that inner loop.
        head_init: ``"zero"`` (a new zero head per task; LoRA alone is meta-learned) or
            ``"learned"`` (the head's start is meta-learned too).
        logit_scale: s, the inner and outer losses are the cross-entropy of s x logits (a
            cosine classifier's temperature 1/s when features are unit vectors). One SGD
            step moves the head's scaled logits by ~ inner_lr s^2 but the adapters only by
            ~ inner_lr^2 s^2, so a small ``inner_lr`` and a large s give the head the big
            step unit features need while LoRA moves gently. Predictions (argmax) do not
            depend on s.
        inner_optimizer: Reptile's inner optimiser, ``"sgd"`` or ``"adam"``.

    Returns:
        A ``MAML`` or ``Reptile`` learner on the partitioned LoRA model.

    Raises:
        ValueError: an unknown method, a ``logit_scale`` that is not a finite number > 0, or
            as ``add_lora``, ``MAML`` and ``Reptile``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(logit_scale, bool) or not isinstance(logit_scale, (int, float)) \
            or not 0 < logit_scale < math.inf:
        raise ValueError(f"logit_scale must be a finite number > 0 (inf would make every "
                         f"loss NaN), got {logit_scale!r}")
    head = head_names(model)
    lora = trainable_only(add_lora(model, r, alpha, target_modules, head=head),
                          lambda n: is_lora(n) or n in head)
    hf: Any = getattr(lora, "encoder", None)
    if method == "maml" and hasattr(hf, "set_attn_implementation"):
        # second order needs double backward, which the CPU flash-attention kernel of
        # scaled_dot_product_attention lacks; plain matmul attention has it
        hf.set_attn_implementation("eager")
    loss = "ce" if logit_scale == 1 else functools.partial(scaled_cross_entropy,
                                                           scale=float(logit_scale))
    if method == "reptile":
        return Reptile(lora, inner_lr, inner_steps, loss=loss, head_init=head_init,
                       inner_optimizer=inner_optimizer, batching="loop")
    return MAML(lora, inner_lr, inner_steps, first_order=method == "fomaml", loss=loss,
                head_init=head_init, batching="loop")
