"""Approach 3b, soft prompts (prompt tuning, Lester et al. 2021) with a new head, through
Hugging Face peft.

``add_soft_prompt`` wraps a ``TextEncoder``'s transformer in ``peft``'s prompt tuning: P
learned vectors are prepended to the token embeddings of every input. Only they and a new
head train (``soft_prompt_finetune`` is ``finetune`` with that partition); the transformer's
own weights never change. The pooled features average the real tokens only: the virtual
tokens act through attention.
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import nn

from metaloop.adapt._fit import Adapted
from metaloop.adapt.finetune import _finetune

INITS = ("sample_vocab", "random", "text")


def is_prompt(name: str) -> bool:
    """True for the soft-prompt parameters (``encoder.prompt_encoder.default.embedding...``)."""
    return ".prompt_encoder." in name


def add_soft_prompt(model: nn.Module, num_virtual_tokens: int = 8, init: str = "sample_vocab",
                    init_text: str = "classify the category of this definition") -> nn.Module:
    """A copy of a ``TextEncoder`` whose transformer reads ``num_virtual_tokens`` learned
    prompt vectors before the text.

    Args:
        model: a ``metaloop.models.TextEncoder`` (not modified).
        num_virtual_tokens: P, the prompt length.
        init: ``"sample_vocab"`` (embeddings of P random vocabulary tokens, drawn from the
            global torch RNG), ``"random"`` (``N(0, 1)``) or ``"text"`` (the embeddings of
            ``init_text``'s tokens, repeated or cut to P).
        init_text: the text whose token embeddings start the prompt (``init="text"``
            only).

    Raises:
        ValueError: a model that is not a transformer ``TextEncoder``, bad options, a model
            that already has a soft prompt or other peft layers (LoRA adapters: add the soft
            prompt first, then ``add_lora``), or a prompt that leaves no room for any text
            in the encoder's token positions (``TextEncoder.max_positions()``).
    """
    from metaloop.models.text import TextEncoder, hub_offline, require_text_extra

    _, peft = require_text_extra()
    if not isinstance(model, TextEncoder):
        raise ValueError(f"soft prompts need a transformer TextEncoder, got "
                         f"{type(model).__name__}")
    if not isinstance(num_virtual_tokens, int) or isinstance(num_virtual_tokens, bool) \
            or num_virtual_tokens <= 0:
        raise ValueError(f"num_virtual_tokens must be a positive int, got {num_virtual_tokens!r}")
    if init not in INITS:
        raise ValueError(f"soft prompt init must be one of {INITS}, got {init!r}")
    if any(is_prompt(n) for n, _ in model.named_parameters()):
        raise ValueError("the model already has a soft prompt")
    from peft.tuners.tuners_utils import BaseTunerLayer

    tuned = [n for n, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    if tuned:
        raise ValueError(f"add_soft_prompt: the model already has peft layers ({tuned[0]}"
                         f"{f' and {len(tuned) - 1} more' if len(tuned) > 1 else ''}: LoRA "
                         f"adapters?), which peft's prompt tuning would wrap a second time; "
                         f"add the soft prompt first, then the adapters "
                         f"(add_lora(add_soft_prompt(model))), or merge them (merge_lora)")
    limit, special = model.max_positions(), model.special_tokens()
    if limit is not None and num_virtual_tokens + special + 1 > limit:
        raise ValueError(f"add_soft_prompt: num_virtual_tokens={num_virtual_tokens} leaves no "
                         f"room for text: the encoder reads at most {limit} token positions, "
                         f"and every text takes at least {special + 1} ({special} special "
                         f"token(s) and one of its own); give num_virtual_tokens <= "
                         f"{limit - special - 1}")
    new = copy.deepcopy(model)
    kw = {}
    if init == "text":
        if new.tokenizer is None:
            raise ValueError("init='text' needs the model's tokenizer")
        kw = {"prompt_tuning_init_text": init_text,
              "tokenizer_name_or_path": new.tokenizer.name_or_path,
              "tokenizer_kwargs": {"local_files_only": True}}          # offline, as load_hf
    # The prompt vectors live in the token-embedding space, which is narrower than the hidden
    # states where embeddings are factorised (ALBERT, ELECTRA: embedding_size < hidden_size);
    # peft would size them by hidden_size, and fails on configs that name it otherwise
    # (DistilBERT's dim and n_heads). Prompt tuning reads only token_dim of these three.
    cfg = new.encoder.config
    kw.update(token_dim=new.encoder.get_input_embeddings().embedding_dim,
              num_layers=getattr(cfg, "num_hidden_layers", None) or 1,
              num_attention_heads=getattr(cfg, "num_attention_heads", None) or 1)
    config = peft.PromptTuningConfig(task_type="FEATURE_EXTRACTION",
                                     num_virtual_tokens=num_virtual_tokens,
                                     prompt_tuning_init="TEXT" if init == "text" else "RANDOM",
                                     **kw)
    with warnings.catch_warnings(), hub_offline():
        # peft 0.21 reads transformers' deprecated ``is_gradient_checkpointing`` (a
        # FutureWarning in transformers 5); nothing to act on here.
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*deprecated",
                                category=FutureWarning)
        new.encoder = peft.get_peft_model(new.encoder, config)
    if init == "sample_vocab":   # done here: peft has its own only since late 2025
        emb = new.encoder.prompt_encoder["default"].embedding
        vocab = new.encoder.word_embeddings.weight                         # [V, H]
        pick = torch.randint(vocab.shape[0], (emb.weight.shape[0],))       # [P]
        with torch.no_grad():
            emb.weight.copy_(vocab[pick])
    for p in new.parameters():       # functional code decides what trains, not requires_grad
        p.requires_grad_(True)
    return new.eval()


def soft_prompt_finetune(model: nn.Module, support_x: torch.Tensor, support_y: torch.Tensor,
                         steps: int = 20, lr: float = 1e-2, head_lr: float = 1e-2,
                         **kw) -> Adapted:
    """Train the soft prompt and a new head on one task (``finetune`` with
    ``adapt=is_prompt``); every other tensor is passed through unchanged.

    Args:
        model: from ``add_soft_prompt``.
        support_x: ``[S, L]`` token ids of one task's support texts.
        support_y: int64 ``[S]`` labels.
        steps: optimiser steps (as ``finetune``).
        lr: rate of the soft prompt.
        head_lr: rate of the new head.
        **kw: ``finetune``'s other keywords (``head_init``, ``warmup``, ``warmup_kw``,
            ``optimizer``, ``head``, ``generator``); not ``adapt``, which is the prompt.

    Raises:
        ValueError: if the model has no soft prompt, or as ``finetune``.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"soft_prompt_finetune: model must be a torch.nn.Module, got "
                         f"{type(model).__name__}")
    if not any(is_prompt(n) for n, _ in model.named_parameters()):
        raise ValueError(f"soft_prompt_finetune: {type(model).__name__} has no soft prompt; "
                         f"call add_soft_prompt first")
    return _finetune("soft_prompt_finetune", model, support_x, support_y, steps, lr, head_lr,
                     adapt=is_prompt, **kw)
