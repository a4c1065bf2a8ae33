"""Named strategies, and learning a stream of experiences one after another.

The strategies ``metaloop forgetting`` compares, as ``finetune`` options for experience t >= 1:

- ``naive``: ``replay_ratio=0``, plain fine-tuning of everything.
- ``replay``: ``replay_ratio`` (0.1) of each batch from the earlier experiences;
  ``"balanced"`` gives each experience seen so far an equal share, ``t / (t + 1)``, as the
  experience replay of van de Ven et al. (2022) weights its losses.
- ``heads``: the earlier heads keep their (distillation) losses, weight ``head_weight``.
- ``replay+heads``: both.
- ``lora``: a fresh low-rank adapter on the body's linear layers, and the heads, train; the
  body's weights stay put, and the adapter is merged into them after the experience
  (the temporary LoRA of ``continual.lora``).
- ``joint``: Avalanche's *cumulative* strategy: batches drawn uniformly from all the data so
  far, that is replay of all earlier data at ratio ``n_earlier / (n_earlier + n_new)``.

Experience 0 is always learned from scratch with plain training, so every strategy starts
from the same model.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn

from metaloop.continual import lora
from metaloop.continual.finetune import evaluate_experiences, finetune
from metaloop.continual.metrics import accuracy_matrix
from metaloop.func.params import Params

STRATEGIES = ("naive", "replay", "heads", "replay+heads", "lora", "joint")


class SequenceResult(NamedTuple):
    """What ``run_sequence`` returns.

    Attributes:
        matrix: the accuracy matrix ``R`` ``[T, T]`` on the test data.
        curve: one dict per evaluation during fine-tuning on experiences 1..T-1:
            ``{"step": global fine-tuning step, "experience": t, "accuracy": {name: acc}}``
            over the experiences seen so far.
        boundaries: the global step at which each experience 1..T-1 started.
        params: the final parameters.
    """

    matrix: torch.Tensor
    curve: list[dict]
    boundaries: list[int]
    params: Params


def strategy_options(strategy: str, t: int, experiences: Sequence, *,
                     replay_ratio: float | str = 0.1, head_weight: float = 1.0) -> dict:
    """``finetune`` keyword arguments of a named strategy on experience ``t``.

    Args:
        strategy: one of ``STRATEGIES``.
        t: index of the experience about to be learned.
        experiences: the stream.
        replay_ratio: the replay strategies' ratio, or ``"balanced"`` for ``t / (t + 1)``.
        head_weight: weight of each kept head.

    Raises:
        ValueError: an unknown strategy or replay ratio.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {list(STRATEGIES)}")
    if t == 0:
        return {"replay_ratio": 0.0}
    earlier, new = experiences[:t], experiences[t]
    heads = {e.head: head_weight for e in earlier}
    if strategy == "joint":
        n_old = sum(e.train[1].numel() for e in earlier)
        return {"replay_ratio": n_old / (n_old + new.train[1].numel()), "buffer_size": None}
    if replay_ratio == "balanced":
        replay_ratio = t / (t + 1)
    elif isinstance(replay_ratio, str):
        raise ValueError(f"replay_ratio must be a number in [0, 1) or 'balanced', got "
                         f"{replay_ratio!r}")
    return {"replay_ratio": replay_ratio if "replay" in strategy else 0.0,
            "keep_heads": heads if "heads" in strategy else False,
            "trainable": "lora" if strategy == "lora" else "all"}


def run_sequence(model: nn.Module, params: Mapping[str, torch.Tensor], experiences: Sequence,
                 strategy: str = "naive", *, pretrained: bool = False,
                 replay_ratio: float | str = 0.1, head_weight: float = 1.0, lora_rank: int = 8,
                 generator: torch.Generator | None = None,
                 progress: Callable[[int], None] | None = None,
                 **finetune_kwargs) -> SequenceResult:
    """Learn the experiences in order with one strategy; measure the accuracy matrix.

    Args:
        model: the body.
        params: starting parameters with a head for every experience.
        experiences: the stream.
        strategy: one of ``STRATEGIES``.
        pretrained: ``params`` have already learned experience 0 (so several strategies can
            share that work); otherwise experience 0 is learned first, with plain training.
        replay_ratio, head_weight: see ``strategy_options``. lora_rank: rank of the ``lora``
            strategy's adapters.
        generator: random source.
        progress: called with the number of optimiser steps just done.
        **finetune_kwargs: passed to every ``finetune`` call (``steps``, ``batch_size``,
            ``lr``, ``eval_every``, ``early_stop``, ``buffer_size``, ``temperature``).

    Returns:
        ``SequenceResult(matrix, curve, boundaries, params)``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {list(STRATEGIES)}")
    if len(experiences) < 2:
        raise ValueError(f"a stream needs at least two experiences, got {len(experiences)}")
    rows, curve, boundaries, offset = [], [], [], 0
    if pretrained:
        rows.append(evaluate_experiences(model, params, experiences))
    for t in range(1 if pretrained else 0, len(experiences)):
        opts = {**finetune_kwargs, **strategy_options(strategy, t, experiences,
                                                      replay_ratio=replay_ratio,
                                                      head_weight=head_weight)}
        use_lora = strategy == "lora" and t > 0
        start = lora.add(model, params, lora_rank, generator) if use_lora else params
        result = finetune(model, start, experiences[t], earlier=experiences[:t],
                          generator=generator, progress=progress, **opts)
        params = lora.merge(result.params) if use_lora else result.params
        rows.append(evaluate_experiences(model, params, experiences))
        if t > 0:
            boundaries.append(offset)
            curve += [{"step": offset + s, "experience": t,
                       "accuracy": {n: a[i] for n, a in result.curve["accuracy"].items()}}
                      for i, s in enumerate(result.curve["step"])]
            offset += result.steps
    matrix = accuracy_matrix(rows, names=[e.name for e in experiences])
    return SequenceResult(matrix, curve, boundaries, params)
