"""Forgetting metrics on the accuracy matrix, with the papers' definitions.

``R[i, j]`` is the accuracy on experience ``j`` after training on experience ``i`` (rows:
training time, columns: the experience tested), for ``T`` experiences:

- **accuracy matrix** ``R`` ``[T, T]``;
- **average accuracy** (Lopez-Paz & Ranzato 2017): ``ACC = mean_j R[T-1, j]``, every
  experience weighted alike (Avalanche's ``Top1_Acc_Stream`` pools the test examples
  instead, so it differs when the test sets differ in size);
- **experience forgetting**, for ``j < T-1``: the best accuracy on ``j`` at an earlier
  time, from when it was learned, minus the final one,
  ``f_j = max_{j <= l < T-1} R[l, j] - R[T-1, j]``: Chaudhry et al. (2018)'s forgetting with
  the max restricted to ``l >= j`` (theirs runs over every ``l < T-1``). The two differ only
  under forward transfer, when ``j`` scored higher before it was trained on than at any time
  since; Avalanche's ``ExperienceForgetting`` takes ``R[j, j]`` instead of the max, so it is
  ``-BWT`` per experience;
- **stream forgetting**: ``mean_{j < T-1} f_j``;
- **backward transfer** (Lopez-Paz & Ranzato 2017; Avalanche's ``StreamBWT``):
  ``BWT = mean_{j < T-1} (R[T-1, j] - R[j, j])``, negative when learning later experiences
  hurt earlier ones.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import cast

import torch


def accuracy_matrix(rows: Sequence[Mapping[str, float] | Sequence[float]],
                    names: Sequence[str] | None = None) -> torch.Tensor:
    """Stack per-time accuracies into ``R`` ``[T, T]`` (float64).

    Args:
        rows: row ``i`` holds the accuracies after training on experience ``i``: a sequence
            of ``T`` numbers, or a mapping from experience name to accuracy.
        names: the experience order (required for mapping rows).

    Raises:
        ValueError: rows that are not a list/tuple (or a ``[T, T]`` tensor or array, taken
            row by row), ragged or non-square rows, missing or repeated names, a mapping row
            with a name not in ``names``, a value that is not a real number (a string, a
            bool, a complex number: what ``check_matrix`` refuses in a tensor; the message
            names its row and column), or values outside [0, 1].
    """
    if torch.is_tensor(rows) or (hasattr(rows, "__array__") and hasattr(rows, "shape")):
        try:
            t = torch.as_tensor(rows)
        except (TypeError, ValueError, RuntimeError) as e:
            raise ValueError(f"accuracy_matrix cannot read an array of dtype "
                             f"{getattr(rows, 'dtype', '?')} as accuracies: {e}") from e
        if t.dim() != 2:
            raise ValueError(f"accuracy_matrix rows given as a tensor or array must be 2-d "
                             f"[T, T], got shape {list(t.shape)}")
        if t.dtype == torch.bool or t.is_complex():
            check_matrix(t)                             # refuses the dtype, naming it
        rows = t.tolist()
    elif isinstance(rows, (str, bytes, Mapping)) or not isinstance(rows, Sequence):
        raise ValueError(f"accuracy_matrix needs rows as a list of T rows (each a sequence of "
                         f"T numbers or a mapping name -> accuracy), got "
                         f"{type(rows).__name__}")
    for i, row in enumerate(rows):
        if isinstance(row, (str, bytes)) or not (isinstance(row, (Sequence, Mapping))
                                                 or torch.is_tensor(row)
                                                 or hasattr(row, "__array__")):
            raise ValueError(f"accuracy row {i} is {row!r} ({type(row).__name__}); each row is "
                             f"a sequence of T numbers or a mapping name -> accuracy")
    if names is not None:
        names = list(names)
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"accuracy_matrix names must be distinct, got {repeated} more "
                             f"than once in {names}")
        missing = [(i, n) for i, r in enumerate(rows) for n in names
                   if not isinstance(r, Mapping) or n not in r]
        if missing:
            raise ValueError(f"accuracy rows lack (row, experience) {missing[:5]}")
        known = set(names)
        extra = [(i, k) for i, r in enumerate(rows) for k in cast(Mapping, r) if k not in known]
        if extra:
            raise ValueError(f"accuracy rows have (row, experience) {extra[:5]}, not in names "
                             f"{names}: name every experience of the matrix, once")
        values = [[_accuracy(i, n, cast(Mapping[str, float], r)[n]) for n in names]
                  for i, r in enumerate(rows)]                           # all mappings
    elif any(isinstance(r, Mapping) for r in rows):
        raise ValueError("accuracy_matrix needs names= to order mapping rows")
    else:
        values = [[_accuracy(i, j, v) for j, v in enumerate(row)] for i, row in enumerate(rows)]
    lengths = {len(r) for r in values}
    if not values or lengths != {len(values)}:
        raise ValueError(f"accuracy_matrix needs T rows of T values, got {len(values)} rows of "
                         f"lengths {sorted(lengths)}")
    r = torch.tensor(values, dtype=torch.float64)                       # [T, T]
    return check_matrix(r)


def _accuracy(row: int, column: int | str, value) -> float:
    """One accuracy as a float: a real number (Python's or NumPy's, or a 0-d real tensor or
    array), not a bool, a string or a complex number, which a tensor of accuracies cannot
    hold either (``check_matrix``)."""
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    if (torch.is_tensor(value) or hasattr(value, "__array__")) and \
            not isinstance(value, str) and getattr(value, "shape", None) == ():
        try:
            t = torch.as_tensor(value)
        except (TypeError, ValueError, RuntimeError):      # a 0-d array of strings
            t = None
        if t is not None and t.dtype != torch.bool and not t.is_complex():
            return float(t)
    raise ValueError(f"accuracy row {row}, column {column!r} is {value!r} "
                     f"({type(value).__name__}): accuracies must be real numbers in [0, 1], "
                     f"not strings, bools or complex numbers")


def check_matrix(r: torch.Tensor) -> torch.Tensor:
    """Return ``r`` if it is a square ``[T, T]`` matrix of accuracies in [0, 1].

    An integer matrix (0/1 accuracies of a tiny test set) is returned as float64; a
    floating-point one as it is.

    Raises:
        ValueError: not a non-empty square 2-d tensor, a bool or complex dtype, or values
            outside [0, 1] (percentages, NaN).
    """
    if not torch.is_tensor(r) or r.dim() != 2 or r.shape[0] != r.shape[1] or r.shape[0] == 0:
        shape = list(r.shape) if torch.is_tensor(r) else type(r).__name__
        raise ValueError(f"an accuracy matrix must be a square [T, T] tensor, got {shape}")
    if r.dtype == torch.bool or r.is_complex():
        raise ValueError(f"an accuracy matrix must hold accuracies in [0, 1] as real numbers, "
                         f"got dtype {r.dtype}")
    if not r.is_floating_point():
        r = r.to(torch.float64)
    inside = (r >= 0) & (r <= 1)                                         # [T, T]
    if not bool(inside.all()):
        i, j = (int(v) for v in (~inside).nonzero()[0])
        raise ValueError(f"accuracies must be in [0, 1] (not percentages, not NaN), got "
                         f"{r.tolist()}: row {i}, column {j} is {float(r[i, j])}")
    return r


def _need_two(r: torch.Tensor, what: str) -> torch.Tensor:
    r = check_matrix(r)
    if r.shape[0] < 2:
        raise ValueError(f"{what} needs at least two experiences, got a 1x1 matrix")
    return r


def average_accuracy(r: torch.Tensor) -> float:
    """``mean_j R[T-1, j]``: accuracy over all experiences after the last one.

    Args:
        r: the accuracy matrix ``[T, T]``: ``R[i, j]`` is the accuracy on experience ``j``
            after learning experience ``i`` (values in [0, 1]).
    """
    return float(check_matrix(r)[-1].mean())


def experience_forgetting(r: torch.Tensor) -> torch.Tensor:
    """``f_j = max_{j <= l < T-1} R[l, j] - R[T-1, j]`` for ``j < T-1``, ``[T-1]``.

    Chaudhry et al. (2018)'s forgetting with the max taken from when ``j`` was learned
    (``l >= j``); theirs takes it over every ``l < T-1``, which differs only when ``j``
    scored higher before it was trained on (forward transfer) than at any time since.

    Args:
        r: the accuracy matrix ``[T, T]``: ``R[i, j]`` is the accuracy on experience ``j``
            after learning experience ``i`` (values in [0, 1]), T >= 2.

    Returns:
        ``[T-1]``: how much of each earlier experience's best accuracy is lost at the end.
    """
    r = _need_two(r, "forgetting")
    t = r.shape[0]
    best = torch.stack([r[j:t - 1, j].max() for j in range(t - 1)])   # [T-1]
    return best - r[-1, :-1]


def stream_forgetting(r: torch.Tensor) -> float:
    """Mean experience forgetting over the experiences before the last.

    Args:
        r: the accuracy matrix ``[T, T]``: ``R[i, j]`` is the accuracy on experience ``j``
            after learning experience ``i`` (values in [0, 1]), T >= 2.

    Returns:
        ``mean_{j < T-1} f_j`` (``experience_forgetting``), a float.
    """
    return float(experience_forgetting(r).mean())


def backward_transfer(r: torch.Tensor) -> float:
    """``mean_{j < T-1} (R[T-1, j] - R[j, j])``.

    Args:
        r: the accuracy matrix ``[T, T]``: ``R[i, j]`` is the accuracy on experience ``j``
            after learning experience ``i`` (values in [0, 1]), T >= 2.
    """
    r = _need_two(r, "backward transfer")
    return float((r[-1, :-1] - r.diagonal()[:-1]).mean())


def summarize(r: torch.Tensor) -> dict[str, float]:
    """The table's numbers from one accuracy matrix.

    Args:
        r: the accuracy matrix ``[T, T]``: ``R[i, j]`` is the accuracy on experience ``j``
            after learning experience ``i`` (values in [0, 1]), T >= 2.

    Returns:
        ``new_accuracy`` ``R[T-1, T-1]``; ``old_accuracy`` ``mean_{j<T-1} R[T-1, j]``;
        ``retained`` ``sum_{j<T-1} R[T-1, j] / sum_{j<T-1} R[j, j]`` (the fraction of the
        earlier experiences' accuracy, right after each was learned, that is kept; NaN if
        that is 0); ``forgetting``; ``bwt``; ``average_accuracy``.
    """
    r = _need_two(r, "summarize")
    learned = float(r.diagonal()[:-1].sum())
    retained = float(r[-1, :-1].sum()) / learned if learned > 0 else math.nan
    return {"new_accuracy": float(r[-1, -1]), "old_accuracy": float(r[-1, :-1].mean()),
            "retained": retained, "forgetting": stream_forgetting(r),
            "bwt": backward_transfer(r), "average_accuracy": average_accuracy(r)}
