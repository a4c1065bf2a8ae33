"""Input validation shared by the closed-form and Newton heads. Every failure is a ValueError
that names the offending argument and its shape, dtype or value."""

from __future__ import annotations

import math
import numbers

import torch

from metaloop.tasks.batch import values_trusted

_LINALG_DTYPES = (torch.float32, torch.float64)


def shape_str(t: torch.Tensor) -> str:
    """``[2, 5, 64]`` for a tensor of that shape."""
    return "[" + ", ".join(str(s) for s in t.shape) + "]"


def check_features(fn: str, features: object) -> None:
    """features must be a float32/float64 tensor ``[B, N, D]`` with B, N, D >= 1."""
    if not isinstance(features, torch.Tensor):
        raise ValueError(f"{fn}: features must be a torch.Tensor [B, N, D], "
                         f"got {type(features).__name__}")
    if features.dim() != 3:
        raise ValueError(f"{fn}: features must be [B, N, D], got shape {shape_str(features)}")
    if min(features.shape) == 0:
        raise ValueError(f"{fn}: features {shape_str(features)} has an empty dimension; "
                         f"B, N and D must all be >= 1")
    if features.dtype not in _LINALG_DTYPES:
        raise ValueError(f"{fn}: features must be float32 or float64 (the solves need it), "
                         f"got {features.dtype}; call .float() or .double() first")


def check_targets(fn: str, targets: object, features: torch.Tensor) -> None:
    """Regression / one-hot targets ``[B, N, C]`` matching features ``[B, N, D]``."""
    if not isinstance(targets, torch.Tensor):
        raise ValueError(f"{fn}: targets must be a torch.Tensor [B, N, C], "
                         f"got {type(targets).__name__}")
    if targets.dim() != 3 or targets.shape[:2] != features.shape[:2] or targets.shape[2] == 0:
        raise ValueError(f"{fn}: targets must be [B, N, C] with C >= 1 matching features "
                         f"{shape_str(features)}, got targets {shape_str(targets)}")
    if targets.dtype != features.dtype:
        raise ValueError(f"{fn}: targets dtype {targets.dtype} differs from features dtype "
                         f"{features.dtype}")
    if targets.device != features.device:
        raise ValueError(f"{fn}: targets on {targets.device} but features on {features.device}")


def check_lam(fn: str, lam: object, features: torch.Tensor) -> float | torch.Tensor:
    """A positive, finite ridge strength: a Python real or a 0-dim float tensor.

    Returns:
        ``lam`` as a float, or as a 0-dim tensor cast to the dtype and device of ``features``
        (the cast keeps any autograd graph, so gradients still reach the caller's tensor).
    """
    if isinstance(lam, torch.Tensor):
        if lam.dim() != 0 or not lam.is_floating_point():
            raise ValueError(f"{fn}: lam must be a float or a 0-dim float tensor, got a "
                             f"{lam.dtype} tensor of shape {shape_str(lam)}")
        if values_trusted():             # valid by construction: no read back to the host
            return lam.to(dtype=features.dtype, device=features.device)
        value = float(lam.detach())
    elif isinstance(lam, numbers.Real) and not isinstance(lam, bool):
        value = float(lam)
    else:
        raise ValueError(f"{fn}: lam must be a float or a 0-dim float tensor, "
                         f"got {type(lam).__name__}")
    if not (math.isfinite(value) and value > 0.0):
        raise ValueError(f"{fn}: lam must be finite and > 0, got lam={value!r}")
    if isinstance(lam, torch.Tensor):
        return lam.to(dtype=features.dtype, device=features.device)
    return value


def check_labels(fn: str, labels: object, features: torch.Tensor, n_classes: object) -> None:
    """int64 labels ``[B, N]`` in ``[0, n_classes)``, every class present in every task."""
    if not isinstance(n_classes, int) or isinstance(n_classes, bool) or n_classes < 2:
        raise ValueError(f"{fn}: n_classes must be an int >= 2, got {n_classes!r}")
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"{fn}: labels must be an int64 torch.Tensor [B, N], "
                         f"got {type(labels).__name__}")
    if labels.dtype != torch.int64:
        raise ValueError(f"{fn}: labels must be int64, got {labels.dtype}")
    if labels.shape != features.shape[:2]:
        b, n = features.shape[:2]
        raise ValueError(f"{fn}: labels must be [B, N] = [{b}, {n}] to match features "
                         f"{shape_str(features)}, got {shape_str(labels)}")
    if labels.device != features.device:
        raise ValueError(f"{fn}: labels on {labels.device} but features on {features.device}")
    if values_trusted():                 # valid by construction: no read back to the host
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= n_classes:
        bad = lo if lo < 0 else hi
        raise ValueError(f"{fn}: labels must lie in [0, n_classes={n_classes}), found {bad}")
    counts = torch.zeros(labels.shape[0], n_classes, dtype=torch.int64, device=labels.device)
    counts.scatter_add_(1, labels, torch.ones_like(labels))                # [B, C]
    empty = (counts == 0).nonzero().tolist()
    if empty:
        shown = ", ".join(f"task {b} class {c}" for b, c in empty[:5])
        more = f" and {len(empty) - 5} more" if len(empty) > 5 else ""
        raise ValueError(f"{fn}: every class needs at least one support example, but none "
                         f"has label ({shown}{more}); n_classes={n_classes}")


def check_int(fn: str, name: str, value: object, minimum: int) -> None:
    """value must be an int >= minimum."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{fn}: {name} must be an int >= {minimum}, got {value!r}")


def check_choice(fn: str, name: str, value: object, choices: tuple[str, ...]) -> None:
    """value must be one of choices."""
    if value not in choices:
        raise ValueError(f"{fn}: {name} must be one of {choices}, got {value!r}")
