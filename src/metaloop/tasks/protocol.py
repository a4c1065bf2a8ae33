"""``TaskFamily``: what the training loop, ``evaluate``, the learners and the CLI rely on."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from metaloop.tasks.batch import TaskBatch


@runtime_checkable
class TaskFamily(Protocol):
    """A source of few-shot tasks. Every built-in family and wrapper satisfies it, and so can
    any user class with these members (``isinstance(fam, ml.tasks.TaskFamily)`` checks that
    they exist).

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
        ``[n, ways*queries, *input_shape]``."""
        ...

    def with_shots(self, shots: int, queries: int | None = None) -> TaskFamily:
        """The same family with other shot (and query) counts."""
        ...
