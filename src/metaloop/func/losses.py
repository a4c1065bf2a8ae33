"""Losses (means over examples) and metrics, by name."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mse(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean squared error over all elements: pred, target ``[N, out]``."""
    return F.mse_loss(pred, target)


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy: logits ``[N, C]``, labels int64 ``[N]``."""
    return F.cross_entropy(logits, labels)


LOSSES: dict[str, Loss] = {"mse": mse, "ce": cross_entropy, "cross_entropy": cross_entropy}


def get_loss(loss: str | Loss) -> Loss:
    """Resolve a loss name ("mse", "ce") or pass a callable through."""
    if callable(loss):
        return loss
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)} or a callable")
    return LOSSES[loss]


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Fraction of argmax predictions equal to labels: logits ``[N, C]``, labels ``[N]``."""
    return (logits.argmax(-1) == labels).to(logits.dtype).mean()
