"""MetaOptNet (Lee et al. 2019): a convex classification head solved per task, differentiably.

Per task, ``W = argmin_W sum_i loss(W^T phi_i, y_i) + (lam / 2) ||W||^2`` on the support
features, with ``loss`` the multinomial logistic loss (``head="logistic"``) or the
Weston-Watkins squared hinge (``head="svm"``), solved by ``newton_head``'s damped Newton
steps; the query logits are ``scale * Phi_q W``. The meta-gradient reaches the backbone
through the query features and, by unrolling the Newton steps (``grad="unrolled"``) or by
the implicit function theorem at the solution (``grad="implicit"``), through the support
features. The backbone and the output scale (as ``exp(log_scale)``) are meta-learned; lam is
a fixed hyper-parameter, as the paper's C is, but its default 1 is metaloop's own value (the
paper's C = 0.1 corresponds to about lam = 10, since C = 1 / lam).

``head="svm"`` is not Lee et al.'s SVM head: theirs is the Crammer-Singer multi-class hinge
SVM, solved as a dual QP; here it is the Weston-Watkins multi-class *squared* hinge, solved
in the primal (or its representer form) by Newton steps. The squared hinge keeps the problem
twice differentiable almost everywhere, so plain Newton steps solve it (see
``metaloop.adapt.newton_head``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from metaloop.adapt._checks import check_choice, check_int
from metaloop.adapt.newton_head import ConvergenceCheck, _solve
from metaloop.func.losses import cross_entropy
from metaloop.meta._head_learner import HeadLearner, HeadNet, check_positive

__all__ = ["MetaOptNet", "NewtonSolver"]


@dataclass(frozen=True)
class NewtonSolver:
    """Logistic-regression or squared-hinge SVM head by Newton steps: MetaOptNet's inner
    problem, with metaloop's losses (the SVM is not the paper's Crammer-Singer hinge).

    Args:
        head: ``"logistic"`` or ``"svm"``.
        steps: Newton steps from ``W = 0`` (each with a backtracking line search).
        grad: ``"unrolled"`` or ``"implicit"`` (see ``newton_head``).

    Attributes:
        loss_fn: the query loss (cross-entropy), as ``evaluate`` expects of ``inner``.
        method: the learner's name in its error messages.
        check: this solver's convergence check (``newton_head``'s): with
            ``grad="implicit"``, a ``NewtonConvergenceWarning`` (a ``RuntimeWarning``),
            once per solver, when a solve ends with a relative gradient norm above
            ``CONVERGENCE_TOL``; every call on the CPU, the first and every 100th on a GPU.
    """

    head: str = "svm"
    steps: int = 10
    grad: str = "implicit"
    check: ConvergenceCheck = field(default_factory=lambda: ConvergenceCheck("MetaOptNet"),
                                    compare=False, repr=False)
    loss_fn: ClassVar = staticmethod(cross_entropy)
    method: ClassVar[str] = "MetaOptNet"

    def __post_init__(self):
        check_choice("MetaOptNet", "head", self.head, ("logistic", "svm"))
        check_choice("MetaOptNet", "grad", self.grad, ("unrolled", "implicit"))
        check_int("MetaOptNet", "steps", self.steps, 1)

    def __call__(self, features: torch.Tensor, labels: torch.Tensor, ways: int,
                 lam: float | torch.Tensor) -> tuple[torch.Tensor, None]:
        """``W [B, D, C]`` (and no bias) for features ``[B, S, D]``, int64 labels ``[B, S]``.

        Raises:
            ValueError: a class of ``[0, ways)`` with no support example in some task.
        """
        return _solve(features, labels, ways, lam, self.steps, self.head, self.grad,
                      self.check, "MetaOptNet(steps=...), method.inner_steps in a "
                      "config"), None


def MetaOptNet(model: nn.Module, head: str = "svm", lam: float = 1.0, steps: int = 10,
               grad: str = "implicit", scale: float = 8.0, ways: int | None = None,
               batching: str = "auto", transductive: bool = True,
               learn_scale: bool = True) -> HeadLearner:
    """MetaOptNet: meta-learn a feature extractor for a per-task convex classifier.

    Args:
        model: the backbone, e.g. ``Conv4`` or ``ResNet12`` (called as
            ``model(x, head=False)``); any module mapping ``[N, ...]`` to features ``[N, D]``.
        head: ``"svm"`` (Weston-Watkins squared-hinge multi-class SVM, not the paper's
            Crammer-Singer hinge SVM) or ``"logistic"``.
        lam: ridge strength of the head (> 0), fixed; the default 1 is metaloop's, not the
            paper's (its C = 0.1 is about lam = 10).
        steps: Newton steps per solve; ``grad="implicit"`` needs enough to converge (its
            gradient is only right at the solution). The default 10 converge for
            unit-scale features; the SVM head with N >= D and features of a large scale
            against lam (e.g. 20-way 5-shot, D=64, ||phi||^2 about 3000, lam=1) needs about
            40. With ``grad="implicit"`` a ``NewtonConvergenceWarning`` (a
            ``RuntimeWarning``) says so, once per learner, when a solve ends unconverged
            (checked every call on the CPU, every 100th on a GPU).
        grad: ``"implicit"`` or ``"unrolled"`` gradients through the solve.
        scale: initial output scale (> 0), meta-learned as ``exp(log_scale)``. Adam moves
            ``log_scale`` by about its learning rate per step, so the start matters in short
            runs: on Omniglot 5-way 1-shot (meta-batch 8, 150 iterations, Adam 1e-3) an SVM
            head reached 84.6% test accuracy from scale 8 against 71.4% from scale 1.
        ways: classes per task; None infers ``max(support_y) + 1``. Every class needs a
            support example.
        batching: ``"loop"``, ``"vmap"`` or ``"auto"``, see ``HeadLearner``.
        transductive: False: each query normalised with its support set's BatchNorm
            statistics, in training and testing (see ``HeadLearner``).
        learn_scale: meta-learn the output scale (default); False keeps ``scale`` fixed
            (``log_scale`` a buffer).

    Returns:
        a ``HeadLearner`` whose ``model`` is a ``HeadNet`` around ``model`` (parameters
        ``backbone.*`` and, unless fixed, ``log_scale``) and whose ``inner`` is a
        ``NewtonSolver``.

    Raises:
        ValueError: lam or scale not a finite number > 0, an unknown ``head`` or ``grad``,
            ``steps < 1``, ``learn_scale`` not True or False, or a bad ``ways`` /
            ``batching``.
    """
    check_positive("MetaOptNet", "lam", lam)
    solver = NewtonSolver(head=head, steps=steps, grad=grad)
    net = HeadNet(model, scale=scale, lam=lam, learn_lam=False, learn_scale=learn_scale)
    return HeadLearner(net, solver, ways=ways, batching=batching,
                       transductive=transductive)
