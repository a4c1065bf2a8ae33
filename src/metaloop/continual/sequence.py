"""Named strategies, and learning a stream of experiences one after another.

The strategies ``metaloop forgetting`` compares, as ``finetune_experience`` options for
experience t >= 1:

- ``naive``: ``replay_ratio=0``, plain fine-tuning of everything.
- ``replay``: ``replay_ratio`` (0.1) of each batch from the earlier experiences;
  ``"balanced"`` is ``t / (t + 1)``, so the new experience gets ``1 / (t + 1)``, as the
  experience replay of van de Ven et al. (2022) weights its losses. The earlier share is
  drawn from their pooled data: each earlier experience gets ``1 / (t + 1)`` only when they
  are the same size (Fashion-MNIST), otherwise a share in proportion to its size.
- ``heads``: the earlier heads keep their (distillation) losses, weight ``head_weight``.
- ``replay+heads``: both.
- ``lora``: a fresh low-rank adapter (peft's, through ``metaloop.adapt.add_lora``) on each
  ``nn.Linear`` of the body, and the heads, train; the body's weights stay put, and the
  adapter is merged into them after the experience (``with_lora``, ``merge_lora_params``).
- ``joint``: Avalanche's *cumulative* strategy: batches drawn uniformly from all the data so
  far, that is replay of all earlier data at ratio ``n_earlier / (n_earlier + n_new)``.

Experience 0 is always learned from scratch with plain training, so every strategy starts
from the same model.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple, cast

import torch
from torch import nn

from metaloop._callable import check_progress
from metaloop._random import draw_device
from metaloop.adapt.lora import add_lora, is_lora, merge_lora
from metaloop.continual.finetune import evaluate_experiences, finetune_experience
from metaloop.continual.heads import PREFIX, check_data, own_head_names
from metaloop.continual.metrics import accuracy_matrix
from metaloop.func.params import Params, params_of
from metaloop.meta._common import check_flag

STRATEGIES = ("naive", "replay", "heads", "replay+heads", "lora", "joint")


class _Sequence(NamedTuple):
    matrix: torch.Tensor
    curve: list[dict]
    boundaries: list[int]
    params: Params


class SequenceResult(_Sequence):
    """What ``run_sequence`` returns: a named tuple ``(matrix, curve, boundaries, params)``
    (it unpacks into four) with the attribute ``chosen`` besides.

    Attributes:
        matrix: the accuracy matrix ``R`` ``[T, T]`` on the test data.
        curve: one dict per evaluation during fine-tuning on experiences 1..T-1:
            ``{"step": global fine-tuning step, "experience": t, "accuracy": {name: acc}}``
            over the experiences seen so far.
        boundaries: the global step at which each experience 1..T-1 started.
        params: the final parameters.
        chosen: one dict per experience learned here (from 1 with ``pretrained``, else
            from 0), whose parameters ``finetune_experience`` kept: ``{"experience": t,
            "best_step": step kept, "steps": steps taken, "val_start": validation accuracy
            before its fine-tuning, "val_best": at best_step}`` (accuracies as fractions,
            None without validation data). Without ``early_stop`` best_step is the last step.
    """

    _fields = _Sequence._fields              # the tuple's four (named, as a named tuple's)
    chosen: list[dict]

    def __new__(cls, matrix: torch.Tensor, curve: list[dict], boundaries: list[int],
                params: Params, chosen: list[dict] | None = None) -> SequenceResult:
        self = super().__new__(cls, matrix, curve, boundaries, params)
        self.chosen = list(chosen or [])
        return self

    def __getnewargs__(self):                # a copy or pickle keeps ``chosen``
        return (*self, self.chosen)

    def _replace(self, **fields) -> SequenceResult:
        chosen = fields.pop("chosen", self.chosen)
        return SequenceResult(*_Sequence(*self)._replace(**fields), chosen)


def strategy_options(strategy: str, t: int, experiences: Sequence, *,
                     replay_ratio: float | str = 0.1, head_weight: float = 1.0) -> dict:
    """``finetune_experience`` keyword arguments of a named strategy on experience ``t``.

    Args:
        strategy: one of ``STRATEGIES``.
        t: index of the experience about to be learned.
        experiences: the stream.
        replay_ratio: the replay strategies' ratio, or ``"balanced"`` for ``t / (t + 1)``.
        head_weight: weight of each kept head.

    Raises:
        ValueError: an unknown strategy or replay ratio, or a ``t`` that is not an int in
            ``0..len(experiences)-1``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {list(STRATEGIES)}")
    if not isinstance(t, numbers.Integral) or isinstance(t, bool) or \
            not 0 <= t < len(experiences):
        raise ValueError(f"t must be the index of an experience of the stream, an int in "
                         f"0..{len(experiences) - 1}, got {t!r}")
    t = int(t)
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


_SET_BY_SEQUENCE = {
    "keep_heads": "the heads and replay+heads strategies keep the earlier heads, the others "
                  "none",
    "trainable": "the lora strategy trains adapters and heads, the others everything",
    "earlier": "the experiences before each one",
}


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
        replay_ratio: the replay strategies' ratio, or ``"balanced"`` (see
            ``strategy_options``).
        head_weight: weight of each kept head (see ``strategy_options``).
        lora_rank: rank of the ``lora`` strategy's adapters.
        generator: random source.
        progress: called with the number of optimiser steps just done.
        **finetune_kwargs: passed to every ``finetune_experience`` call (``steps``,
            ``batch_size``, ``lr``, ``eval_every``, ``early_stop``, ``temperature``,
            ``evaluate_on``), and ``buffer_size``, which only the replay strategies
            (``replay``, ``replay+heads``) read, as only they read ``replay_ratio``: the
            others replay nothing (``joint`` always replays all the earlier data). The
            options the strategy sets itself (``keep_heads``, ``trainable``), and
            ``earlier``, which the stream sets, are refused rather than applied to some
            experiences and overridden on others.

    Returns:
        ``SequenceResult(matrix, curve, boundaries, params)`` with ``.chosen``.

    Raises:
        ValueError: an unknown strategy, fewer than two experiences or two of one name, a
            ``pretrained`` that is not a bool (the string ``"False"`` would read as True),
            an option the strategy or the stream sets (``keep_heads``, ``trainable``,
            ``earlier``), a ``progress`` that is not callable, experiences whose inputs
            differ in shape (naming two of them) or are not on the params' device and in
            their dtype (``heads.check_data``), before any is learned; or what
            ``finetune_experience`` refuses.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown strategy {strategy!r}; choose from {list(STRATEGIES)}")
    fixed = sorted(set(finetune_kwargs) & set(_SET_BY_SEQUENCE))
    if fixed:
        raise ValueError(f"run_sequence sets {', '.join(fixed)} itself "
                         f"({'; '.join(_SET_BY_SEQUENCE[k] for k in fixed)}), so it cannot be "
                         f"passed; call finetune_experience per experience to choose it")
    if len(experiences) < 2:
        raise ValueError(f"a stream needs at least two experiences, got {len(experiences)}")
    names = [e.name for e in experiences]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:                        # before any training: the matrix rows are by name
        raise ValueError(f"the experiences of a stream need distinct names, got {names} "
                         f"({', '.join(map(repr, repeated))} more than once)")
    pretrained = check_flag("pretrained", pretrained)
    progress = check_progress("run_sequence", progress)     # before experience 0 is learned
    # every experience's inputs against the first's shape (naming both), and the params'
    # device and dtype, before any is learned or scored
    check_data(params, experiences)
    rows, curve, boundaries, offset, chosen = [], [], [], 0, []
    if pretrained:                      # BatchNorm statistics of the data about to be learned
        rows.append(evaluate_experiences(model, params, experiences,
                                         reference=experiences[0].train[0]))
    for t in range(1 if pretrained else 0, len(experiences)):
        opts = {**finetune_kwargs, **strategy_options(strategy, t, experiences,
                                                      replay_ratio=replay_ratio,
                                                      head_weight=head_weight)}
        use_lora = strategy == "lora" and t > 0
        body, start = with_lora(model, params, lora_rank, generator) if use_lora else \
            (model, params)
        result = finetune_experience(body, start, experiences[t], earlier=experiences[:t],
                                     generator=generator, progress=progress, **opts)
        params = merge_lora_params(body, result.params) if use_lora else result.params
        chosen.append(chosen_step(t, result))
        rows.append(evaluate_experiences(model, params, experiences,
                                         reference=experiences[t].train[0]))
        if t > 0:
            boundaries.append(offset)
            curve += [{"step": offset + s, "experience": t,
                       "accuracy": {n: a[i] for n, a in result.curve["accuracy"].items()}}
                      for i, s in enumerate(result.curve["step"])]
            offset += result.steps
    matrix = accuracy_matrix(rows, names=[e.name for e in experiences])
    return SequenceResult(matrix, curve, boundaries, cast(Params, params),   # the final ones
                          chosen)


def chosen_step(t: int, result) -> dict:
    """``SequenceResult.chosen``'s entry of experience ``t`` from its ``FinetuneResult``:
    the step kept, the steps taken and the validation accuracy before fine-tuning and at
    the step kept (fractions; None where there is no validation data)."""
    vals, steps = result.curve["val_accuracy"], result.curve["step"]
    at = steps.index(result.best_step)

    def frac(v: float) -> float | None:
        return None if math.isnan(v) else float(v)

    return {"experience": t, "best_step": result.best_step, "steps": result.steps,
            "val_start": frac(vals[0]), "val_best": frac(vals[at])}


def with_lora(model: nn.Module, params: Mapping[str, torch.Tensor], rank: int = 8,
              generator: torch.Generator | None = None) -> tuple[nn.Module, Params]:
    """The ``lora`` strategy's start: the body with fresh LoRA adapters, and its parameters.

    The adapters are peft's (``metaloop.adapt.add_lora`` with ``alpha = rank``, so a layer
    computes ``W x + B A x``), on every ``nn.Linear`` of the body except its own head: not on
    convolutions, not on the ``heads.*``.

    Args:
        model: the body (not modified).
        params: its parameters and the heads (see ``heads.init_params``).
        rank: r.
        generator: random source of ``A``.

    Returns:
        (a copy of the body with the adapters, the parameters under its names: each adapted
        layer's weight and bias as ``<layer>.base_layer.*``, its adapter
        ``<layer>.lora_A.default.weight [r, in]`` (uniform in +-1/sqrt(in), as peft
        initialises it) and ``<layer>.lora_B.default.weight [out, r]`` (zeros, so the body
        computes what it did), in the dtype and on the device of the layer's weight (``A``
        drawn on the CPU in float32 whatever these are, so a seed gives the same adapters
        everywhere), and the heads unchanged).

    Raises:
        ValueError: a bad rank, params that already hold adapters, or no ``nn.Linear`` in the
            body.
        ModuleNotFoundError: peft is not installed (``pip install -e '.[text]'``).
    """
    if not isinstance(rank, int) or isinstance(rank, bool) or rank <= 0:
        raise ValueError(f"LoRA rank must be a positive int, got {rank!r}")
    if any(is_lora(k) for k in params):
        raise ValueError("params already hold LoRA adapters; merge them first "
                         "(merge_lora_params)")
    own = set(own_head_names(model))
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    targets = [n for n in linears if f"{n}.weight" in params and f"{n}.weight" not in own]
    if not targets:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer in its body to adapt "
                         f"(the lora strategy adapts nn.Linear layers, not convolutions)")
    linear_head = isinstance(getattr(model, "head", None), nn.Linear) and len(own) == 2
    body = add_lora(model, r=rank, alpha=float(rank), target_modules=targets,
                    head=sorted(own) if linear_head else None)
    start = {}
    for name in params_of(body):
        plain = name.replace(".base_layer.", ".")
        if not is_lora(name) and plain in params:
            start[name] = params[plain]
    for n in targets:
        w = params[f"{n}.weight"]
        d_out, d_in = w.shape
        bound = 1.0 / math.sqrt(d_in)
        at = draw_device(generator)
        a = torch.rand(rank, d_in, generator=generator, dtype=torch.float32, device=at)
        a = (a.cpu() * 2 - 1) * bound                                           # [r, in]
        start[f"{n}.lora_A.default.weight"] = a.to(dtype=w.dtype, device=w.device)
        start[f"{n}.lora_B.default.weight"] = w.new_zeros(d_out, rank)          # [out, r]
    start.update({k: v for k, v in params.items() if k.startswith(PREFIX)})
    return body, start


def merge_lora_params(body: nn.Module, params: Mapping[str, torch.Tensor]) -> Params:
    """Fold the adapters into the weights (``W + B A``): the parameters of the plain body.

    Args:
        body: the body with adapters, from ``with_lora``.
        params: its parameters (after fine-tuning) and the heads.

    Returns:
        The parameters under the plain body's names (``<layer>.weight``), detached, and the
        heads unchanged.
    """
    own = {k: v for k, v in params.items() if not k.startswith(PREFIX)}
    merged = params_of(merge_lora(body, own))
    out = {}
    for k, v in params.items():
        if k.startswith(PREFIX):
            out[k] = v
        elif not is_lora(k):
            plain = k.replace(".base_layer.", ".")
            out[plain] = merged[plain].detach()
    return out
