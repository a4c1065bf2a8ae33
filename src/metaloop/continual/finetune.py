"""Fine-tuning without catastrophic forgetting: a readable training function.

``finetune_experience`` trains on a new experience with three composable remedies:

- **Replay** (``replay_ratio``, ``buffer_size``): a fraction of every batch is drawn from the
  earlier experiences' data (all of it, or a reservoir sample) and scored by its own head
  with its own labels. The default 0.1 follows the lecture's "about 10% pretraining-style
  data"; 0 is naive fine-tuning.
- **Kept heads** (``keep_heads``): the earlier heads stay attached, with their losses, on the
  new experience's inputs. Those inputs have no labels for an earlier task, so the loss is
  the one of Learning without Forgetting (Li & Hoiem 2016): the head's softened predictions
  are pulled towards what the model predicted before this fine-tuning started,
  ``T^2 KL(softmax(teacher / T) || softmax(student / T))``. The heads are not frozen: they
  update, and their losses send gradients into the shared body. In the class-incremental
  setting the earlier "head" is the earlier classes' slice of the one shared head, so the
  loss is on those logits only (as LwF and iCaRL do there).
- **What trains** (``trainable``): ``"all"``, ``"head"`` (every ``heads.*`` parameter),
  ``"lora"`` (the LoRA adapters of a body from ``with_lora``, and the heads), a list of names
  or a predicate on names.

Evaluation runs every ``eval_every`` steps on the test data of the given experiences, so
the forgetting curve can be drawn; ``early_stop`` stops on the new experience's validation
accuracy and returns the best parameters seen after a step (never the starting ones; ties go
to the later evaluation). A body with metaloop's ``BatchNorm`` (Conv4)
is evaluated with the statistics of the training data it is learning from (as a trained
network in eval mode uses its running statistics), not of each test set: normalising every
experience's test set by its own statistics would undo the input shift between experiences
and hide most of the forgetting, and make each score depend on the other test examples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from metaloop._callable import check_progress
from metaloop.adapt.lora import is_lora
from metaloop.continual.heads import (
    PREFIX,
    check_body,
    check_data,
    check_heads,
    features,
    logits_of_head,
)
from metaloop.continual.replay import Batch, check_replay_ratio, mixed_batches, replay_buffer
from metaloop.func.params import Params, detach, eval_mode, partition
from metaloop.models.bn_stats import batchnorm_layers, fixed_stats, recorded_stats

Trainable = str | Callable[[str], bool] | Iterable[str]
SPLITS = ("train", "val", "test")


class FinetuneResult(NamedTuple):
    """What ``finetune_experience`` returns.

    Attributes:
        params: the fine-tuned parameters, detached: those after the last step, or with
            ``early_stop`` the best on validation among the evaluations after a step (the
            starting parameters are never returned; see ``finetune_experience``).
        curve: ``{"step": [S], "accuracy": {experience name: [S]}, "val_accuracy": [S]}``,
            measured before the first step (step 0) and every ``eval_every`` steps.
        steps: optimiser steps taken.
        best_step: the step whose parameters were returned, >= 1 (``steps`` without
            ``early_stop``).
    """

    params: Params
    curve: dict
    steps: int
    best_step: int


def select_trainable(params: Mapping[str, torch.Tensor], trainable: Trainable) -> list[str]:
    """Names of the parameters to train.

    Args:
        params: all parameters.
        trainable: ``"all"``; ``"head"`` (every ``heads.*`` parameter); ``"lora"`` (the LoRA
            adapters, ``...lora_A...`` / ``...lora_B...`` as ``metaloop.adapt.add_lora``
            names them, and the heads); a predicate on names; or a list of names.

    Raises:
        ValueError: an unknown keyword, unknown names, a selection that matches nothing, or
            ``"lora"`` for params without LoRA adapters (it would train the heads alone, as
            ``metaloop.adapt.lora_finetune`` refuses to).
    """
    keywords = {"all": lambda n: True, "head": lambda n: n.startswith(PREFIX),
                "lora": lambda n: is_lora(n) or n.startswith(PREFIX)}
    if isinstance(trainable, str):
        if trainable not in keywords:
            raise ValueError(f"unknown trainable {trainable!r}; use one of {sorted(keywords)}, "
                             f"a predicate on parameter names, or a list of names")
        if trainable == "lora" and not any(is_lora(n) for n in params):
            raise ValueError("trainable='lora' but the params have no LoRA parameters (names "
                             "with lora_A / lora_B), so only the heads would train; add "
                             "adapters first (body, params = metaloop.continual.with_lora("
                             "model, params)), or pass trainable='head' to train the heads "
                             "alone")
        trainable = keywords[trainable]
    chosen, _ = partition(params, trainable)
    return list(chosen)


# How many of the reference inputs give a BatchNorm body its statistics at evaluation.
REFERENCE_EXAMPLES = 1024


def evaluate_experiences(model: nn.Module, params: Mapping[str, torch.Tensor],
                         experiences: Sequence, split: str = "test",
                         batch_size: int = 1000,
                         reference: torch.Tensor | None = None) -> dict[str, float]:
    """Accuracy of each experience's head on its ``split`` data (argmax over all the head's
    outputs), ``{experience name: accuracy}``; NaN for an empty split.

    Args:
        model: the body, ``forward(x, head=False) -> [N, D]``.
        params: body and ``heads.*`` parameters.
        experiences: the experiences to score, each with its head and data.
        split: ``"train"``, ``"val"`` or ``"test"``.
        batch_size: examples per forward pass, a positive int.
        reference: for a body with metaloop ``BatchNorm`` layers (Conv4), inputs
            ``[M, *shape]`` whose statistics normalise every example scored: the training
            data the model last learned from (``run_sequence`` and ``finetune_experience``
            pass the new experience's), as eval-mode BatchNorm uses its running statistics.
            At most ``REFERENCE_EXAMPLES`` (1024) of them, evenly spaced, pass through the
            body in one batch. Each score then depends on its own input alone, whatever the
            ``batch_size``. None: each batch of ``split`` data is normalised by its
            own statistics (transductive, and dependent on ``batch_size``). Ignored for a
            body without such layers.

    The body is scored in eval mode (dropout off), its layers' modes restored afterwards.

    Raises:
        ValueError: a split other than ``"train"``, ``"val"`` or ``"test"``, a batch size
            that is not a positive int, or a body ``check_body`` refuses.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    _check_positive(batch_size=batch_size)
    check_body(model)
    with torch.no_grad(), eval_mode(model), _normalised_by(model, params, reference):
        return _accuracies(model, params, experiences, split, batch_size)


def _accuracies(model: nn.Module, params, experiences: Sequence, split: str,
                batch_size: int = 1000) -> dict[str, float]:
    """``evaluate_experiences``'s scores, its arguments checked, under its normalisation."""
    out = {}
    for e in experiences:
        x, y = getattr(e, split)
        correct = 0
        for i in range(0, y.numel(), batch_size):
            feats = features(model, params, x[i:i + batch_size])              # [n, D]
            logits = logits_of_head(params, e.head, feats)                      # [n, C]
            correct += int((logits.argmax(-1) == y[i:i + batch_size]).sum())
        out[e.name] = correct / y.numel() if y.numel() else math.nan
    return out


@contextmanager
def _normalised_by(model: nn.Module, params, reference: torch.Tensor | None
                   ) -> Iterator[None]:
    """While active, the body's metaloop BatchNorm layers normalise with their statistics on
    at most ``REFERENCE_EXAMPLES`` evenly spaced ``reference`` inputs; nothing changes when
    there are no such layers or no reference. Call it under ``torch.no_grad``."""
    layers = batchnorm_layers(model)
    if not layers or reference is None or len(reference) == 0:
        yield
        return
    step = max(1, math.ceil(len(reference) / REFERENCE_EXAMPLES))
    sample = reference[::step]                                           # [<= 1024, ...]
    with recorded_stats(layers, {}) as stats:
        features(model, params, sample)
    with fixed_stats(layers, stats):
        yield


def _kept_heads(keep_heads, earlier) -> dict[str, tuple[float, list[int]]]:
    """``{head: (weight, earlier outputs)}``: the earlier heads whose losses stay active."""
    if keep_heads is False or keep_heads is None:
        return {}
    if keep_heads is not True and not isinstance(keep_heads, Mapping):
        raise ValueError(f"keep_heads must be True, False or a mapping {{head: weight}}, got "
                         f"{keep_heads!r}")
    outputs: dict[str, set[int]] = {}
    for e in earlier:
        outputs.setdefault(e.head, set()).update(e.classes)
    if not outputs:
        raise ValueError("keep_heads needs earlier experiences whose heads to keep; none given")
    weights = dict.fromkeys(outputs, 1.0) if keep_heads is True else dict(keep_heads)
    unknown = sorted(set(weights) - set(outputs))
    if unknown:
        raise ValueError(f"keep_heads names {unknown}, which are not heads of earlier "
                         f"experiences {sorted(outputs)}")
    for h, w in weights.items():
        if isinstance(w, bool) or not isinstance(w, int | float) or not w >= 0 \
                or not math.isfinite(w):
            raise ValueError(f"keep_heads weight of head {h!r} must be a finite number >= 0, "
                             f"got {w!r}")
    return {h: (float(w), sorted(outputs[h])) for h, w in weights.items() if w > 0}


def _check_positive(**values) -> None:
    for name, v in values.items():
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v <= 0):
            raise ValueError(f"{name} must be a positive int, got {v!r}")


def batch_loss(model: nn.Module, params: Mapping[str, torch.Tensor], batch: Batch,
               heads: Sequence[str], kept: Mapping[str, tuple[float, list[int]]] | None = None,
               teacher: Mapping[str, torch.Tensor] | None = None,
               temperature: float = 2.0) -> torch.Tensor:
    """The fine-tuning loss of one mixed batch.

    Cross-entropy of every example under its own head (new examples: ``heads[0]``; earlier
    example from experience ``s``: ``heads[s + 1]``), averaged over the batch, plus for each
    kept head ``h`` with weight ``w`` and earlier outputs ``O``:
    ``w T^2 KL(softmax(teacher_h(x)[:, O] / T) || softmax(student_h(x)[:, O] / T))``, averaged
    over the new examples ``x`` of the batch.

    Args:
        model: the body.
        params: current parameters.
        batch: ``x [B, *shape]``, ``y [B]``, ``source [B]`` (-1 = new).
        heads: head of the new experience, then of each earlier experience.
        kept: ``{head: (weight, outputs)}`` kept heads.
        teacher: the parameters before fine-tuning (needed with ``kept``), run in eval mode
            (no dropout), as the model is scored; the student runs in the model's own mode.
        temperature: T of the distillation.

    Returns:
        Scalar loss.

    Raises:
        ValueError: ``kept`` heads without a ``teacher`` (they are distilled from it); or,
            from ``logits_of_head``, a head of ``heads`` or ``kept`` that ``params`` (or
            ``teacher``) does not hold, or features that do not fit its weight.
    """
    if kept and teacher is None:
        raise ValueError(f"batch_loss: kept heads {sorted(kept)} are distilled from the "
                         f"parameters before fine-tuning: give teacher=")
    feats = features(model, params, batch.x)                          # [B, D]
    loss = feats.new_zeros(())
    for s in batch.source.unique().tolist():
        rows = batch.source == s
        logits = logits_of_head(params, heads[s + 1], feats[rows])        # [b, C]
        share = int(rows.sum()) / batch.y.numel()                      # this group's share of B
        loss = loss + F.cross_entropy(logits, batch.y[rows]) * share
    new = batch.source == -1
    if kept and bool(new.any()):
        assert teacher is not None                     # (refused above otherwise)
        with torch.no_grad(), eval_mode(model):   # the teacher as scored: no dropout noise
            t_feats = features(model, teacher, batch.x)[new]            # [n, D]
        for h, (w, outputs) in kept.items():
            student = logits_of_head(params, h, feats[new])[:, outputs] / temperature  # [n, |O|]
            target = logits_of_head(teacher, h, t_feats)[:, outputs] / temperature     # [n, |O|]
            kl = F.kl_div(F.log_softmax(student, -1), F.log_softmax(target, -1),
                          reduction="batchmean", log_target=True)
            loss = loss + w * temperature ** 2 * kl
    return loss


def finetune_experience(model: nn.Module, params: Mapping[str, torch.Tensor], new, *,
                        earlier: Sequence = (), replay_ratio: float = 0.1,
                        buffer_size: int | None = None,
                        keep_heads: bool | Mapping[str, float] = False,
                        temperature: float = 2.0, trainable: Trainable = "all",
                        early_stop: int | None = None, steps: int = 500, batch_size: int = 128,
                        lr: float = 1e-3, eval_every: int = 100,
                        evaluate_on: Sequence | None = None,
                        generator: torch.Generator | None = None,
                        progress: Callable[[int], None] | None = None) -> FinetuneResult:
    """Fine-tune on a new experience, with replay and kept heads against forgetting.

    Adam on the trainable parameters; nothing passed in is mutated.

    Args:
        model: the body, ``forward(x, head=False) -> [N, D]``.
        params: body and ``heads.*`` parameters (see ``heads.init_params``).
        new: the new ``Experience`` (``train``, ``val``, ``head``, ...).
        earlier: the experiences learned before, in order: the replay data and the kept
            heads.
        replay_ratio: fraction of each batch drawn from the earlier data, a number (Python's
            or NumPy's, not a tensor) in ``[0, 1)``.
        buffer_size: None to replay all the earlier data; else the size of a reservoir
            sample of it.
        keep_heads: True keeps every earlier head's loss with weight 1; a mapping
            ``{head: weight}`` keeps those heads with those weights; False keeps none.
        temperature: T of the kept heads' distillation loss.
        trainable: what trains; see ``select_trainable``.
        early_stop: patience in evaluations: stop when the new experience's validation
            accuracy has not risen above its best so far (its value before fine-tuning
            included) for this many evaluations, and return the parameters of the evaluation
            after a step with the highest validation accuracy, the later one on a tie. The
            starting parameters are never returned: with a validation accuracy that never
            rises (a small validation set), the last evaluated step is returned, and
            ``curve["val_accuracy"][0]`` (before fine-tuning) tells whether it improved.
        steps: maximum optimiser steps.
        batch_size: B, examples per batch.
        lr: Adam learning rate.
        eval_every: steps between evaluations.
        evaluate_on: experiences to evaluate during training (default: earlier + new).
        generator: random source of batches and reservoir draws.
        progress: called with the number of steps just done.

    Returns:
        ``FinetuneResult(params, curve, steps, best_step)``.

    Raises:
        ValueError: a replay ratio that is not a number in [0, 1); replay or kept heads
            with no earlier data; a missing head or one whose output size does not match its
            experience; labels that are not int64, or outside their experience's ``classes``
            (which decide the outputs a kept head distils); ``trainable="lora"`` without
            LoRA adapters; inputs on another device or in another dtype than ``params``, or
            non-finite training inputs; early stopping without validation data; bad counts,
            temperature, learning rate or ``keep_heads``; a body ``check_body`` refuses; a
            ``progress`` that is not callable.
    """
    check_body(model)
    progress = check_progress("finetune_experience", progress)
    replay_ratio = check_replay_ratio(replay_ratio)
    _check_positive(steps=steps, batch_size=batch_size, eval_every=eval_every,
                    early_stop=early_stop, buffer_size=buffer_size)
    if isinstance(temperature, bool) or not isinstance(temperature, int | float) or \
            not 0 < temperature < float("inf"):
        raise ValueError(f"temperature must be a positive number, got {temperature!r}")
    if isinstance(lr, bool) or not isinstance(lr, int | float) or not 0 <= lr < float("inf"):
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
    if early_stop is not None and new.val[1].numel() == 0:
        raise ValueError(f"early_stop needs validation data, but experience {new.name!r} has "
                         f"none")
    earlier = list(earlier)
    if replay_ratio > 0 and not earlier:
        raise ValueError(f"replay_ratio={replay_ratio} but there is no earlier data to replay; "
                         f"pass earlier=[...] or replay_ratio=0")
    kept = _kept_heads(keep_heads, earlier)
    check_data(params, [new, *earlier])
    with torch.no_grad():
        dim = features(model, params, new.train[0][:2]).shape[1]
    check_heads(params, [new], dim)
    check_heads(params, earlier, dim, role="kept head" if kept else "earlier head")
    names = set(select_trainable(params, trainable))
    work = {k: v.detach().clone().requires_grad_(k in names) for k, v in params.items()}
    opt = torch.optim.Adam([work[k] for k in work if k in names], lr=lr)
    teacher = detach(params) if kept else None
    buffer = replay_buffer(earlier, buffer_size, generator) if replay_ratio > 0 else None
    batches = mixed_batches(*new.train, buffer,  # type: ignore[call-arg]  # train: (x, y)
                            batch_size, replay_ratio, generator)
    heads = [new.head, *(e.head for e in earlier)]
    watch = list(evaluate_on) if evaluate_on is not None else [*earlier, new]
    if len({e.name for e in watch}) != len(watch):
        raise ValueError(f"experiences to evaluate need distinct names, got "
                         f"{[e.name for e in watch]}")
    curve = {"step": [], "accuracy": {e.name: [] for e in watch}, "val_accuracy": []}
    # patience runs from the best validation accuracy so far, the start's included; the
    # parameters returned are those of an evaluation after a step: the starting parameters
    # are no candidate (returning them would undo the fine-tuning), and a tie goes to the
    # later evaluation (no worse on validation, and trained longer on the new experience)
    top = _record(curve, model, work, watch, new, 0)
    best: tuple[float, int, Params] | None = None
    stale, step = 0, 0
    while step < steps:
        loss = batch_loss(model, work, next(batches), heads, kept, teacher, temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if progress is not None:
            progress(1)
        if step % eval_every and step != steps:
            continue
        val = _record(curve, model, work, watch, new, step)
        if early_stop is None or best is None or val >= best[0]:
            best = (val, step, _snapshot(work))
        if early_stop is not None:
            if val > top:
                top, stale = val, 0
            else:
                stale += 1
                if stale >= early_stop:
                    break
    assert best is not None                   # steps >= 1: the last step is evaluated
    return FinetuneResult(best[2], curve, step, best[1])


finetune = finetune_experience    # the older name (``metaloop.adapt.finetune`` is per task)


def _snapshot(params: Mapping[str, torch.Tensor]) -> Params:
    return {k: v.detach().clone() for k, v in params.items()}


def _record(curve, model, params, watch, new, step) -> float:
    """Append one evaluation to ``curve``; return the new experience's validation accuracy."""
    curve["step"].append(step)
    # as evaluate_experiences(..., reference=new.train[0]) on each split, the statistics of
    # the data being learned recorded once for both
    with torch.no_grad(), eval_mode(model), _normalised_by(model, params, new.train[0]):
        accuracy = _accuracies(model, params, watch, "test")
        val = _accuracies(model, params, [new], "val")[new.name]
    for name, acc in accuracy.items():
        curve["accuracy"][name].append(acc)
    curve["val_accuracy"].append(val)
    return val
