"""``fit_probe``: a linear probe on ANY feature extractor, in one call.

``linear_probe`` (approach 1) works on a network with a linear ``head`` and
``forward(x, head=False)``; ``fit_probe`` takes any callable ``x [N, ...] -> [N, D]`` (a
backbone, a lambda around a pretrained model, a meta-learned R2D2 / MetaOptNet backbone) and
reuses the same solvers through ``metaloop.adapt.heads.fit_head``: ``ridge_head`` in closed
form, ``newton_head`` (logistic), or Adam.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from metaloop.adapt.heads import check_solver_options, fit_head
from metaloop.func.params import eval_mode

__all__ = ["Probe", "fit_probe"]


@dataclass(frozen=True)
class Probe:
    """A fitted probe: ``probe(x) = feature_fn(x) @ weight.T + bias``, logits ``[N, C]``.

    Attributes:
        feature_fn: the frozen feature extractor (called under ``no_grad``; an
            ``nn.Module`` in eval mode, as in ``fit_probe``).
        weight: ``[C, D]``.
        bias: ``[C]``.
    """

    feature_fn: Callable[[torch.Tensor], torch.Tensor]
    weight: torch.Tensor
    bias: torch.Tensor

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with eval_mode(self.feature_fn):
            return F.linear(self.feature_fn(x), self.weight, self.bias)  # [N, C]


def fit_probe(feature_fn: Callable[[torch.Tensor], torch.Tensor], support_x: torch.Tensor,
              support_y: torch.Tensor, n_classes: int, solver: str = "logistic",
              lam: float = 1.0, **solver_kw) -> Probe:
    """Fit a linear classifier on frozen features: ``fit_probe(f, x, y, C)(x_new)`` -> logits.

    Args:
        feature_fn: ``[N, ...] -> [N, D]``; never differentiated, never modified. An
            ``nn.Module`` is called in eval mode (no dropout, torch BatchNorm normalising
            with its running statistics and never updating them), its own mode restored
            afterwards; a plain callable is called as it is (put a module it wraps in eval
            mode yourself). (A network with batch-statistics BatchNorm, such as Conv4,
            normalises each call's batch.)
        support_x: ``[S, ...]``.
        support_y: int64 ``[S]`` in ``[0, n_classes)``.
        n_classes: C.
        solver: ``"logistic"`` (Newton steps), ``"ridge"`` (closed form) or ``"sgd"``.
        lam: ridge strength > 0 (``"logistic"``, ``"ridge"``; leave it at 1.0 for
            ``"sgd"``).
        solver_kw: ``steps``, ``lr`` (see ``fit_head``: an option the solver does not use
            is refused).

    Returns:
        a :class:`Probe` (float16 / bfloat16 features: the head is solved in float32 and
        kept in their dtype).

    Raises:
        ValueError: from ``fit_head`` and the solvers: bad shapes, ``lam <= 0``, ``steps``
            < 1, an option the solver does not use, labels out of range, a class without a
            support example (logistic).
    """
    check_solver_options("fit_probe", solver_kw)
    with torch.no_grad(), eval_mode(feature_fn):
        features = feature_fn(support_x)                                 # [S, D]
    weight, bias = fit_head(features, support_y, n_classes, solver, lam, **solver_kw,
                            who="fit_probe")
    return Probe(feature_fn, weight.detach(), bias.detach())
