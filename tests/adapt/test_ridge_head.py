"""ridge_head and head_logits: against the primal normal equations, gradients, errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from metaloop.adapt.ridge_head import head_logits, ridge_head

sys.path.insert(0, str(Path(__file__).parent))
from _checks import LargestOutput  # noqa: E402

DT = torch.float64
# (N, D): the Woodbury side (N < D), the primal side (N > D) and the tie.
REGIMES = [(5, 12), (12, 5), (7, 7)]


def _data(B, N, D, C, seed=0):
    g = torch.Generator().manual_seed(seed)
    phi = torch.randn(B, N, D, generator=g, dtype=DT)
    y = torch.randn(B, N, C, generator=g, dtype=DT)
    return phi, y


def _primal(phi, y, lam):
    """Reference: torch.linalg.solve of (Phi^T Phi + lam I) W = Phi^T Y."""
    eye = torch.eye(phi.shape[-1], dtype=DT)
    return torch.linalg.solve(phi.mT @ phi + lam * eye, phi.mT @ y)


@pytest.mark.parametrize("N,D", REGIMES)
@pytest.mark.parametrize("lam", [0.3, 2.0])
def test_matches_primal_normal_equations(N, D, lam):
    phi, y = _data(3, N, D, 4)
    W = ridge_head(phi, y, lam=lam)
    assert W.shape == (3, D, 4) and W.dtype == DT
    torch.testing.assert_close(W, _primal(phi, y, lam), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("N,D", REGIMES)
def test_tensor_lam_matches_float_lam(N, D):
    phi, y = _data(2, N, D, 3)
    W = ridge_head(phi, y, lam=torch.tensor(0.75, dtype=torch.float32))
    torch.testing.assert_close(W, ridge_head(phi, y, lam=0.75), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("N,D", REGIMES)
def test_intercept_is_unpenalised(N, D):
    phi, y = _data(2, N, D, 3)
    lam = 0.5
    W, b = ridge_head(phi, y, lam=lam, intercept=True)
    assert W.shape == (2, D, 3) and b.shape == (2, 3)
    # Reference: augmented normal equations with a column of ones and no penalty on it.
    ones = torch.ones(2, N, 1, dtype=DT)
    aug = torch.cat([phi, ones], dim=2)                             # [B, N, D+1]
    pen = torch.diag(torch.cat([torch.full((D,), lam, dtype=DT), torch.zeros(1, dtype=DT)]))
    ref = torch.linalg.solve(aug.mT @ aug + pen, aug.mT @ y)        # [B, D+1, C]
    torch.testing.assert_close(W, ref[:, :D], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(b, ref[:, D], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(head_logits(phi, W, b), aug @ ref, rtol=1e-10, atol=1e-10)


def test_intercept_with_one_example_predicts_its_target():
    phi, y = _data(2, 1, 4, 3)
    W, b = ridge_head(phi, y, lam=1.0, intercept=True)
    torch.testing.assert_close(W, torch.zeros_like(W))
    torch.testing.assert_close(head_logits(phi, W, b), y)


@pytest.mark.parametrize("N,D", [(3, 5), (5, 2)])
@pytest.mark.parametrize("intercept", [False, True])
def test_gradcheck_features_targets_lam(N, D, intercept):
    phi, y = _data(2, N, D, 2)
    phi.requires_grad_(True)
    y.requires_grad_(True)
    lam = torch.tensor(0.8, dtype=DT, requires_grad=True)

    def f(phi, y, lam):
        out = ridge_head(phi, y, lam=lam, intercept=intercept)
        return torch.cat([o.flatten() for o in out]) if intercept else out

    assert torch.autograd.gradcheck(f, (phi, y, lam))


def test_woodbury_side_never_forms_a_d_by_d_matrix():
    N, D = 4, 400
    phi, y = _data(1, N, D, 3)
    phi.requires_grad_(True)
    with LargestOutput() as spy:
        W = ridge_head(phi, y, lam=1.0)
        W.sum().backward()
    assert spy.largest <= N * D          # features-sized at most; D * D would be 160000
    torch.testing.assert_close(W.detach(), _primal(phi.detach(), y, 1.0), rtol=1e-9, atol=1e-9)


def test_float32_runs():
    phi, y = _data(2, 5, 8, 3)
    W = ridge_head(phi.float(), y.float(), lam=1.0)
    assert W.dtype == torch.float32
    torch.testing.assert_close(W.double(), _primal(phi, y, 1.0), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("lam", [0.0, -1.0, float("nan"), float("inf"),
                                 torch.tensor(0.0), torch.tensor(-2.0, requires_grad=True)])
def test_nonpositive_lam_is_rejected(lam):
    phi, y = _data(1, 3, 4, 2)
    with pytest.raises(ValueError, match="lam must be finite and > 0"):
        ridge_head(phi, y, lam=lam)


@pytest.mark.parametrize("N,D", [(4, 6), (6, 3)])
def test_a_lam_too_small_for_a_singular_gram_matrix_is_named_as_such(N, D):
    # duplicate support examples (N < D) or duplicate feature columns (N >= D): the Gram
    # matrix is exactly singular, and lam=1e-50 vanishes beside it in float32. The features
    # are finite, so the error must not blame NaN or inf.
    eye = torch.eye(max(N, D))
    phi = (eye[[0, 1] * (N // 2), :D] if N < D else eye[:N, [0, 0, 1]])[None]   # [1, N, D]
    y = torch.eye(2)[torch.arange(N) % 2][None]                                     # [1, N, 2]
    with pytest.raises(ValueError, match=r"ridge_head: the regularised Gram matrix is singular "
                       r"in torch.float32: lam=1e-50 is too small .*rank-deficient "
                       r"features.*raise lam or compute in float64"):
        ridge_head(phi, y, lam=1e-50)
    assert torch.isfinite(ridge_head(phi, y, lam=1e-3)).all()


@pytest.mark.parametrize("lam,match", [(torch.ones(2), "0-dim"), ("1", "float"), (True, "float"),
                                       (torch.tensor(1), "0-dim float")])
def test_lam_of_wrong_kind_is_rejected(lam, match):
    phi, y = _data(1, 3, 4, 2)
    with pytest.raises(ValueError, match=match):
        ridge_head(phi, y, lam=lam)


def test_bad_shapes_and_dtypes_are_rejected():
    phi, y = _data(2, 3, 4, 2)
    with pytest.raises(ValueError, match=r"features must be \[B, N, D\], got shape \[3, 4\]"):
        ridge_head(phi[0], y)
    with pytest.raises(ValueError, match=r"targets must be \[B, N, C\].*got targets \[2, 2, 2\]"):
        ridge_head(phi, y[:, :2])
    with pytest.raises(ValueError, match="targets dtype torch.float32 differs"):
        ridge_head(phi, y.float())
    with pytest.raises(ValueError, match="float32 or float64"):
        ridge_head(phi.half(), y.half())
    with pytest.raises(ValueError, match="empty dimension"):
        ridge_head(phi[:, :0], y[:, :0])
    with pytest.raises(ValueError, match="intercept must be a bool"):
        ridge_head(phi, y, intercept=1)


def test_head_logits_shapes_and_errors():
    phi, y = _data(2, 3, 4, 5)
    W = ridge_head(phi, y)
    assert head_logits(torch.randn(2, 7, 4, dtype=DT), W).shape == (2, 7, 5)
    with pytest.raises(ValueError, match=r"W \[2, 4, 5\]"):
        head_logits(torch.randn(2, 7, 3, dtype=DT), W)
    with pytest.raises(ValueError, match=r"bias must be \[B, C\] = \[2, 5\]"):
        head_logits(phi, W, torch.zeros(5, dtype=DT))
