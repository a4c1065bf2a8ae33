"""Convex classification heads solved by differentiable Newton steps (MetaOptNet-style,
Lee et al. 2019), batched over tasks.

Each task solves ``min_W sum_i loss(W^T phi_i, y_i) + (lam / 2) ||W||_F^2`` with W ``[D, C]``
and all C columns free. Two losses share one Newton machinery: each gives, per example, the
gradient ``r_i [C]`` of the loss with respect to the logits ``z_i = W^T phi_i`` and a PSD
curvature matrix ``S_i [C, C]`` (the Hessian, or a generalised Hessian):

* ``"logistic"``: multinomial cross-entropy. ``r = p - y``, ``S = diag(p) - p p^T``. Smooth;
  strictly convex together with the ridge term.
* ``"svm"``: the Weston-Watkins multi-class *squared* hinge,
  ``sum_{c != y} max(0, 1 + z_c - z_y)^2``: every wrong class must trail the true class by a
  margin of 1. It is convex, continuously differentiable and piecewise quadratic, hence twice
  differentiable except where a margin is exactly 1. Its generalised Hessian is
  ``S = 2 sum_{c active} (e_c - e_y)(e_c - e_y)^T`` over the active wrong classes
  (``1 + z_c - z_y > 0``), and Newton steps with it are the "generalised Newton" method of
  Mangasarian (2002) / Keerthi & DeCoste (2005). This is not Lee et al.'s MetaOptNet-SVM,
  which is the Crammer-Singer multi-class hinge SVM (the plain hinge on the largest wrong
  class) solved as a dual QP with C = 0.1; with the same scaling ``C = 1 / lam``, that is
  about ``lam = 10`` here.

Where the problem is solved: with ``N >= D`` the Newton system is the primal ``DC x DC``
Hessian ``H = sum_i S_i (x) phi_i phi_i^T + lam I`` (symmetric positive definite, Cholesky).
With ``N < D`` every iterate from zero lies in the span of the features, ``W = Phi^T A``
with ``A [N, C]``, and the Newton step solves the ``NC x NC`` system
``(S K~ + lam I) dA = r + lam A`` with ``K = Phi Phi^T`` and ``K~ = K (x) I_C`` (LU; the matrix
is not symmetric but is invertible, since ``S K~`` has non-negative real eigenvalues). Its
fixed point ``A* = (Y - P*) / lam`` (logistic) is the dual variable, unique even when K is
singular.

Each step ``x <- x - t d`` follows the Newton direction ``d`` with a step size ``t`` per task
from Armijo backtracking (``t = 1, 1/2, 1/4, ...`` until the objective falls by at least
``1e-4 t <grad, d>``, up to rounding noise). Full Newton steps from zero can diverge on the
logistic loss when the features are large or ``lam`` small (seen for 5-way tasks with
N=40, D=24, unit-variance features, lam=0.1); the line search makes both losses globally
convergent. Near the solution ``t = 1``, and convergence is quadratic (logistic) or finite
(SVM). It costs one objective evaluation per step, O(N D C) or O(N^2 C), and, on a GPU, one
host sync. ``t`` is chosen without gradient and enters the differentiable computation as a
constant.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Literal

import torch
import torch.nn.functional as F

from metaloop.adapt._checks import check_choice, check_features, check_int, check_labels, check_lam
from metaloop.adapt.ridge_head import singular_system
from metaloop.tasks.batch import values_trusted

__all__ = ["ConvergenceCheck", "NewtonConvergenceWarning", "newton_head", "svm_head"]

Curvature = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
Value = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Lam = float | torch.Tensor

_ARMIJO_C = 1e-4         # sufficient-decrease constant of the backtracking line search
_MAX_HALVINGS = 30       # t >= 2^-30
_NOISE_EPS = 64          # rounding noise allowed in the Armijo test, in units of eps |f|


def _shifted_exp(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """exp(z - m) [B, N, C] and m = max_c z (detached) [B, N, 1], for a stable softmax.

    Written out rather than ``torch.softmax``, whose kernel splits even a [1, 6, 3] input
    across OpenMP threads: on 2 busy cores that cost 7.8 ms a call against 47 us here.
    """
    m = z.detach().amax(dim=-1, keepdim=True)                       # [B, N, 1]
    return torch.exp(z - m), m


def _logistic_curvature(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy gradient r [B, N, C] and Hessian S [B, N, C, C] wrt logits z [B, N, C]."""
    e, _ = _shifted_exp(z)                                          # [B, N, C]
    p = e / e.sum(dim=-1, keepdim=True)                             # [B, N, C] softmax
    r = p - y                                                       # [B, N, C]
    S = torch.diag_embed(p) - p[..., :, None] * p[..., None, :]     # [B, N, C, C]
    return r, S


def _logistic_value(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy [B] of logits z [B, N, C] against one-hot y [B, N, C]."""
    e, m = _shifted_exp(z)                                          # [B, N, C], [B, N, 1]
    lse = m.squeeze(-1) + torch.log(e.sum(dim=-1))                  # [B, N]
    return (lse - (z * y).sum(dim=-1)).sum(dim=-1)


def _svm_hinges(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Wrong-class hinges max(0, 1 + z_c - z_y) [B, N, C], zero at the true class."""
    z_true = (z * y).sum(dim=-1, keepdim=True)                      # [B, N, 1]
    return torch.relu(1.0 + z - z_true) * (1.0 - y)                 # [B, N, C]


def _svm_curvature(z: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Squared-hinge gradient r [B, N, C] and generalised Hessian S [B, N, C, C]."""
    h = _svm_hinges(z, y)                                           # [B, N, C]
    r = 2.0 * (h - h.sum(dim=-1, keepdim=True) * y)                 # [B, N, C]
    a = (h > 0).to(z.dtype)                                         # [B, N, C] active set
    ay = a[..., :, None] * y[..., None, :]                          # [B, N, C, C]
    yy = y[..., :, None] * y[..., None, :]                          # [B, N, C, C]
    S = torch.diag_embed(a) - ay - ay.mT + a.sum(-1)[..., None, None] * yy
    return r, 2.0 * S                                               # [B, N, C, C]


def _svm_value(z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Summed squared hinge [B]."""
    return _svm_hinges(z, y).square().sum(dim=(-2, -1))


# loss name -> (gradient and curvature wrt logits, summed loss value per task)
_LOSSES: dict[str, tuple[Curvature, Value]] = {
    "logistic": (_logistic_curvature, _logistic_value),
    "svm": (_svm_curvature, _svm_value),
}


class _Primal:
    """Newton steps on W [B, D, C] with the DC x DC Hessian (used when N >= D)."""

    def __init__(self, phi: torch.Tensor, y: torch.Tensor, lam: Lam, loss: str):
        self.phi, self.y, self.lam = phi, y, lam
        self.curvature, self.value = _LOSSES[loss]

    def init(self) -> torch.Tensor:
        B, _, D = self.phi.shape
        return self.phi.new_zeros(B, D, self.y.shape[-1])          # [B, D, C]

    def objective(self, W: torch.Tensor) -> torch.Tensor:
        """[B] objective values at W [B, D, C]."""
        return self.value(self.phi @ W, self.y) + 0.5 * self.lam * W.square().sum(dim=(1, 2))

    def direction(self, W: torch.Tensor, frozen: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Newton direction d [B, D, C] (the step is W - d) and the slope <grad, d> [B]."""
        phi, lam = self.phi, self.lam
        B, D, C = W.shape
        r, S = self.curvature(phi @ W, self.y)                      # [B, N, C], [B, N, C, C]
        g = phi.mT @ r + lam * W                                    # [B, D, C]
        if frozen:
            phi, S, lam = phi.detach(), S.detach(), _detach(lam)
        H = torch.einsum("bnd,bncf,bne->bdcef", phi, S, phi)        # [B, D, C, D, C]
        H = H.reshape(B, D * C, D * C)                              # [B, DC, DC]
        eye = torch.eye(D * C, dtype=W.dtype, device=W.device)
        try:
            chol = torch.linalg.cholesky(H + lam * eye)             # [B, DC, DC]
        except torch.linalg.LinAlgError as e:   # lam > 0 was checked
            raise _ill_conditioned(H, lam) from e
        d = torch.cholesky_solve(g.reshape(B, D * C, 1), chol)      # [B, DC, 1]
        d = d.reshape(B, D, C)                                      # [B, D, C]
        with torch.no_grad():
            slope = (g * d).sum(dim=(1, 2))                         # [B]
        return d, slope

    def weights(self, W: torch.Tensor) -> torch.Tensor:
        return W

    @torch.no_grad()
    def residual(self, W: torch.Tensor) -> torch.Tensor:
        """[B] relative gradient norm ``||Phi^T r + lam W|| / (||Phi^T r|| + ||lam W||)``."""
        r, _ = self.curvature(self.phi @ W, self.y)                 # [B, N, C]
        loss_g, ridge_g = self.phi.mT @ r, self.lam * W             # [B, D, C] each
        num = (loss_g + ridge_g).square().sum(dim=(1, 2)).sqrt()    # [B]
        den = loss_g.square().sum(dim=(1, 2)).sqrt() + ridge_g.square().sum(dim=(1, 2)).sqrt()
        return num / den.clamp_min(torch.finfo(W.dtype).tiny)


class _Representer:
    """Newton steps on A [B, N, C], W = Phi^T A, with an NC x NC system (used when N < D)."""

    def __init__(self, phi: torch.Tensor, y: torch.Tensor, lam: Lam, loss: str):
        self.phi, self.y, self.lam = phi, y, lam
        self.curvature, self.value = _LOSSES[loss]
        self.K = phi @ phi.mT                                       # [B, N, N]

    def init(self) -> torch.Tensor:
        return torch.zeros_like(self.y)                             # [B, N, C]

    def objective(self, A: torch.Tensor) -> torch.Tensor:
        """[B] objective values at W = Phi^T A; ||W||^2 = <A, K A>."""
        Z = self.K @ A                                              # [B, N, C]
        return self.value(Z, self.y) + 0.5 * self.lam * (A * Z).sum(dim=(1, 2))

    def direction(self, A: torch.Tensor, frozen: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Newton direction d [B, N, C] (the step is A - d) and the slope <grad_W, Phi^T d>."""
        K, lam = self.K, self.lam
        B, N, C = A.shape
        r, S = self.curvature(K @ A, self.y)                        # [B, N, C], [B, N, C, C]
        resid = r + lam * A                                         # [B, N, C] grad_W = Phi^T resid
        if frozen:
            K, S, lam = K.detach(), S.detach(), _detach(lam)
        M = torch.einsum("bncf,bnm->bncmf", S, K)                   # [B, N, C, N, C]
        M = M.reshape(B, N * C, N * C)                              # [B, NC, NC]
        eye = torch.eye(N * C, dtype=A.dtype, device=A.device)
        try:
            d = torch.linalg.solve(M + lam * eye, resid.reshape(B, N * C, 1))   # [B, NC, 1]
        except torch.linalg.LinAlgError as e:   # lam > 0 was checked
            raise _ill_conditioned(M, lam) from e
        d = d.reshape(B, N, C)                                      # [B, N, C]
        with torch.no_grad():
            slope = (resid * (self.K @ d)).sum(dim=(1, 2))          # [B]
        return d, slope

    def weights(self, A: torch.Tensor) -> torch.Tensor:
        return self.phi.mT @ A                                      # [B, D, C]

    @torch.no_grad()
    def residual(self, A: torch.Tensor) -> torch.Tensor:
        """[B] the primal's relative gradient norm, with ``||Phi^T v||^2 = <v, K v>``."""
        K, lam = self.K, self.lam
        r, _ = self.curvature(K @ A, self.y)                        # [B, N, C]

        def norm(v: torch.Tensor) -> torch.Tensor:                  # ||Phi^T v|| [B]
            return (v * (K @ v)).sum(dim=(1, 2)).clamp_min(0.0).sqrt()

        den = norm(r) + lam * norm(A)
        return norm(r + lam * A) / den.clamp_min(torch.finfo(A.dtype).tiny)


def _ill_conditioned(a: torch.Tensor, lam: Lam) -> ValueError:
    """The error for a Newton system ``a + lam I`` that its factorisation found singular.

    Not finite: ``singular_system``'s message. Otherwise the cause is the features' scale
    against lam, whatever the features: every per-example curvature ``S_i`` has ``S_i 1 =
    0`` (adding one vector to every class's weights changes no softmax and no margin), so
    ``a`` is singular along ``W + v 1^T`` for any features, only lam makes the system
    invertible, and its condition number is about ``max eig(a) / lam``."""
    if not bool(torch.isfinite(a).all()):
        return singular_system("newton_head", "the Newton system", a, lam)
    lam_v = float(lam.detach()) if isinstance(lam, torch.Tensor) else float(lam)
    top = float(a.diagonal(dim1=-2, dim2=-1).abs().max())
    return ValueError(
        f"newton_head: the Newton system is singular in {a.dtype}: lam={lam_v:.3g} is too "
        f"small against the features' scale. The system is ill-conditioned, not the features "
        f"degenerate: its curvature reaches {top:.3g} against lam, a condition number of "
        f"about {(top + lam_v) / lam_v:.1g}, because the loss is flat along adding one vector "
        f"to every class's weights, so that only lam keeps it invertible whatever the "
        f"features; raise lam, scale the features down, or compute in float64")


def _detach(lam: Lam) -> Lam:
    return lam.detach() if isinstance(lam, torch.Tensor) else lam


@torch.no_grad()
def _step_sizes(problem: _Primal | _Representer, x: torch.Tensor, d: torch.Tensor,
                slope: torch.Tensor) -> torch.Tensor:
    """Armijo backtracking from t = 1, per task: t [B] with f(x - t d) <= f(x) - c t slope.

    The test allows rounding noise of ``64 eps max(|f(x)|, 1)``, so that a converged task,
    whose predicted decrease ``slope`` is below that noise, keeps the full step.

    Once every task's step is accepted the search stops, which reads a flag back to the
    host. Inside ``metaloop.tasks.batch.valid_by_construction()`` it runs every halving
    instead: the same steps (an accepted task's t no longer changes), with no read.
    """
    f0 = problem.objective(x)                                       # [B]
    bound = f0 + _NOISE_EPS * torch.finfo(f0.dtype).eps * f0.abs().clamp_min(1.0)
    t = torch.ones_like(f0)                                         # [B]
    ok = problem.objective(x - d) <= bound - _ARMIJO_C * slope      # [B]
    for _ in range(_MAX_HALVINGS):
        if not values_trusted() and bool(ok.all()):
            break
        t = torch.where(ok, t, 0.5 * t)
        ok = ok | (problem.objective(x - t[:, None, None] * d) <= bound - _ARMIJO_C * t * slope)
    return t


def _newton_step(problem: _Primal | _Representer, x: torch.Tensor) -> torch.Tensor:
    """x - t d, with t chosen by line search."""
    d, slope = problem.direction(x, frozen=False)                   # [B, *, C], [B]
    t = _step_sizes(problem, x.detach(), d.detach(), slope)[:, None, None]
    return x - t * d


# Convergence check on the returned iterate: the relative norm of the objective's gradient,
# ||grad|| / (||grad of the loss|| + ||lam W||) (the two cancel at the solution). Measured
# (20-way 5-shot, D=64, relu(randn) * k features, lam=1): converged solves leave at most
# 3e-11 in float64 and, from rounding alone, up to 1e-2 in float32 (its floor grows with the
# features' scale against lam); the unconverged SVM after 10 steps at k=10 leaves 0.99 in
# both. Any residual above these is reported.
CONVERGENCE_TOL = {torch.float64: 1e-4, torch.float32: 1e-1}
CUDA_CHECK_EVERY = 100     # on a GPU, check calls 1, 101, 201, ... of each solver (a sync each)


class NewtonConvergenceWarning(RuntimeWarning):
    """A Newton head solved with ``grad="implicit"`` ended unconverged: its value is not the
    minimiser and its implicit gradient, exact only at the solution, is wrong."""


class ConvergenceCheck:
    """Whether, and how, a sequence of solves (one solver, one learner) checks convergence:
    every call on the CPU; on a GPU, where the check reads a value back to the host, the
    first call and then every ``CUDA_CHECK_EVERY``-th, and none inside
    ``valid_by_construction()`` or while ``torch.compile`` traces. With ``once`` it warns
    once, then checks no more."""

    def __init__(self, owner: str = "newton_head", once: bool = True):
        self.owner, self.once, self.calls, self.warned = owner, once, 0, False

    def wanted(self, features: torch.Tensor) -> bool:
        if self.warned or torch.compiler.is_compiling():
            return False
        self.calls += 1
        if features.device.type == "cpu":
            return True
        return not values_trusted() and (self.calls - 1) % CUDA_CHECK_EVERY == 0

    def report(self, residual: torch.Tensor, dtype: torch.dtype, steps: int, loss: str,
               lam: Lam, steps_name: str) -> None:
        tol = CONVERGENCE_TOL[dtype]
        worst = float(residual.max())
        if not worst > tol:              # (NaN features are refused before this)
            return
        self.warned = self.once
        lam_v = float(lam.detach()) if isinstance(lam, torch.Tensor) else lam
        implicit = (" and its implicit gradient (exact only at the solution) is off by about "
                    "as much or more")
        warnings.warn(
            f"{self.owner}: the {loss} head has not converged after {steps} Newton steps: "
            f"relative gradient norm {worst:.2g} > {tol:g} ({dtype}) in "
            f"{int((residual > tol).sum())} of {residual.numel()} tasks, so the returned "
            f"head is not the minimiser{implicit}. Give more steps ({steps_name}) or a larger "
            f"lam (now {lam_v:.3g}): features of a large scale against lam need more "
            f"steps.{' Warned once per solver.' if self.once else ''}",
            NewtonConvergenceWarning, stacklevel=4)


def newton_head(features: torch.Tensor, labels: torch.Tensor, n_classes: int,
                lam: float | torch.Tensor = 1.0, steps: int = 5,
                loss: Literal["logistic", "svm"] = "logistic",
                grad: Literal["unrolled", "implicit"] = "unrolled") -> torch.Tensor:
    """Fit a linear classifier per task by ``steps`` Newton steps from ``W = 0``.

    Minimises ``sum_i loss(W^T phi_i, y_i) + (lam / 2) ||W||^2`` (a sum over the N support
    examples, not a mean), where ``loss`` is multinomial cross-entropy or the Weston-Watkins
    squared hinge (see the module docstring; not the Crammer-Singer hinge of Lee et al.).
    Steps are damped Newton steps with a backtracking line search. With unit-scale features
    and ``lam`` about 0.1 or more, 5-10 steps reach machine precision; large features or a
    small ``lam`` need more, and the SVM with ``N >= D`` and many margin violations can need
    tens of steps.

    Gradient modes, for gradients into ``features`` and ``lam``:

    * ``"unrolled"``: autograd through every step; memory grows with ``steps``. Exact
      derivative of the truncated solver (step sizes held constant).
    * ``"implicit"``: the implicit function theorem. All ``steps`` steps run under
      ``no_grad``, to the iterate ``x``; then, at that ``x`` and with its Newton matrix
      ``J(x)`` detached, the direction ``d = J^{-1} F(x; phi, lam)`` is computed with ``F``
      the optimality residual, and ``x - (d - d.detach())`` is returned. The value is
      ``x``, *identical* to ``"unrolled"``, and the Jacobian is ``-J^{-1} dF/d(phi, lam)``
      at the returned point: exactly the IFT Jacobian ``dx*/d(phi, lam)`` when ``x`` is the
      solution (there ``F = 0``, so the derivative of ``J`` would be multiplied by zero
      anyway), and off by O(||F(x)||) otherwise, so give this mode enough steps to converge.
      Taking ``J`` at the returned point, not at the iterate before it, matters for the
      SVM: its generalised Newton steps can land exactly on the solution while the iterate
      before had another active set, whose ``J`` would give a wrong gradient for an exact
      value. Forward costs one linear solve more than ``"unrolled"`` (none under
      ``torch.no_grad()``, where no Jacobian is wanted); backward one solve with ``J^T``, and
      memory does not depend on ``steps``. This is simpler than a custom
      ``autograd.Function`` and supports double backward (treating ``J`` as a constant, so
      only approximately). For the SVM, the IFT holds with the active set fixed: exact
      wherever no margin is exactly at 1.

    With ``N < D`` the steps run in the representer space (``W = Phi^T A``): an ``NC x NC``
    system per step instead of ``DC x DC``.

    Args:
        features: ``[B, N, D]`` float32/float64 support features Phi.
        labels: ``[B, N]`` int64 labels in ``[0, n_classes)``; every class must occur in
            every task.
        n_classes: C >= 2.
        lam: ridge strength > 0: a float or a 0-dim tensor (which may require grad).
        steps: number of Newton steps, >= 1.
        loss: ``"logistic"`` or ``"svm"``.
        grad: ``"unrolled"`` or ``"implicit"``.

    Returns:
        ``W`` ``[B, D, C]``; logits are ``features @ W`` (see ``head_logits``).

    The implicit gradient is only right at convergence. This function does not check
    convergence (truncated solves may be meant); ``MetaOptNet`` does, with
    ``ConvergenceCheck``: with ``grad="implicit"``, the relative norm of the objective's
    gradient at the returned ``W``, ``||grad|| / (||grad of the loss|| + ||lam W||)``, one
    gradient evaluation, above ``CONVERGENCE_TOL`` (1e-4 in float64; 0.1 in float32, whose
    rounding alone leaves up to 1e-2 at large feature scales) gives a
    ``NewtonConvergenceWarning`` (a ``RuntimeWarning``) naming the residual, the steps and
    the fix (more steps, a larger lam), once per learner: on every call on the CPU; on a
    GPU, where it reads one value back to the host, on the first call and then every
    ``CUDA_CHECK_EVERY`` (100), never inside ``valid_by_construction()`` or a
    ``torch.compile`` trace.

    Raises:
        ValueError: on bad shapes or dtypes, ``lam <= 0``, labels out of range, a class with
            no support example in some task, an unknown ``loss`` / ``grad``, features with
            NaN or inf values (checked on either path, except inside
            ``valid_by_construction()``, which reads nothing back), or a Newton system its
            factorisation finds singular (at no cost to valid input): features too large
            for their dtype, or a ``lam`` too small for the features' scale in their dtype
            (the system is ill-conditioned for any features, see ``_ill_conditioned``), each
            named as such.
    """
    return _solve(features, labels, n_classes, lam, steps, loss, grad, None, "")


def _solve(features: torch.Tensor, labels: torch.Tensor, n_classes: int, lam: Lam,
           steps: int, loss: str, grad: str, check: ConvergenceCheck | None,
           steps_name: str) -> torch.Tensor:
    """``newton_head``, with the convergence ``check`` (None: none) of the caller, which
    names its own steps argument (``steps_name``) in the warning."""
    fn = "newton_head"
    check_features(fn, features)
    check_labels(fn, labels, features, n_classes)
    lam = check_lam(fn, lam, features)
    check_int(fn, "steps", steps, 1)
    check_choice(fn, "loss", loss, tuple(_LOSSES))
    check_choice(fn, "grad", grad, ("unrolled", "implicit"))
    if not values_trusted() and not bool(torch.isfinite(features).all()):
        bad = (~torch.isfinite(features)).nonzero()[0].tolist()
        raise ValueError(f"{fn}: features hold NaN or inf values (first at task {bad[0]}, "
                         f"example {bad[1]}, dimension {bad[2]}); the head cannot be solved")
    y = F.one_hot(labels, n_classes).to(features.dtype)             # [B, N, C]
    space = _Representer if features.shape[1] < features.shape[2] else _Primal
    problem = space(features, y, lam, loss)
    x = problem.init()                                              # [B, N or D, C]
    if grad == "implicit":
        with torch.no_grad():
            for _ in range(steps):
                x = _newton_step(problem, x)
        if check is not None and check.wanted(features):
            check.report(problem.residual(x), features.dtype, steps, loss, lam, steps_name)
        if torch.is_grad_enabled():     # (evaluation under no_grad: no Jacobian to give)
            d, _ = problem.direction(x, frozen=True)   # J(x)^-1 F(x; phi, lam) at the result
            x = x - (d - d.detach())                    # value x, Jacobian -J^-1 dF/d(phi, lam)
    else:           # the exact derivative of the truncated solver: few steps may be meant
        for _ in range(steps):
            x = _newton_step(problem, x)
    return problem.weights(x)                                       # [B, D, C]


svm_head = functools.partial(newton_head, loss="svm")
"""``newton_head`` with ``loss="svm"``: the Weston-Watkins multi-class squared-hinge SVM
solved by generalised Newton steps (not Lee et al.'s Crammer-Singer hinge SVM,
a dual QP). Same arguments and return value."""
svm_head.__doc__ = """``newton_head`` with ``loss="svm"``: the Weston-Watkins multi-class
squared-hinge SVM solved by generalised Newton steps (not Lee et al.'s Crammer-Singer
hinge SVM, a dual QP). Same arguments and return value."""
