"""``TaskFamily``: what the training loop, ``evaluate``, the learners and the CLI rely on."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from metaloop.tasks.batch import TaskBatch, _shape

KINDS = ("classification", "regression")


@runtime_checkable
class TaskFamily(Protocol):
    """A source of few-shot tasks. Every built-in family and wrapper satisfies it, and so can
    any user class with these members (``isinstance(fam, ml.tasks.TaskFamily)`` and
    ``ml.tasks.check_family(fam)`` check that they exist): the attributes below, ``sample``
    and ``with_shots`` (which evaluation at other shot counts calls).

    Attributes:
        kind: ``"classification"`` or ``"regression"``.
        ways: classes per task (None for regression).
        shots: support examples per class (regression: per task).
        queries: query examples per class (regression: per task).
        num_classes: classes the family draws from (None for regression).
        class_names: their names, indexed by the ids in ``TaskBatch.classes`` (None for
            regression).
        input_shape: the shape of one input, e.g. ``(1, 28, 28)`` or ``(384,)``.
    """

    kind: str
    ways: int | None
    shots: int
    queries: int
    num_classes: int | None
    class_names: list[str] | None

    @property
    def input_shape(self) -> tuple[int, ...]: ...

    def sample(self, n: int, generator: torch.Generator | None = None) -> TaskBatch:
        """n tasks as a TaskBatch: support ``[n, ways*shots, *input_shape]``, query
        ``[n, ways*queries, *input_shape]`` (regression: ``shots`` and ``queries`` per task),
        classification labels in ``[0, ways)``. Every random draw comes from ``generator``
        (not from torch's, numpy's or Python's global generators), so the same seed gives the
        same tasks: ``metaloop.train``'s prefetching and exact resume rely on it."""
        ...

    def with_shots(self, shots: int, queries: int | None = None) -> TaskFamily:
        """The same family with other shot (and query) counts."""
        ...


def _fields(b: TaskBatch):
    return (b.support_x, b.support_y, b.query_x, b.query_y, b.classes)


def check_family(family, generator_device=None) -> None:
    """Check that ``family`` keeps the ``TaskFamily`` protocol, on two draws of two tasks
    from ``torch.Generator(generator_device).manual_seed(0)``: its members exist, ``sample``
    returns a ``TaskBatch`` of the tasks asked for, whose kind, example counts, input shape,
    labels and global class ids agree with the family's ``kind``, ``ways``, ``shots``,
    ``queries``, ``input_shape``, ``num_classes`` and ``class_names``, whose inputs and
    targets are finite, and which the same seed draws again (a family that draws from a
    global generator is not reproducible). For a family of your own, before training on it.

    Args:
        family: the family to check.
        generator_device: where its generator lives (``family.generator_device`` of a
            family that samples on an accelerator); None: the CPU.

    Raises:
        ValueError: naming the family and what is wrong.
    """
    name = type(family).__name__
    missing = [m for m in ("kind", "ways", "shots", "queries", "num_classes", "class_names",
                           "input_shape", "sample", "with_shots") if not hasattr(family, m)]
    if missing:
        raise ValueError(f"{name} is not a TaskFamily: it has no {', '.join(missing)}")
    if family.kind not in KINDS:
        raise ValueError(f"{name}.kind must be 'classification' or 'regression', got "
                         f"{family.kind!r}")
    for count in ("shots", "queries"):
        v = getattr(family, count)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}.{count} must be a positive int, got {v!r}")

    def draw() -> TaskBatch:
        g = torch.Generator(device=generator_device or "cpu").manual_seed(0)
        b = family.sample(2, generator=g)
        if not isinstance(b, TaskBatch):
            raise ValueError(f"{name}.sample must return a metaloop.TaskBatch, got "
                             f"{type(b).__name__}")
        return b

    b = draw()
    if b.num_tasks != 2:
        raise ValueError(f"{name}.sample(2) returned {b.num_tasks} tasks (support_x "
                         f"{_shape(b.support_x)}); the first dimension is the task")
    if b.is_classification != (family.kind == "classification"):
        raise ValueError(f"{name}.kind is {family.kind!r} but its sample gives "
                         + (f"int64 labels {_shape(b.support_y)}" if b.is_classification
                            else f"float targets {_shape(b.support_y)}"))
    if tuple(b.support_x.shape[2:]) != tuple(family.input_shape):
        raise ValueError(f"{name}.input_shape is {tuple(family.input_shape)} but its sample's "
                         f"inputs are support_x {_shape(b.support_x)}")
    per = family.ways if b.is_classification else 1
    if b.is_classification:
        if not isinstance(per, int) or isinstance(per, bool) or per < 1:
            raise ValueError(f"{name}.ways must be a positive int for classification, got "
                             f"{per!r}")
        top = max(int(b.support_y.max()), int(b.query_y.max()))
        if top >= per:
            raise ValueError(f"{name}.ways is {per} but its sample has label {top}: labels "
                             f"must be task-local, in [0, {per})")
    known, names = family.num_classes, family.class_names
    if b.classes is not None and isinstance(known, int):
        lo, hi = int(b.classes.min()), int(b.classes.max())
        if lo < 0 or hi >= known:
            raise ValueError(f"{name}.num_classes is {known} but its sample's classes hold "
                             f"the id {lo if lo < 0 else hi}: global class ids are in "
                             f"[0, num_classes)")
    if names is not None and isinstance(known, int) and len(names) != known:
        raise ValueError(f"{name}.class_names has {len(names)} names for num_classes = "
                         f"{known} classes")
    for field, x, count in (("support", b.support_x, "shots"),
                            ("query", b.query_x, "queries")):
        want = per * getattr(family, count)
        if x.shape[1] != want:
            what = f"ways * {count} = {per} * " if b.is_classification else f"{count} = "
            raise ValueError(f"{name}.sample gives {x.shape[1]} {field} examples per task "
                             f"({field}_x {_shape(x)}) but {what}{getattr(family, count)}"
                             f"{f' = {want}' if b.is_classification else ''}")
    for field in ("support_x", "query_x") + (() if b.is_classification
                                               else ("support_y", "query_y")):
        if not bool(torch.isfinite(getattr(b, field)).all()):
            raise ValueError(f"{name}.sample gives non-finite values (nan or inf) in "
                             f"{field} {_shape(getattr(b, field))}")
    again = draw()
    same = all((u is None and v is None) or (u is not None and v is not None
                                             and u.shape == v.shape and torch.equal(u, v))
               for u, v in zip(_fields(b), _fields(again)))
    if not same:
        raise ValueError(f"{name}.sample gives other tasks for the same seed: it must draw "
                         f"only from the generator it is given (not torch's, numpy's or "
                         f"Python's global ones), or training is not reproducible and "
                         f"neither prefetching nor resuming is exact")
