"""newton_head says when its numbers cannot be trusted: an unconverged solve warns (once, with
the residual, the steps and the fix), a singular system names ill-conditioning (not
degenerate features), and NaN features are refused on both sides (N >= D and N < D)."""

import warnings

import pytest
import torch

from metaloop.adapt import newton_head
from metaloop.adapt.newton_head import CUDA_CHECK_EVERY, ConvergenceCheck, _solve
from metaloop.tasks.batch import valid_by_construction


def _large_svm_task():
    # 10-way 4-shot, D=16 (N >= D: the primal), features relu(randn) * 10, lam=1: the squared
    # hinge's generalised Newton steps leave a relative gradient norm of 1.0 after 10 steps
    # and 3e-13 after 40
    torch.manual_seed(0)
    phi = (torch.randn(1, 40, 16).relu() * 10).double()
    labels = torch.arange(10).repeat_interleave(4)[None]
    return phi, labels


def _caught(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    return out, [w for w in caught if issubclass(w.category, RuntimeWarning)]


def test_an_unconverged_implicit_solve_warns_with_residual_steps_and_fix():
    phi, labels = _large_svm_task()
    _, caught = _caught(lambda: _solve(phi, labels, 10, 1.0, 10, "svm", "implicit",
                                       ConvergenceCheck(), "steps="))
    assert len(caught) == 1 and caught[0].category.__name__ == "NewtonConvergenceWarning"
    msg = str(caught[0].message)
    assert "not converged after 10 Newton steps: relative gradient norm 0.9" in msg
    assert "implicit gradient" in msg and "more steps" in msg and "larger lam" in msg
    # unrolled: the exact derivative of the truncated solver, which few steps may mean
    _, caught = _caught(lambda: _solve(phi, labels, 10, 1.0, 10, "svm", "unrolled",
                                       ConvergenceCheck(), "steps="))
    assert caught == []


def test_a_converged_solve_does_not_warn_and_a_check_warns_once():
    phi, labels = _large_svm_task()
    check = ConvergenceCheck()
    _, caught = _caught(lambda: _solve(phi, labels, 10, 1.0, 40, "svm", "implicit", check,
                                       "steps="))
    assert caught == []
    counts = []
    for _ in range(2):
        _, caught = _caught(lambda: _solve(phi, labels, 10, 1.0, 10, "svm", "implicit", check,
                                           "steps="))
        counts.append(len(caught))
    assert counts == [1, 0]             # warned once per check


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("loss", ["logistic", "svm"])
@pytest.mark.parametrize("N,D", [(20, 8), (5, 16)])
def test_converged_unit_scale_solves_never_warn(dtype, loss, N, D):
    torch.manual_seed(1)
    phi = torch.randn(3, N, D, dtype=dtype)
    labels = torch.arange(N).remainder(5)[None].repeat(3, 1)
    _, caught = _caught(lambda: _solve(phi, labels, 5, 1.0, 10, loss, "implicit",
                                       ConvergenceCheck(), "steps="))
    assert caught == []


def test_the_check_reads_back_on_a_gpu_only_every_nth_call_and_never_when_trusted():
    meta = torch.empty(1, device="meta")     # any non-CPU device: a read would be a sync
    check = ConvergenceCheck()
    wanted = [check.wanted(meta) for _ in range(2 * CUDA_CHECK_EVERY + 1)]
    assert [i for i, w in enumerate(wanted) if w] == [0, CUDA_CHECK_EVERY, 2 * CUDA_CHECK_EVERY]
    with valid_by_construction():
        assert not any(ConvergenceCheck().wanted(meta) for _ in range(3))
    assert all(ConvergenceCheck().wanted(torch.empty(1)) for _ in range(3))   # CPU: always


@pytest.mark.parametrize("loss,scale", [("logistic", 1e6), ("svm", 1e3)])
def test_a_singular_system_of_full_rank_features_is_named_ill_conditioned(loss, scale):
    torch.manual_seed(0)
    phi = torch.randn(1, 20, 8) * scale          # full rank: not duplicate nor collinear
    labels = torch.arange(20).remainder(5)[None]
    with pytest.raises(ValueError, match="ill-conditioned") as info:
        newton_head(phi, labels, 5, lam=1.0, steps=10, loss=loss)
    assert "rank-deficient" not in str(info.value) and "raise lam" in str(info.value)


@pytest.mark.parametrize("loss", ["logistic", "svm"])
@pytest.mark.parametrize("N,D", [(20, 8), (5, 16)])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_features_are_refused_on_both_sides(loss, N, D, bad):
    torch.manual_seed(0)
    phi = torch.randn(2, N, D)
    phi[1, 3, 2] = bad
    labels = torch.arange(N).remainder(5)[None].repeat(2, 1)
    with pytest.raises(ValueError, match=r"features hold NaN or inf values \(first at task 1, "
                                         r"example 3, dimension 2\)"):
        newton_head(phi, labels, 5, loss=loss)
