"""Approach 3a, LoRA (Hu et al. 2021) with a new head, through Hugging Face peft.

``add_lora`` returns a copy of the model whose chosen Linear / Conv layers carry low-rank
adapters (``W x + (alpha / r) B A x``, B = 0 at the start, so the output is unchanged).
Adaptation then trains only the ``lora_`` parameters and a new head: ``lora_finetune`` is
``finetune`` with that partition. ``merge_lora`` folds the adapters into the weights and
returns a plain model without peft layers.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from metaloop.adapt._fit import Adapted
from metaloop.adapt.finetune import _finetune
from metaloop.adapt.heads import head_names

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def is_lora(name: str) -> bool:
    """True for LoRA adapter parameters (``...lora_A.default.weight``, ``lora_B``...)."""
    return ".lora_" in name


def adaptable_layers(model: nn.Module, exclude: Sequence[str] = ()) -> list[str]:
    """Names of the Linear and Conv layers LoRA can target (Hugging Face ``Conv1D`` too),
    minus the modules in ``exclude``."""
    out = []
    for name, mod in model.named_modules():
        ok = isinstance(mod, _LAYERS) or type(mod).__name__ == "Conv1D"
        if ok and name and name not in exclude and ".lora_" not in f".{name}":
            out.append(name)
    return out


def _resolve_targets(model: nn.Module, targets: Sequence[str] | None, head: str) -> list[str]:
    """Full module names selected by ``targets`` (exact names or name suffixes)."""
    available = adaptable_layers(model, exclude=(head,))
    if not available:
        raise ValueError(f"{type(model).__name__} has no Linear or Conv layer for LoRA "
                         f"(besides the head {head!r})")
    if targets is None:
        return available
    if isinstance(targets, str):
        targets = [targets]
    chosen, unmatched = [], []
    for t in targets:
        hits = [n for n in available if n == t or n.endswith("." + t)]
        unmatched += [] if hits else [t]
        chosen += [n for n in hits if n not in chosen]
    if unmatched:
        raise ValueError(f"LoRA target modules {unmatched} match no Linear or Conv layer of "
                         f"{type(model).__name__}; available: {available}")
    return chosen


def _head_module(model: nn.Module, head: tuple[str, str]) -> str:
    """The name of the module that holds the head's weight and bias itself: the output
    layer, also where its weight is tied to an earlier layer's (``embed.weight``, the name
    ``named_parameters()`` gives it); else the weight name's module."""
    params = dict(model.named_parameters())
    want = {id(params[n]) for n in head}
    for name, mod in model.named_modules():
        if want <= {id(p) for p in mod.parameters(recurse=False)}:
            return name
    return head[0].rpartition(".")[0]


def add_lora(model: nn.Module, r: int = 8, alpha: float = 16.0,
             target_modules: Sequence[str] | None = None, dropout: float = 0.0,
             head: Sequence[str] | None = None) -> nn.Module:
    """A copy of ``model`` with LoRA adapters (``peft.LoraConfig``) on the chosen layers.

    Args:
        model: any network; it is not modified.
        r: adapter rank.
        alpha: LoRA scale numerator (the update is ``alpha / r * B A``).
        target_modules: module names or name suffixes (``["query", "value"]``, ``["conv"]``);
            default: every Linear and Conv layer except the head.
        dropout: LoRA dropout: the probability of dropping each input of the adapters
            while ``lora_finetune`` (``finetune``) trains them; those dropout layers are
            then the only modules in train mode, and their masks come from ``finetune``'s
            ``generator`` where one is given (else torch's global random state). Predicting
            with the adapted model (``Adapted``, ``merge_lora``) never drops.
        head: head parameter names, never given adapters (default the ``head``
            ``nn.Linear``, else the last one).

    Returns:
        The new model. Its adapter parameters are named ``<layer>.lora_A.default.weight`` and
        ``<layer>.lora_B.default.weight``; the base weights become ``<layer>.base_layer.*``.
        ``lora_A`` is initialised by peft from torch's global generator (``lora_B`` is zero,
        so the copy computes what ``model`` does): call ``torch.manual_seed`` first for the
        same adapters on every run.

    Raises:
        ValueError: non-positive ``r``, an ``alpha`` that is not a finite number > 0, a
            ``dropout`` outside [0, 1), a model that already has LoRA adapters, or target
            modules that match no Linear / Conv layer (the message lists the available
            names).
        ModuleNotFoundError: peft is not installed (``pip install -e '.[text]'``).
    """
    from metaloop.models.text import require_text_extra

    _, peft = require_text_extra()
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise ValueError(f"LoRA rank r must be a positive int, got {r!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) \
            or not 0 < alpha < float("inf"):
        raise ValueError(f"LoRA alpha must be a finite number > 0 (the update is alpha / r * "
                         f"B A; 0 would switch the adapters off), got {alpha!r}")
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
            or not 0 <= dropout < 1:
        raise ValueError(f"LoRA dropout must be a probability in [0, 1), got {dropout!r}")
    if any(is_lora(n) for n, _ in (*model.named_parameters(), *model.named_buffers())):
        raise ValueError(f"{type(model).__name__} already has LoRA adapters; add_lora takes the "
                         f"pretrained model (merge_lora gives a plain one)")
    head_module = _head_module(model, head_names(model, head))
    targets = _resolve_targets(model, target_modules, head_module)
    new = copy.deepcopy(model)
    # Hugging Face's Conv1D (GPT-2) stores its weight transposed: peft's fan_in_fan_out
    conv1d = [type(new.get_submodule(t)).__name__ == "Conv1D" for t in targets]
    config = peft.LoraConfig(r=r, lora_alpha=alpha, target_modules=targets,
                             lora_dropout=dropout, bias="none", fan_in_fan_out=all(conv1d))
    with warnings.catch_warnings():
        # with both kinds among the targets, peft corrects the flag per layer, and says so
        warnings.filterwarnings("ignore", message="fan_in_fan_out is set to",
                                category=UserWarning)
        new = peft.inject_adapter_in_model(config, new)
    for p in new.parameters():       # functional code decides what trains, not requires_grad
        p.requires_grad_(True)
    return new.eval()


def lora_finetune(model: nn.Module, support_x: torch.Tensor, support_y: torch.Tensor,
                  steps: int = 20, lr: float = 1e-3, head_lr: float = 1e-2, **kw) -> Adapted:
    """Train the LoRA adapters and a new head on one task (``finetune`` with ``adapt=is_lora``).

    Args:
        model: a model from ``add_lora`` (or one meta-learned over LoRA).
        support_x: ``[S, ...]`` one task's support inputs.
        support_y: int64 ``[S]`` labels.
        steps: optimiser steps (as ``finetune``).
        lr: rate of the LoRA adapters.
        head_lr: rate of the new head.
        **kw: ``finetune``'s other keywords (``head_init``, ``warmup``, ``warmup_kw``,
            ``optimizer``, ``head``, ``generator``: also the source of LoRA dropout's
            masks); not ``adapt``, which is the LoRA parameters.

    Raises:
        ValueError: if the model has no LoRA parameters, or as ``finetune``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"lora_finetune: model must be a torch.nn.Module, got "
                         f"{type(model).__name__}")
    if not any(is_lora(n) for n, _ in model.named_parameters()):
        raise ValueError(f"lora_finetune: {type(model).__name__} has no LoRA parameters; call "
                         f"add_lora first")
    return _finetune("lora_finetune", model, support_x, support_y, steps, lr, head_lr,
                     adapt=is_lora, **kw)


def _assign(model: nn.Module, params: Mapping[str, torch.Tensor]) -> None:
    """Put ``params`` into ``model``'s own parameters / buffers (resizing a new head)."""
    own = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    unknown = sorted(set(params) - set(own))
    if unknown:
        raise ValueError(f"parameters {unknown[:5]} are not in {type(model).__name__}")
    for name, t in params.items():
        if t.shape == own[name].shape and t.data_ptr() == own[name].data_ptr():
            continue
        mod_name, _, leaf = name.rpartition(".")
        mod = model.get_submodule(mod_name)
        if leaf in mod._parameters:
            setattr(mod, leaf, nn.Parameter(t.detach().clone()))
        else:
            mod._buffers[leaf] = t.detach().clone()
        if isinstance(mod, nn.Linear):
            mod.out_features, mod.in_features = mod.weight.shape


def merge_lora(model: nn.Module, params: Mapping[str, torch.Tensor] | None = None
               ) -> nn.Module:
    """A plain model (no peft layers) computing what ``model`` with ``params`` computes.

    Args:
        model: a model from ``add_lora`` (not modified).
        params: adapted parameters (``Adapted.params``, with a new head); default the model's.

    Returns:
        A copy with each adapted layer replaced by its base layer, ``W + alpha/r B A`` folded
        into the weight, and the head resized to the adapted one.

    Raises:
        ValueError: ``model`` has no LoRA layers to merge.
    """
    from metaloop.models.text import require_text_extra

    require_text_extra()
    from peft.tuners.tuners_utils import BaseTunerLayer

    new = copy.deepcopy(model)
    if params is not None:
        _assign(new, params)
    layers = [(n, m) for n, m in new.named_modules()
              if isinstance(m, BaseTunerLayer)]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no LoRA layers to merge")
    for name, layer in layers:
        parent_name, _, child = name.rpartition(".")
        layer.merge(safe_merge=True)
        setattr(new.get_submodule(parent_name), child, layer.get_base_layer())
    if "peft_config" in new.__dict__:    # peft's record of the adapters, gone with them
        del new.peft_config
    return new.eval()
