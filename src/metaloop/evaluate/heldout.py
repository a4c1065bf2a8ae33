"""Held-out evaluation: the same seeded tasks for every method, mean and 95% CI per step."""

from __future__ import annotations

import dataclasses
import math
import numbers
import operator
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from metaloop._progress import tqdm_defaults
from metaloop._random import seeded_rng
from metaloop.evaluate.stats import ci95
from metaloop.func.losses import accuracy, get_loss
from metaloop.meta._common import VmapUnsupported, check_batch
from metaloop.tasks.augment import all_shifts, shifted_support
from metaloop.tasks.batch import TaskBatch


def mean_ci(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and the 95% confidence half-width ``t_975(n - 1) * sd / sqrt(n)`` (sd with
    n - 1): Student's t interval, which is the normal's 1.96 * sd / sqrt(n) for the hundreds
    of tasks of an evaluation (1.962 at n = 1000) and wider where few values are averaged
    (4.30 * sd / sqrt(3) over 3 seeds, 2.09 * sd / sqrt(20) over the challenge's 20 runs).

    One value has no spread to measure and so no CI: its half-width is None (JSON ``null``;
    ``format_mean_ci`` prints it as ``± n/a``), never a 0.0 that would read as certainty.

    Non-finite values are not refused: they pass through as IEEE arithmetic gives them
    (``mean_ci([1.0, nan])`` is ``(nan, nan)``, ``mean_ci([1.0, inf])`` is ``(inf, nan)``).
    ``evaluate`` relies on this: a learner that diverges on some tasks is reported with a
    NaN or infinite mean (written as JSON ``null``) rather than failing the whole
    evaluation. Check ``math.isfinite`` on the values first where that is not wanted.

    Args:
        values: the numbers to average (a list, tuple or other sequence of floats or ints).

    Returns:
        ``(mean, half-width)``; the half-width is None for one value.

    Raises:
        ValueError: no values, or a string (whose characters would be read as digits).
    """
    if isinstance(values, (str, bytes)):
        raise ValueError(f"mean_ci needs a sequence of numbers, got the string {values!r}")
    v = [float(x) for x in values]
    if not v:
        raise ValueError("mean_ci needs at least one value")
    return math.fsum(v) / len(v), ci95(v)


def format_mean_ci(mean: float, ci: float | None, spec: str = ".2f", scale: float = 1.0,
                   unit: str = "") -> str:
    """``"{mean} ± {ci}"`` with ``spec`` after multiplying by ``scale`` (100 for %), and
    ``"{mean} ± n/a"`` where there is no CI (``ci`` None: one value).

        format_mean_ci(0.8333, None, scale=100)   # '83.33 ± n/a'

    Args:
        mean: the mean, as ``mean_ci`` returns it.
        ci: the 95% half-width, or None where there is none.
        spec: the format spec of both numbers (``".2f"``, ``".3g"``).
        scale: factor applied to both before formatting (100 for percent).
        unit: text written after each number (``"%"``).

    Returns:
        The text ``"{mean} ± {ci}"``.
    """
    half = "n/a" if ci is None else f"{scale * ci:{spec}}{unit}"
    return f"{scale * mean:{spec}}{unit} ± {half}"


def _generator(tasks: int, seed: int) -> torch.Generator:
    """``torch.Generator(seed)`` for ``tasks`` held-out tasks, both checked (``heldout_tasks``)."""
    if not isinstance(tasks, int) or isinstance(tasks, bool) or tasks <= 0:
        raise ValueError(f"tasks must be a positive int, got {tasks!r}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"seed must be an int, got {seed!r}")
    try:
        return torch.Generator().manual_seed(seed)
    except (RuntimeError, ValueError) as e:
        raise ValueError(f"seed {seed} is outside what a torch.Generator takes ({e})") from e


def heldout_tasks(family, tasks: int, seed: int, chunk: int = 100):
    """Yield the held-out TaskBatches: ``tasks`` tasks from ``torch.Generator(seed)``, in
    batches of up to ``chunk``.

    Args:
        family: the task family; its ``sample(n, generator=...)`` draws the tasks.
        tasks: how many tasks in all, a positive int.
        seed: the seed of the ``torch.Generator`` the tasks are drawn with.
        chunk: the most tasks sampled at once (the last batch may hold fewer).

    Yields:
        ``TaskBatch`` objects of ``min(chunk, tasks left)`` tasks each.

    Raises:
        ValueError: ``tasks`` not a positive int, or ``seed`` not an int that a
            ``torch.Generator`` takes (a bool, a float, None; naming it); a family whose
            ``sample(n)`` returns something other than a TaskBatch, or one of another
            number of tasks than the n asked for (naming the family and both numbers);
            ``chunk`` not a positive int.
    """
    g = _generator(tasks, seed)
    if not isinstance(chunk, int) or isinstance(chunk, bool) or chunk <= 0:
        raise ValueError(f"chunk must be a positive int (tasks sampled at once), got {chunk!r}")
    done = 0
    while done < tasks:
        n = min(chunk, tasks - done)
        batch = family.sample(n, generator=g)
        if not isinstance(batch, TaskBatch):
            raise ValueError(f"{type(family).__name__}.sample must return a metaloop.TaskBatch, "
                             f"got {type(batch).__name__} (ml.tasks.check_family checks a "
                             f"family of your own)")
        if batch.num_tasks != n:
            raise ValueError(f"{type(family).__name__}.sample({n}) returned a TaskBatch of "
                             f"{batch.num_tasks} tasks, not {n}: the held-out scores would "
                             f"not be over the tasks asked for (ml.tasks.check_family checks a "
                             f"family of your own)")
        yield batch
        done += n


def check_learner_family(who: str, learner, family, needs: tuple[str, ...],
                         family_name: str = "family") -> None:
    """ValueError unless ``learner`` is a metaloop learner with the methods ``needs`` (and,
    with ``"model"`` among them, a ``model`` that is an ``nn.Module``) and ``family`` a task
    family with ``sample``: each named with its type, led by ``who`` (what refuses it:
    ``evaluate``, ``train``). A bare ``nn.Module`` or None given for either otherwise fails
    later, deep in torch's module code or at the first ``sample``."""
    methods = [m for m in needs if m != "model"]
    missing = [m for m in methods if not callable(getattr(learner, m, None))]
    if "model" in needs and not isinstance(getattr(learner, "model", None), torch.nn.Module):
        missing.append("model (an nn.Module)")
    if missing:
        raise ValueError(f"{who}: learner must be a metaloop learner (ml.meta.Learner), "
                         f"but {type(learner).__name__} has no {' or '.join(missing)}")
    if not callable(getattr(family, "sample", None)):
        raise ValueError(f"{who}: {family_name} must be a task family with sample(n, "
                         f"generator) (ml.tasks.TaskFamily), got {type(family).__name__}")


def evaluate(learner, family, tasks: int = 600, steps: Sequence[int] = (0, 1, 5, 10),
             seed: int = 1_000_003, loss=None, device=None, progress=None,
             support_shift: int = 0, query_shift: int = 0) -> dict:
    """Adapt ``learner`` on each held-out task's support set and score its query set.

    Every method evaluated with the same ``family``, ``tasks`` and ``seed`` sees the same tasks.
    Learners whose ``adapt_path`` ends before a requested step (closed-form heads) are scored
    with their final parameters there. Learners with ``batching == "vmap"`` adapt and score
    each sampled batch of tasks at once (``adapt_path_batched``, ``predict_batched``); the
    others one task at a time (``adapt_path``, ``predict``). Adaptation takes its gradients
    whatever the caller's grad mode (``torch.no_grad()``, ``torch.inference_mode()``).

    Args:
        learner: any metaloop learner (``adapt_path``, ``predict``; ``ml.meta.Learner``).
        family: the held-out task family: ``sample(n, generator)`` returns a TaskBatch of
            exactly n tasks, support ``[n, S, ...]`` and query ``[n, Q, ...]`` inputs with
            int64 labels ``[n, S]`` / ``[n, Q]`` or float targets ``[n, S, out]`` /
            ``[n, Q, out]``; it is asked for at most 100 tasks at a time.
        tasks: number of held-out tasks, an int > 0.
        steps: adaptation step counts to report, a sequence of ints >= 0 (``(0, 1, 5)``;
            one count: ``(5,)``), in any order, repeats counted once.
        seed: seed of the held-out task stream, an int (keep it apart from the training
            seed); it also seeds torch's RNG while scoring (a model of your own with dropout
            in training mode scores the same on every call), and the caller's is restored.
        loss: query loss: ``"mse"`` (float targets ``[Q, out]``), ``"ce"`` (int64 labels
            ``[Q]``, logits ``[Q, C]``) or a callable ``(pred, y) -> scalar``; default the
            learner's ``inner.loss_fn``.
        device: where each sampled batch is moved before scoring (``TaskBatch.to``), e.g.
            ``"cuda"``, a ``torch.device`` or None (the default: where the family made it);
            the learner's model must already be there. Its CUDA generator is seeded with
            ``seed`` too while scoring. The batches' float inputs and targets are cast to
            the dtype of the model's parameters (a float64 model scores a float32 family),
            as ``ml.train`` casts them (``model_dtype``).
        progress: None or False (the default: none), True (a progress bar over the tasks),
            or a callable ``progress(n)``, called as tasks are scored with how many were
            just scored (one at a time with the loop, a chunk with vmap).
        support_shift: test-time augmentation of image tasks (inputs ``[C, H, W]``): each
            support set is grown by every translation of its images up to this many pixels
            (``(2s+1)^2`` copies, ``metaloop.tasks.augment.shifted_support``); the queries
            are left alone. An int >= 0; 0: off.
        query_shift: test-time augmentation of classification queries (inputs ``[C, H,
            W]``): each query is scored by its class probabilities averaged over every
            translation of it up to this many pixels (``(2s+1)^2`` copies, ``all_shifts``),
            predicted in one batch (with transductive BatchNorm the copies share the batch
            statistics). An int >= 0; 0: off.

    Returns:
        ``{"tasks", "seed", "steps", "loss": {"mean", "ci95"}, "accuracy": {...}}`` with one
        entry per step (accuracy for classification only; ``ci95`` None for one task),
        ``per_task`` raw values (``per_task[key][k]``: one value per task at ``steps[k]``),
        and ``support_shift`` / ``query_shift`` when set.

    Raises:
        ValueError: ``steps`` not a non-empty sequence of ints >= 0 (a bare int, a float
            such as 1.5, a bool; naming the value), a bad ``tasks``, ``seed``,
            ``support_shift`` or ``query_shift`` (also one as large as the images' height or
            width, whose copies moved that far hold no image, or a shift of inputs that are
            not images), ``progress`` neither a bool, None nor a callable, a ``learner``
            without ``adapt_path`` and ``predict`` (or, with no ``loss``,
            ``inner.loss_fn``), a ``family`` without ``sample`` (each named, with
            its type), an unknown ``loss`` name or one that does not fit the tasks' targets
            (``"ce"`` for float regression targets, ``"mse"`` for class labels), a family
            whose ``sample`` returns other than a TaskBatch of the tasks asked for, and what
            the learner raises for tasks it cannot adapt to (``device`` elsewhere than its
            model, for one).
    """
    check_learner_family("evaluate", learner, family, ("adapt_path", "predict"))
    if loss is None and not callable(getattr(getattr(learner, "inner", None), "loss_fn", None)):
        raise ValueError(f"evaluate: {type(learner).__name__} has no inner.loss_fn to score "
                         f"the queries with; pass loss= ('mse', 'ce' or a callable)")
    steps = _check_steps(steps)
    if not (progress is None or isinstance(progress, bool) or callable(progress)):
        raise ValueError(f"evaluate: progress must be True (a progress bar), False or None "
                         f"(none), or a callable progress(n) called with the tasks just "
                         f"scored (e.g. a tqdm bar's update), got {progress!r}")
    # (a callable of the user's own as it is: evaluate only reads its value as a number,
    # so a metric that returns a Python float scores as before; get_loss would check it is
    # a differentiable 0-dim tensor)
    loss_fn = (loss if callable(loss) else get_loss(loss)) if loss is not None \
        else learner.inner.loss_fn
    per_task: dict[str, list[list[float]]] = {"loss": [[] for _ in steps],
                                              "accuracy": [[] for _ in steps]}
    for name, v in (("support_shift", support_shift), ("query_shift", query_shift)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError(f"{name} must be an int >= 0, got {v!r}")
    _generator(tasks, seed)          # named before the RNG is seeded with it
    model = getattr(learner, "model", None)
    places = [p.device for p in model.parameters()] if isinstance(model, torch.nn.Module) \
        else []
    dtype = model_dtype(model)
    bar = tqdm(total=tasks, desc="evaluate", **tqdm_defaults()) if progress is True else None
    try:
        with seeded_rng(seed, [*places, device]):   # dropout in the user's model: seeded
            classification = _score(learner, loss_fn, family, tasks, seed, steps, per_task,
                                    device, bar.update if bar is not None else progress or None,
                                    support_shift, query_shift,
                                    loss if isinstance(loss, str) else None, dtype)
    finally:
        if bar is not None:
            bar.close()
    result: dict[str, Any] = {"tasks": tasks, "seed": seed, "steps": steps, "per_task": {},
              **({"support_shift": support_shift} if support_shift else {}),
              **({"query_shift": query_shift} if query_shift else {})}
    for key in ("loss", "accuracy") if classification else ("loss",):
        stats = [mean_ci(v) for v in per_task[key]]
        result[key] = {"mean": [m for m, _ in stats], "ci95": [c for _, c in stats]}
        result["per_task"][key] = per_task[key]
    return result


def check_loss_kind(loss, batch: TaskBatch, family) -> None:
    """A built-in ``loss`` name must fit the targets of ``batch``: ``"ce"`` class labels,
    ``"mse"`` regression targets (``metaloop.meta._common.check_batch``'s check). Cross
    entropy over the one output of a regression model is 0 whatever it predicts.

    Raises:
        ValueError: naming the loss, the family and what its tasks hold.
    """
    try:
        check_batch(batch, None, loss)
    except ValueError as e:
        raise ValueError(f"evaluate: the tasks of {type(family).__name__} do not fit the "
                         f"loss: {e}") from e


def model_dtype(model) -> torch.dtype | None:
    """The float dtype of ``model``'s parameters, which ``ml.train`` casts each batch's float
    fields to (``metaloop.train.loop.on_model``), and so ``evaluate`` too; None for no
    ``nn.Module``, no float parameter, or several float dtypes (nothing to cast to)."""
    if not isinstance(model, torch.nn.Module):
        return None
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    return dtypes.pop() if len(dtypes) == 1 else None


def _score(learner, loss_fn, family, tasks, seed, steps, per_task, device, progress,
           support_shift, query_shift, loss_name=None, dtype=None) -> bool | None:
    """``evaluate``'s loop over the held-out tasks, appending each one's scores to
    ``per_task``; returns whether they are classification tasks (None: no task).
    ``loss_name``: the loss given by name, checked against each batch's targets. ``dtype``:
    the model's (``model_dtype``), which float inputs and targets are cast to."""
    classification = None
    for batch in heldout_tasks(family, tasks, seed):
        cast = dtype is not None and any(            # as ml.train casts each batch
            t.is_floating_point() and t.dtype != dtype
            for t in (batch.support_x, batch.support_y, batch.query_x, batch.query_y))
        if device is not None or cast:
            batch = batch.to(device, dtype if cast else None)     # one copy for both
        check_loss_kind(loss_name, batch, family)
        classification = batch.is_classification
        side = min(batch.query_x.shape[-2:]) if batch.query_x.dim() == 5 else 0   # H, W
        for name, v in (("support_shift", support_shift), ("query_shift", query_shift)):
            if v >= side > 0:         # a copy moved the whole side away: no image left
                raise ValueError(f"{name} = {v} moves images of {list(batch.query_x.shape[-2:])} "
                                 f"pixels by up to {v}, so some of its copies hold no image at "
                                 f"all: give a shift below {side} (--{name.replace('_', '-')} "
                                 f"in metaloop eval)")
        if support_shift:
            if batch.support_x.dim() != 5:
                raise ValueError(f"support_shift = {support_shift} shifts images, but the "
                                 f"tasks' inputs are {list(batch.support_x.shape[2:])}")
            sx, sy = shifted_support(batch.support_x, batch.support_y, support_shift)
            batch = dataclasses.replace(batch, support_x=sx, support_y=sy)
        if query_shift and (batch.query_x.dim() != 5 or not batch.is_classification):
            raise ValueError(f"query_shift = {query_shift} averages class probabilities over "
                             f"shifted query images, but the tasks' queries are "
                             f"{list(batch.query_x.shape[2:])} with "
                             f"{'class labels' if batch.is_classification else 'real targets'}")
        if getattr(learner, "batching", "loop") == "vmap":
            scores: dict[str, list[list[float]]] = {k: [[] for _ in v] for k, v in
                                                    per_task.items()}
            try:
                _score_batch(learner, loss_fn, batch, steps, scores, query_shift)
            except VmapUnsupported:
                # vmap cannot run the model: raised on for batching="vmap"; "auto" has
                # switched the learner to the loop, which scores this batch below
                if getattr(learner, "batching", "loop") == "vmap":
                    raise
            else:
                for key, per_step in scores.items():
                    for k, values in enumerate(per_step):
                        per_task[key][k].extend(values)
                if progress is not None:
                    progress(batch.num_tasks)
                continue
        for i in range(batch.num_tasks):
            sx, sy, qx, qy = batch.task(i)
            _score_task(learner, loss_fn, sx, sy, qx, qy, steps, per_task, query_shift)
            if progress is not None:
                progress(1)
    return classification


def _check_steps(steps) -> list[int]:
    """``evaluate``'s step counts, sorted and without repeats.

    Raises:
        ValueError: not a non-empty sequence (a bare int, a string), or an entry that is not
            an int >= 0 (a float, whose fraction would be dropped; a bool), naming it.
    """
    if isinstance(steps, numbers.Integral) and not isinstance(steps, bool):
        raise ValueError(f"steps must be a sequence of step counts, got the int {steps}; "
                         f"for that one count pass steps=({steps},)")
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Iterable):
        raise ValueError(f"steps must be a sequence of non-negative ints such as (0, 1, 5), "
                         f"got {steps!r}")
    given, counts = list(steps), []
    for s in given:
        try:                          # ints, numpy's and integer tensors' (not 1.5: no index)
            n = None if isinstance(s, (bool, np.bool_)) else operator.index(s)
        except TypeError:
            n = None
        if n is None or n < 0:
            raise ValueError(f"steps must be non-negative ints, got {given} ({s!r} is not)")
        counts.append(n)
    if not counts:
        raise ValueError(f"steps must be non-negative ints, got {given}")
    return sorted(set(counts))


def _score_task(learner, loss_fn, sx, sy, qx, qy, steps, per_task, query_shift=0) -> None:
    k, last = 0, None
    for t, params in enumerate(learner.adapt_path(sx, sy, steps[-1])):
        last = params
        while k < len(steps) and steps[k] == t:
            _record(learner, loss_fn, params, qx, qy, k, per_task, query_shift)
            k += 1
    while k < len(steps):
        _record(learner, loss_fn, last, qx, qy, k, per_task, query_shift)
        k += 1


def shift_averaged(predict, params, qx: torch.Tensor, shift: int) -> torch.Tensor:
    """``predict(params, x)`` on every shift of the queries ``qx`` ``[..., Q, C, H, W]`` in
    one call, returned as the log of the class probabilities averaged over the shifts
    ``[..., Q, classes]``; ``shift = 0``: ``predict(params, qx)`` as it is."""
    if not shift:
        return predict(params, qx)
    copies = all_shifts(qx, shift)                                    # [K, ..., Q, C, H, W]
    k, lead = copies.shape[0], qx.dim() - 4                           # K, batch dims before Q
    flat = copies.movedim(0, lead).flatten(lead, lead + 1)            # [..., K*Q, C, H, W]
    out = predict(params, flat)                                       # [..., K*Q, classes]
    out = out.unflatten(lead, (k, qx.shape[lead]))                    # [..., K, Q, classes]
    return torch.logsumexp(torch.log_softmax(out, -1), lead) - math.log(k)   # [..., Q, cl.]


def _score_batch(learner, loss_fn, batch, steps, per_task, query_shift=0) -> None:
    """All tasks at once (learners with vmap batching): same numbers as ``_score_task``."""
    path = learner.adapt_path_batched(batch.support_x, batch.support_y, steps[-1])
    with torch.no_grad():
        for k, t in enumerate(steps):
            out = shift_averaged(learner.predict_batched, path[min(t, len(path) - 1)],
                                 batch.query_x, query_shift)
            for o, y in zip(out, batch.query_y):                          # [Q, out], [Q]
                per_task["loss"][k].append(float(loss_fn(o, y)))
                if not y.is_floating_point():
                    per_task["accuracy"][k].append(float(accuracy(o, y)))


def _record(learner, loss_fn, params, qx, qy, k, per_task, query_shift=0) -> None:
    with torch.no_grad():
        out = shift_averaged(learner.predict, params, qx, query_shift)    # [Q, out]
        per_task["loss"][k].append(float(loss_fn(out, qy)))
        if not qy.is_floating_point():
            per_task["accuracy"][k].append(float(accuracy(out, qy)))
