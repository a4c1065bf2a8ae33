"""Prototypical Networks (Snell et al. 2017) as a closed-form head on meta-learned features.

Per task, each class's prototype is the mean of its support features and the query logits
are ``-scale * ||Phi_q - c_k||^2``, computed as the linear head ``proto_head`` gives (``W =
2 C^T``, ``b = -||c||^2``; the ``||Phi_q||^2`` it drops is the same for every class and
cancels in the softmax). It is R2D2's learner with the ridge solve replaced by a mean: the
backbone and the output scale (``exp(log_scale)``) are meta-learned, and there is no ridge
strength. Snell et al. have no output scale: ``scale=1, learn_scale=False`` gives the
paper's plain ``-||q - c_k||^2``; with ``learn_scale`` (the default) ``scale=1`` is only
where the meta-learned ``log_scale`` starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from metaloop.adapt.proto_head import (
    REFINE_TEMPERATURE,
    REFINE_WEIGHT,
    proto_head,
    refine_prototypes_jointly,
)
from metaloop.func.losses import cross_entropy
from metaloop.meta._head_learner import HeadLearner, HeadNet, check_positive

__all__ = ["ProtoNet", "PrototypeSolver"]


@dataclass(frozen=True)
class PrototypeSolver:
    """Class means of the support features as a linear head: ProtoNet's inner problem.

    Attributes:
        loss_fn: the query loss (cross-entropy), as ``evaluate`` expects of ``inner``.
        method: the learner's name in its error messages.
        steps: 1; the head is closed-form (``evaluate`` reuses it at every step count).
    """

    steps: int = 1
    loss_fn: ClassVar = staticmethod(cross_entropy)
    method: ClassVar[str] = "ProtoNet"

    def __call__(self, features: torch.Tensor, labels: torch.Tensor, ways: int,
                 lam: float | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``W [B, D, C]`` and ``b [B, C]`` for features ``[B, S, D]`` and int64 labels
        ``[B, S]`` in ``[0, ways)``; ``lam`` is ignored (there is no regulariser).

        Raises:
            ValueError: a class of ``[0, ways)`` with no support example in some task.
        """
        return proto_head(features, labels, ways)

    def refine(self, W: torch.Tensor, b: torch.Tensor, queries: torch.Tensor,
               scale: float | torch.Tensor, steps: int, temperature: float,
               weight: float) -> tuple[torch.Tensor, torch.Tensor]:
        """The head ``(W [B, D, C], b [B, C])`` of the prototypes refined with the query
        features ``[B, M, D]`` by :func:`metaloop.adapt.refine_prototypes` (transductive)."""
        return self.refine_jointly([(W, b)], [queries], [scale], steps, temperature, weight)[0]

    @staticmethod
    def refine_jointly(heads: list, queries: list, scales: list, steps: int,
                       temperature: float, weight: float) -> list:
        """``refine`` for the members of an ensemble at once, with one shared assignment of
        the queries (:func:`metaloop.adapt.refine_prototypes_jointly`): member i's head
        ``(W_i [B, D_i, C], b_i [B, C])``, query features ``[B, M, D_i]`` and scale; returns
        the refined heads in order."""
        protos = refine_prototypes_jointly([W.mT / 2 for W, _ in heads], queries, scales,
                                           steps, temperature, weight)       # [B, C, D_i]
        return [(2 * P.mT, -(P * P).sum(-1)) for P in protos]


def ProtoNet(model: nn.Module, scale: float = 1.0, ways: int | None = None,
             batching: str = "auto", transductive: bool = True, refine: int = 0,
             refine_temperature: float = REFINE_TEMPERATURE,
             refine_weight: float = REFINE_WEIGHT, learn_scale: bool = True) -> HeadLearner:
    """Prototypical Networks: meta-learn a feature extractor for a nearest-class-mean head.

    Args:
        model: the backbone, e.g. ``Conv4`` or ``ResNet12`` (called as
            ``model(x, head=False)``); any module mapping ``[N, ...]`` to features ``[N, D]``.
        scale: output scale (> 0): its initial value, meta-learned as ``exp(log_scale)``,
            or, with ``learn_scale=False``, its fixed value (Snell et al. have no scale:
            ``scale=1, learn_scale=False`` gives their logits ``-||q - c_k||^2``).
        ways: classes per task; None infers ``max(support_y) + 1``. Every class needs a
            support example.
        batching: ``"loop"``, ``"vmap"`` or ``"auto"``, see ``HeadLearner``.
        transductive: False: each query normalised with its support set's BatchNorm
            statistics, in training and testing (see ``HeadLearner``).
        refine: soft k-means rounds that refine the prototypes with a task's unlabelled
            queries before scoring them (``metaloop.adapt.refine_prototypes``); 0: off. Set
            here, it applies in meta-training (``meta_loss``, the gradient flowing through
            the rounds) as in testing: a config's ``method.refine``. ``metaloop eval`` sets
            it for testing from ``eval.refine``.
        refine_temperature: the temperature of the rounds' assignment of queries (> 0).
        refine_weight: the query set's weight against the support set's in the rounds
            (> 0).
        learn_scale: meta-learn the output scale (default); False keeps ``scale`` fixed
            (``log_scale`` a buffer, in the state dict but not a parameter).

    Returns:
        a ``HeadLearner`` whose ``model`` is a ``HeadNet`` around ``model`` (parameters
        ``backbone.*`` and, unless fixed, ``log_scale``) and whose ``inner`` is a
        ``PrototypeSolver``.

    Raises:
        ValueError: scale not a finite number > 0, ``learn_scale`` not True or False, or a
            bad ``ways`` / ``batching``.
    """
    check_positive("ProtoNet", "scale", scale)
    net = HeadNet(model, scale=scale, lam=1.0, learn_lam=False, learn_scale=learn_scale)
    return HeadLearner(net, PrototypeSolver(), ways=ways, batching=batching,
                       transductive=transductive, refine=refine,
                       refine_temperature=refine_temperature, refine_weight=refine_weight)
