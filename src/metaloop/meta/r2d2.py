"""R2D2 (Bertinetto et al. 2019): a closed-form ridge-regression head on meta-learned features.

Per task, the head regresses the one-hot support labels on the support features,
``(W, b) = argmin ||Phi_s W + 1 b^T - Y||^2 + lam ||W||^2`` (``ridge_head``: Woodbury form
when S < D), and the query logits are ``scale * (Phi_q W + b)``. The backbone, the output
scale and lam are all meta-learned (lam and the scale as logarithms, so they stay positive).

The bias. Bertinetto et al.'s output layer is ``alpha * Phi_q W + beta`` with scalars alpha
and beta; a scalar beta added to every logit cancels in the softmax, so it has no gradient
under cross-entropy. Here the bias is instead the ridge's unpenalised per-class intercept
``b [C]``, solved in closed form with W (``intercept=True``, the default); with
``intercept=False`` the head is the paper's plain ``Phi_q W``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from metaloop.adapt._checks import check_labels
from metaloop.adapt.ridge_head import ridge_head
from metaloop.func.losses import cross_entropy
from metaloop.meta._head_learner import HeadLearner, HeadNet, check_positive

__all__ = ["R2D2", "RidgeSolver"]


@dataclass(frozen=True)
class RidgeSolver:
    """Ridge regression on one-hot targets, per task: the inner problem of R2D2.

    Args:
        intercept: fit an unpenalised per-class bias ``b`` with W.

    Attributes:
        loss_fn: the query loss (cross-entropy), as ``evaluate`` expects of ``inner``.
        method: the learner's name in its error messages.
        steps: 1; the solve is closed-form (``evaluate`` reuses it at every step count).
    """

    intercept: bool = True
    steps: int = 1
    loss_fn: ClassVar = staticmethod(cross_entropy)
    method: ClassVar[str] = "R2D2"

    def __call__(self, features: torch.Tensor, labels: torch.Tensor, ways: int,
                 lam: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``W [B, D, C]`` and ``b [B, C]`` (None without intercept) for features
        ``[B, S, D]`` and int64 labels ``[B, S]`` in ``[0, ways)``.

        Raises:
            ValueError: a class in ``[0, ways)`` with no support example in some task
                (``check_labels``, as MetaOptNet's and ProtoNet's heads refuse it): its
                one-hot column would be all zeros, a phantom class scored in every softmax.
        """
        check_labels("R2D2", labels, features, ways)
        y = F.one_hot(labels, ways).to(features.dtype)               # [B, S, C]
        if self.intercept:
            return ridge_head(features, y, lam, intercept=True)
        return ridge_head(features, y, lam), None


def R2D2(model: nn.Module, lam: float = 1.0, scale: float = 10.0, learn_lam: bool = True,
         intercept: bool = True, ways: int | None = None, batching: str = "auto",
         transductive: bool = True, learn_scale: bool = True) -> HeadLearner:
    """R2D2: meta-learn a feature extractor for a per-task closed-form ridge head.

    Args:
        model: the backbone, e.g. ``Conv4`` or ``ResNet12`` (called as
            ``model(x, head=False)``); any module mapping ``[N, ...]`` to features ``[N, D]``.
        lam: initial ridge strength (> 0); meta-learned as ``exp(log_lam)`` unless
            ``learn_lam`` is False.
        scale: initial output scale (> 0), meta-learned as ``exp(log_scale)``. Ridge outputs
            of one-hot targets lie in about [0, 1], so logits need a scale of order 10.
        learn_lam: meta-learn lam (the paper does).
        intercept: solve an unpenalised per-class bias with W (see the module docstring).
        ways: classes per task; None infers ``max(support_y) + 1``.
        batching: ``"loop"``, ``"vmap"`` or ``"auto"``, see ``HeadLearner``.
        transductive: False: each query normalised with its support set's BatchNorm
            statistics, in training and testing (see ``HeadLearner``).
        learn_scale: meta-learn the output scale (the paper's alpha, default); False keeps
            ``scale`` fixed (``log_scale`` a buffer).

    Returns:
        a ``HeadLearner`` whose ``model`` is a ``HeadNet`` around ``model`` (parameters
        ``backbone.*``, ``log_scale`` unless fixed, ``log_lam``) and whose ``inner`` is a
        ``RidgeSolver``.

    Raises:
        ValueError: lam or scale not a finite number > 0, ``learn_lam``, ``learn_scale``,
            ``intercept`` or ``transductive`` not True or False (a string such as "False"
            would read as True; ``learn_lam`` may also be 0 or 1), or a bad ``ways`` /
            ``batching``.
    """
    check_positive("R2D2", "lam", lam)
    check_positive("R2D2", "scale", scale)
    if not isinstance(intercept, bool):
        raise ValueError(f"R2D2: intercept must be a bool, got {intercept!r}")
    net = HeadNet(model, scale=scale, lam=lam, learn_lam=learn_lam, learn_scale=learn_scale)
    return HeadLearner(net, RidgeSolver(intercept=intercept), ways=ways, batching=batching,
                       transductive=transductive)
