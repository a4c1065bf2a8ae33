"""Closed-form ridge-regression head (R2D2, Bertinetto et al. 2019), batched over tasks.

The solution is an ordinary differentiable function of the support features, the targets
and the ridge strength, so gradients reach the feature extractor through plain autograd.
"""

from __future__ import annotations

import math
from typing import Literal, overload

import torch

from metaloop.adapt._checks import check_features, check_lam, check_targets, shape_str

__all__ = ["ridge_head", "head_logits"]


@overload
def ridge_head(features: torch.Tensor, targets: torch.Tensor, lam: float | torch.Tensor = ...,
               intercept: Literal[False] = ...) -> torch.Tensor: ...
@overload
def ridge_head(features: torch.Tensor, targets: torch.Tensor, lam: float | torch.Tensor = ...,
               *, intercept: Literal[True]) -> tuple[torch.Tensor, torch.Tensor]: ...
def ridge_head(features, targets, lam=1.0, intercept=False):
    """Ridge regression of targets on features, one independent problem per task.

    Solves ``W = argmin ||Phi W - Y||^2 + lam ||W||^2`` for each task, i.e.
    ``(Phi^T Phi + lam I) W = Phi^T Y``. When ``N < D`` it uses the Woodbury (dual) form
    ``W = Phi^T (Phi Phi^T + lam I)^{-1} Y``, so the work is O(N^2 D + N^3) and no D x D
    matrix is ever formed; otherwise the primal form, O(N D^2 + D^3). Both use a Cholesky
    factorisation and triangular solves, never an explicit inverse. The result is
    differentiable in ``features``, ``targets`` and ``lam``.

    Args:
        features: ``[B, N, D]`` float32/float64 support features Phi.
        targets: ``[B, N, C]`` targets Y, same dtype (one-hot labels for classification).
        lam: ridge strength > 0: a float or a 0-dim tensor (which may require grad).
        intercept: also fit an unpenalised bias ``b`` per output, so that predictions are
            ``Phi W + b``. It is solved exactly by centring features and targets per task.

    Returns:
        ``W`` ``[B, D, C]`` when ``intercept`` is False (the default). When it is True, the
        pair ``(W [B, D, C], b [B, C])``; pass ``b`` to :func:`head_logits` as ``bias``.

    Raises:
        ValueError: when shapes, dtypes or devices disagree, when ``lam <= 0``, or when the
            Cholesky factorisation fails (so valid input costs no extra check): features
            holding NaN or inf, or a ``lam`` too small for the features' scale in their dtype
            (rank-deficient features: duplicate or collinear support examples or feature
            dimensions), each named as such.
    """
    check_features("ridge_head", features)
    check_targets("ridge_head", targets, features)
    lam = check_lam("ridge_head", lam, features)
    if not isinstance(intercept, bool):
        raise ValueError(f"ridge_head: intercept must be a bool, got {intercept!r}")
    if not intercept:
        return _ridge(features, targets, lam)
    phi_mean = features.mean(dim=1, keepdim=True)                   # [B, 1, D]
    y_mean = targets.mean(dim=1, keepdim=True)                      # [B, 1, C]
    W = _ridge(features - phi_mean, targets - y_mean, lam)          # [B, D, C]
    b = (y_mean - phi_mean @ W).squeeze(1)                          # [B, C]
    return W, b


def _ridge(phi: torch.Tensor, y: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """W [B, D, C] for phi [B, N, D], y [B, N, C], choosing the cheaper side."""
    n, d = phi.shape[1], phi.shape[2]
    if n < d:
        gram = phi @ phi.mT                                         # [B, N, N]
        alpha = _spd_solve(gram, lam, y)                            # [B, N, C]
        return phi.mT @ alpha                                       # [B, D, C]
    cov = phi.mT @ phi                                              # [B, D, D]
    return _spd_solve(cov, lam, phi.mT @ y)                         # [B, D, C]


def _spd_solve(a: torch.Tensor, lam: float | torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """(a + lam I)^{-1} rhs for symmetric PSD a [B, K, K], rhs [B, K, C], by Cholesky."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)   # [K, K]
    try:
        chol = torch.linalg.cholesky(a + lam * eye)                 # [B, K, K]
    except torch.linalg.LinAlgError as e:   # lam > 0 was checked
        raise singular_system("ridge_head", "the regularised Gram matrix", a, lam) from e
    return torch.cholesky_solve(rhs, chol)                          # [B, K, C]


def singular_system(fn: str, what: str, a: torch.Tensor, lam: float | torch.Tensor
                    ) -> ValueError:
    """The error for a system ``a + lam I`` (``a`` ``[B, K, K]``, PSD or, for the Newton
    heads, with non-negative eigenvalues) that its factorisation found singular, naming the
    cause: non-finite features (``a`` not finite), or a lam too small for the features' scale
    in their dtype (rank-deficient features leave ``a`` singular). Only called on that
    failing path, so valid input reads nothing back."""
    lam = float(lam.detach()) if isinstance(lam, torch.Tensor) else float(lam)
    if not (bool(torch.isfinite(a).all()) and math.isfinite(lam)):
        return ValueError(f"{fn}: {what} is not finite: the features (or a tensor lam) hold "
                          f"NaN or inf values, or are too large for {a.dtype}")
    top = float(a.diagonal(dim1=-2, dim2=-1).abs().max())
    return ValueError(f"{fn}: {what} is singular in {a.dtype}: lam={lam:.3g} is too small "
                      f"against the features' scale (largest diagonal entry {top:.3g}) for "
                      f"rank-deficient features (duplicate or collinear support examples, "
                      f"or feature dimensions that are zero or collinear); raise lam or "
                      f"compute in float64")


def head_logits(features: torch.Tensor, W: torch.Tensor,
                bias: torch.Tensor | None = None) -> torch.Tensor:
    """Apply a per-task linear head: ``features @ W (+ bias)``.

    Args:
        features: ``[B, M, D]`` (query) features.
        W: ``[B, D, C]`` head weights from :func:`ridge_head` or ``newton_head``.
        bias: optional ``[B, C]`` bias, as returned by ``ridge_head(..., intercept=True)``.

    Returns:
        ``[B, M, C]`` logits (or regression outputs).

    Raises:
        ValueError: when the shapes do not line up, or the tensors differ in dtype or device.
    """
    if not (isinstance(features, torch.Tensor) and isinstance(W, torch.Tensor)):
        raise ValueError("head_logits: features and W must be torch.Tensors")
    if features.dim() != 3 or W.dim() != 3 or features.shape[0] != W.shape[0] \
            or features.shape[2] != W.shape[1]:
        raise ValueError(f"head_logits: need features [B, M, D] and W [B, D, C], got features "
                         f"{shape_str(features)} and W {shape_str(W)}")
    for name, t in (("W", W), ("bias", bias)):
        if isinstance(t, torch.Tensor) and (t.dtype != features.dtype
                                            or t.device != features.device):
            raise ValueError(f"head_logits: {name} is {t.dtype} on {t.device} but features "
                             f"are {features.dtype} on {features.device}")
    out = features @ W                                              # [B, M, C]
    if bias is None:
        return out
    if not isinstance(bias, torch.Tensor) or bias.shape != (W.shape[0], W.shape[2]):
        got = shape_str(bias) if isinstance(bias, torch.Tensor) else type(bias).__name__
        raise ValueError(f"head_logits: bias must be [B, C] = [{W.shape[0]}, {W.shape[2]}] "
                         f"for W {shape_str(W)}, got {got}")
    return out + bias[:, None, :]                                   # [B, M, C]
