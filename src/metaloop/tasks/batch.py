"""TaskBatch: B few-shot tasks, each with a support set D_i and a query set D~_i."""

from __future__ import annotations

import contextvars
import operator
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from metaloop._repr import safe_repr

_TRUSTED = contextvars.ContextVar("metaloop_values_trusted", default=False)
# The same, as the plain value that torch.compile reads while it traces (it cannot trace a
# ContextVar's get, and would break the graph there): a constant to the traced code, guarded.
# True while any thread is inside (a count under a lock, so that threads leaving in any
# order leave it False): tracing reads it only inside metaloop's own compiled tasks, and
# compile with threads batching is refused.
_TRUSTED_WHILE_TRACING = [False]
_INSIDE = [0]
_INSIDE_LOCK = threading.Lock()


@contextmanager
def valid_by_construction() -> Iterator[None]:
    """Within it, learners and heads check shapes, dtypes and devices but read no value back
    to the host (label ranges, a class without a support example, a learned ridge
    strength's sign).

    For batches that are valid by construction, where each such read would make the host
    wait for the GPU: ``metaloop.train`` enters it for the steps of a family that says so
    (``valid_by_construction = True``: ``metaloop.tasks.DeviceTasks``, whose labels are
    ``arange(ways)`` repeated in every task). A step without host reads can be recorded as
    a CUDA graph. Outside it, every check runs.
    """
    token = _TRUSTED.set(True)
    with _INSIDE_LOCK:
        _INSIDE[0] += 1
        _TRUSTED_WHILE_TRACING[0] = True
    try:
        yield
    finally:
        _TRUSTED.reset(token)
        with _INSIDE_LOCK:
            _INSIDE[0] -= 1
            _TRUSTED_WHILE_TRACING[0] = _INSIDE[0] > 0


def values_trusted() -> bool:
    """Whether the current code runs inside ``valid_by_construction()``."""
    if torch.compiler.is_compiling():
        return _TRUSTED_WHILE_TRACING[0]
    return _TRUSTED.get()


def _unchecked_batch(sx, sy, qx, qy, classes) -> TaskBatch:
    """A TaskBatch built without ``__post_init__``'s checks, which read label values back to
    the host (a synchronisation per batch on a GPU). Only for batches valid by construction:
    the labels here are ``arange(ways)`` repeated, the inputs float, the shapes consistent."""
    batch = object.__new__(TaskBatch)
    for name, value in (("support_x", sx), ("support_y", sy), ("query_x", qx),
                        ("query_y", qy), ("classes", classes)):
        object.__setattr__(batch, name, value)
    return batch


def _shape(t: torch.Tensor) -> str:
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


@dataclass(frozen=True)
class TaskBatch:
    """A batch of B tasks with S support and Q query examples per task.

    Classification: ``support_y`` is int64 ``[B, S]`` and ``query_y`` int64 ``[B, Q]``, with
    task-local labels in ``[0, ways)``. Regression: ``support_y`` is float ``[B, S, out]`` and
    ``query_y`` float ``[B, Q, out]``. Inputs are ``[B, S, *feature]`` and ``[B, Q, *feature]``.

    Args:
        support_x: ``[B, S, *feature]`` support inputs (D_i).
        support_y: support targets, see above.
        query_x: ``[B, Q, *feature]`` query inputs (D~_i).
        query_y: query targets, see above.
        classes: optional int64 ``[B, ways]``: the global class id of each task-local label,
            used by the multi-task ``pretrain`` baseline. ``None`` for regression.

    Raises:
        ValueError: naming the field and shapes, when batch sizes, feature shapes, dtypes
            or devices are inconsistent, a label is negative, or a task's ``query_y`` holds
            a label that none of its ``support_y`` has (the check reads the labels back to
            the host, as the other label checks do; ``metaloop.tasks.DeviceTasks`` builds
            its batches without them).
    """

    support_x: torch.Tensor
    support_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor
    classes: torch.Tensor | None = None

    @safe_repr
    def __repr__(self) -> str:
        """Each field's shape and dtype, and the device, not the values: e.g.
        ``TaskBatch(support_x=[64, 10, 1] float32, ..., classes=None, device=cpu)``."""
        def field(t):
            return "None" if t is None else f"{_shape(t)} {str(t.dtype).removeprefix('torch.')}"
        names = ("support_x", "support_y", "query_x", "query_y", "classes")
        return ("TaskBatch(" + ", ".join(f"{n}={field(getattr(self, n))}" for n in names)
                + f", device={self.support_x.device})")

    def __post_init__(self) -> None:
        names = ("support_x", "support_y", "query_x", "query_y")
        for name in names:
            if not isinstance(getattr(self, name), torch.Tensor):
                raise ValueError(f"TaskBatch.{name} must be a torch.Tensor, "
                                 f"got {type(getattr(self, name)).__name__}")
        if self.classes is not None and not isinstance(self.classes, torch.Tensor):
            raise ValueError(f"TaskBatch.classes must be a torch.Tensor (int64 [B, ways]) or "
                             f"None, got {type(self.classes).__name__}")
        sx, sy, qx, qy = self.support_x, self.support_y, self.query_x, self.query_y
        for name in names:
            if getattr(self, name).dim() < 2:
                raise ValueError(f"TaskBatch.{name} must have at least 2 dims [B, N, ...], "
                                 f"got shape {_shape(getattr(self, name))}")
        b = {n: getattr(self, n).shape[0] for n in names}
        if len(set(b.values())) != 1:
            raise ValueError("TaskBatch fields disagree on the number of tasks B: "
                             + ", ".join(f"{n} {_shape(getattr(self, n))}" for n in names))
        if b["support_x"] == 0:
            raise ValueError("TaskBatch has no tasks (B = 0)")
        if sx.shape[1] == 0 or qx.shape[1] == 0:
            raise ValueError(f"TaskBatch needs at least one support and one query example, got "
                             f"support_x {_shape(sx)}, query_x {_shape(qx)}")
        if sx.shape[2:] != qx.shape[2:]:
            raise ValueError(f"TaskBatch support_x {_shape(sx)} and query_x {_shape(qx)} "
                             f"have different feature shapes")
        if not (sx.is_floating_point() and qx.is_floating_point()):
            ids = "" if sx.is_complex() or sx.dtype == torch.bool else (
                "; integer inputs such as token ids go in as floats (x.float(), exact below "
                "2**24) and the model's forward casts them back (x.long()) before its "
                "nn.Embedding, as metaloop's text models do")
            raise ValueError(f"TaskBatch inputs must be floating point, got support_x "
                             f"{sx.dtype}, query_x {qx.dtype}{ids}")
        if sx.dtype != qx.dtype:
            raise ValueError(f"TaskBatch support_x ({sx.dtype}) and query_x ({qx.dtype}) must "
                             f"have the same dtype; TaskBatch.to(dtype=...) casts both")
        devices = {n: getattr(self, n).device for n in names}
        if self.classes is not None:
            devices["classes"] = self.classes.device
        if len(set(devices.values())) != 1:
            raise ValueError("TaskBatch fields are on different devices: "
                             + ", ".join(f"{n} {d}" for n, d in devices.items())
                             + "; TaskBatch.to(device) moves them together")
        for xn, yn in (("support_x", "support_y"), ("query_x", "query_y")):
            if getattr(self, yn).shape[1] != getattr(self, xn).shape[1]:
                raise ValueError(f"TaskBatch.{yn} {_shape(getattr(self, yn))} does not match "
                                 f"{xn} {_shape(getattr(self, xn))} in examples per task")
        if sy.is_floating_point() != qy.is_floating_point():
            raise ValueError(f"TaskBatch support_y ({sy.dtype}) and query_y ({qy.dtype}) must "
                             f"both be int64 labels or both float targets")
        if sy.is_floating_point():
            self._check_regression()
        else:
            self._check_classification()

    def _check_regression(self) -> None:
        sy, qy = self.support_y, self.query_y
        if sy.dim() != 3 or qy.dim() != 3 or sy.shape[2] != qy.shape[2]:
            labels = ("; classification labels must be int64 (y.long())"
                      if sy.dim() == 2 or qy.dim() == 2 else "")
            raise ValueError(f"regression targets must be [B, S, out] and [B, Q, out], got "
                             f"{sy.dtype} support_y {_shape(sy)}, query_y {_shape(qy)}"
                             f"{labels}")
        if sy.dtype != qy.dtype:
            raise ValueError(f"TaskBatch support_y ({sy.dtype}) and query_y ({qy.dtype}) must "
                             f"have the same dtype; TaskBatch.to(dtype=...) casts both")
        if self.classes is not None:
            raise ValueError("TaskBatch.classes is only meaningful for classification")

    def _check_classification(self) -> None:
        sy, qy = self.support_y, self.query_y
        for name, y in (("support_y", sy), ("query_y", qy)):
            if y.dtype != torch.int64:
                raise ValueError(f"TaskBatch.{name} labels must be int64, got {y.dtype}")
            if y.dim() != 2:
                raise ValueError(f"TaskBatch.{name} labels must be [B, N], got {_shape(y)}")
        lo = min(int(sy.min()), int(qy.min()))
        if lo < 0:
            raise ValueError(f"TaskBatch labels must be >= 0, found {lo}")
        ways = int(sy.max()) + 1
        # each query label looked up among its task's sorted support labels
        have = sy.sort(1).values                                         # [B, S]
        at = torch.searchsorted(have, qy.contiguous())                   # [B, Q]
        missing = have.gather(1, at.clamp_max_(sy.shape[1] - 1)) != qy   # [B, Q]
        bad = missing.any(1).nonzero()
        if len(bad):
            i = int(bad[0])
            label = int(qy[i][missing[i]][0])
            shown = sy[i].unique().tolist()
            listed = ", ".join(str(v) for v in shown[:10]) + (", ..." if len(shown) > 10 else "")
            raise ValueError(f"TaskBatch.query_y of task {i} has label {label} that no "
                             f"support example has (its support labels are {{{listed}}})")
        if self.classes is not None:
            c = self.classes
            if c.dtype != torch.int64 or c.dim() != 2 or c.shape[0] != sy.shape[0]:
                raise ValueError(f"TaskBatch.classes must be int64 [B, ways>={ways}], got "
                                 f"{c.dtype} {_shape(c)}")
            if c.shape[1] < ways:
                raise ValueError(f"TaskBatch labels go up to {ways - 1} but classes "
                                 f"{_shape(c)} names {c.shape[1]} classes per task: labels "
                                 f"are task-local, in [0, {c.shape[1]})")

    @property
    def num_tasks(self) -> int:
        """B, the number of tasks."""
        return self.support_x.shape[0]

    def __len__(self) -> int:
        return self.num_tasks

    @property
    def is_classification(self) -> bool:
        return not self.support_y.is_floating_point()

    @property
    def ways(self) -> int:
        """Number of classes per task (classification only)."""
        if not self.is_classification:
            raise ValueError("ways is undefined for a regression TaskBatch")
        return int(self.support_y.max()) + 1

    def task(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The i-th task as (support_x [S,...], support_y, query_x [Q,...], query_y).

        ``i`` is an int in ``[-B, B)``; negative values count from the end, as for a Python
        sequence (``task(-1)`` is the last task).

        Raises:
            ValueError: ``i`` not an int (a float, a bool) or outside ``[-B, B)``.
        """
        b = self.num_tasks
        try:            # an int, np.int64 or one-element int tensor; not a bool (1) or float
            index = None if isinstance(i, bool) else operator.index(i)
        except TypeError:
            index = None
        if index is None:
            raise ValueError(f"TaskBatch.task(i): i must be an int task index in [-{b}, {b}) "
                             f"(the batch has {b} tasks), got {type(i).__name__} {i!r}")
        if not -b <= index < b:
            raise ValueError(f"TaskBatch.task(i): i={index} is out of range: the batch has "
                             f"{b} tasks, indices in [-{b}, {b})")
        return (self.support_x[index], self.support_y[index], self.query_x[index],
                self.query_y[index])

    def slice(self, start: int, stop: int) -> TaskBatch:
        """Tasks ``start:stop`` as a new TaskBatch (used to shard a meta-batch across ranks)."""
        c = None if self.classes is None else self.classes[start:stop]
        # inside valid_by_construction() the slice of a valid batch is not checked again
        # (the checks read labels back to the host)
        make = _unchecked_batch if values_trusted() else TaskBatch
        return make(self.support_x[start:stop], self.support_y[start:stop],
                    self.query_x[start:stop], self.query_y[start:stop], c)

    def to(self, device=None, dtype=None) -> TaskBatch:
        """Move to a device and/or cast the floating-point fields (inputs, regression
        targets) to ``dtype``; labels and ``classes`` stay int64.

        Takes the forms ``Tensor.to`` takes for these: ``to(device)``, ``to(dtype)``,
        ``to(device, dtype)``, and the same by keyword.

        Raises:
            TypeError: a ``dtype`` that is not a ``torch.dtype``, or a dtype given twice
                (``to(torch.float64, dtype=...)``).
            ValueError: a ``dtype`` that is not floating point.
        """
        if isinstance(device, torch.dtype):              # to(dtype), as Tensor.to(dtype)
            if dtype is not None:
                raise TypeError(f"TaskBatch.to got two dtypes, {device} and {dtype}; it takes "
                                f"to(device), to(dtype), to(device, dtype)")
            device, dtype = None, device
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise TypeError(f"TaskBatch.to dtype must be a torch.dtype, got "
                            f"{type(dtype).__name__} {dtype!r}; it takes to(device), "
                            f"to(dtype), to(device, dtype)")
        if dtype is not None and not dtype.is_floating_point:
            raise ValueError(f"TaskBatch.to dtype casts the floating-point fields and must be "
                             f"floating point, got {dtype}")

        def mv(t):
            if t is None:
                return None
            return t.to(device=device, dtype=dtype if t.is_floating_point() else None)
        return TaskBatch(mv(self.support_x), mv(self.support_y), mv(self.query_x),
                         mv(self.query_y), mv(self.classes))
