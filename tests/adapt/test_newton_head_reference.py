"""newton_head's truncated iterates and their gradients against an independent damped Newton.

The reference is written in plain torch from the objective alone: the gradient and the
Hessian of ``sum_i loss(W^T phi_i, y_i) + lam / 2 ||W||^2`` come from autograd (for the
squared hinge, autograd's second derivative of ``relu(u)^2`` is the generalised Hessian),
never from newton_head's hand-written curvature, and each step is a dense solve in the primal
``DC x DC`` space, whichever side newton_head works in. The step size follows the documented
Armijo rule (``t = 1, 1/2, ...`` until ``f(W - t d) <= f(W) - 1e-4 t <g, d>`` up to
``64 eps max(|f|, 1)``), chosen without gradient. So after 1, 2, 3 steps, before
convergence, the iterates must agree: a wrong Hessian, step count, regulariser or line
search changes them even where the converged solution would not move.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metaloop.adapt.newton_head import newton_head

DT = torch.float64


def _objective(phi: torch.Tensor, y: torch.Tensor, C: int, lam, loss: str):
    """f(w) for w = W [D, C] flattened; phi [N, D] (may require grad), y [N]."""
    N, D = phi.shape
    onehot = F.one_hot(y, C).to(DT)                                            # [N, C]

    def f(w: torch.Tensor) -> torch.Tensor:
        z = phi @ w.reshape(D, C)                                              # [N, C]
        z_true = (z * onehot).sum(1, keepdim=True)                             # [N, 1]
        if loss == "logistic":
            data = (torch.logsumexp(z, 1, keepdim=True) - z_true).sum()
        else:
            data = (torch.relu(1.0 + z - z_true) * (1.0 - onehot)).square().sum()
        return data + 0.5 * lam * w.square().sum()

    return f


def _reference(phi: torch.Tensor, y: torch.Tensor, C: int, lam, steps: int, loss: str,
               sizes: list | None = None) -> torch.Tensor:
    """W [D, C] after ``steps`` damped Newton steps from zero; differentiable in phi and
    lam with the step sizes held constant (appended to ``sizes`` if given)."""
    D = phi.shape[1]
    f = _objective(phi, y, C, lam, loss)
    w = phi.new_zeros(D * C)
    sizes = [] if sizes is None else sizes
    for _ in range(steps):
        wg = w if w.requires_grad else w.detach().requires_grad_(True)
        g = torch.autograd.grad(f(wg), wg, create_graph=True)[0]              # [DC]
        H = torch.autograd.functional.hessian(f, wg, create_graph=True)        # [DC, DC]
        d = torch.linalg.solve(H, g)                                           # [DC]
        with torch.no_grad():
            f0, slope = float(f(w)), float(g @ d)
            bound = f0 + 64 * torch.finfo(DT).eps * max(abs(f0), 1.0)
            t = 1.0
            for _ in range(30):
                if float(f(w - t * d)) <= bound - 1e-4 * t * slope:
                    break
                t /= 2
        sizes.append(t)
        w = w - t * d
    return w.reshape(D, C)


def _task(N, D, C, seed, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    phi = scale * torch.randn(N, D, generator=g, dtype=DT)
    return phi, torch.randperm(N, generator=g) % C


# (N, D, C, lam, feature scale, seed): the representer side, the primal side, and a task on
# which a full second step of the SVM overshoots (large features, small lam), so that the
# line search acts.
CASES = {"representer": (6, 10, 3, 0.5, 1.0, 2), "primal": (20, 4, 3, 0.5, 1.0, 2),
         "damped": (8, 20, 3, 0.01, 5.0, 0)}


@pytest.mark.parametrize("loss", ["logistic", "svm"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("steps", [1, 2, 3])
def test_truncated_newton_iterates_match_the_reference(case, loss, steps):
    N, D, C, lam, scale, seed = CASES[case]
    phi, y = _task(N, D, C, seed, scale)
    W = newton_head(phi[None], y[None], C, lam=lam, steps=steps, loss=loss)[0]
    ref = _reference(phi, y, C, lam, steps, loss)
    torch.testing.assert_close(W, ref, rtol=1e-9, atol=1e-9)


def test_the_damped_case_really_takes_a_short_step():
    """Guard for the case above: the reference halves the SVM's second step."""
    N, D, C, lam, scale, seed = CASES["damped"]
    phi, y = _task(N, D, C, seed, scale)
    sizes = []
    _reference(phi, y, C, lam, 3, "svm", sizes)
    assert sizes[0] == 1.0 and sizes[1] < 0.1


@pytest.mark.parametrize("loss", ["logistic", "svm"])
@pytest.mark.parametrize("case", ["representer", "primal"])
def test_unrolled_gradient_matches_the_reference(case, loss):
    """The gradient of the truncated solver (2 steps) into the features and lam."""
    N, D, C, lam0, scale, _ = CASES[case]
    phi, y = _task(N, D, C, 4, scale)
    R = torch.randn(D, C, generator=torch.Generator().manual_seed(5), dtype=DT)
    grads = []
    for solve in (lambda p, lam: newton_head(p[None], y[None], C, lam=lam, steps=2,
                                             loss=loss)[0],
                  lambda p, lam: _reference(p, y, C, lam, 2, loss)):
        p = phi.clone().requires_grad_(True)
        lam = torch.tensor(lam0, dtype=DT, requires_grad=True)
        grads.append(torch.autograd.grad((solve(p, lam) * R).sum(), (p, lam)))
    for got, want in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("loss", ["logistic", "svm"])
def test_implicit_gradient_before_convergence_is_the_frozen_newton_matrix_formula(loss):
    """grad="implicit" on the primal side, 2 steps: the value is the second iterate x and
    the Jacobian ``-J^{-1} dF/d(phi, lam)``, with F the objective's gradient at that x and J
    its Hessian there, held constant (the documented formula, exact IFT only at the
    solution)."""
    N, D, C, lam0, scale, _ = CASES["primal"]
    phi, y = _task(N, D, C, 6, scale)
    R = torch.randn(D, C, generator=torch.Generator().manual_seed(7), dtype=DT)
    second = _reference(phi, y, C, lam0, 2, loss).detach().reshape(-1)              # [DC]
    p = phi.clone().requires_grad_(True)
    lam = torch.tensor(lam0, dtype=DT, requires_grad=True)
    f = _objective(p, y, C, lam, loss)
    x = second.clone().requires_grad_(True)
    F_ = torch.autograd.grad(f(x), x, create_graph=True)[0]                          # [DC]
    J = torch.autograd.functional.hessian(f, second).detach()                        # [DC, DC]
    d = torch.linalg.solve(J, F_)
    ref = (second - (d - d.detach())).reshape(D, C)
    want = torch.autograd.grad((ref * R).sum(), (p, lam))
    p2 = phi.clone().requires_grad_(True)
    lam2 = torch.tensor(lam0, dtype=DT, requires_grad=True)
    W = newton_head(p2[None], y[None], C, lam=lam2, steps=2, loss=loss, grad="implicit")[0]
    torch.testing.assert_close(W, ref.detach(), rtol=1e-9, atol=1e-9)
    got = torch.autograd.grad((W * R).sum(), (p2, lam2))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-8, atol=1e-10)
    # before convergence this differs from the unrolled gradient, which the check above
    # would therefore tell apart
    p3 = phi.clone().requires_grad_(True)
    U = newton_head(p3[None], y[None], C, lam=lam0, steps=2, loss=loss)[0]
    assert (torch.autograd.grad((U * R).sum(), p3)[0] - got[0]).abs().max() > 1e-6


@pytest.mark.parametrize("seed, steps", [(0, 2), (1, 3), (2, 3)])
def test_implicit_svm_gradient_is_exact_once_the_value_is(seed, steps):
    """The SVM's generalised Newton steps can land exactly on the solution while the iterate
    before had another active set: the implicit gradient is then the IFT's at the solution
    (the active set of the returned W), as the unrolled gradient is, not the gradient of a
    Newton matrix taken at the earlier iterate."""
    g = torch.Generator().manual_seed(seed)
    phi = torch.randn(1, 6, 4, generator=g, dtype=DT)
    y = torch.arange(3).repeat_interleave(2)[None]
    v = torch.randn(4, 3, generator=g, dtype=DT)
    exact = newton_head(phi, y, 3, lam=0.7, loss="svm", steps=50)
    grads = {}
    for mode in ("implicit", "unrolled"):
        p = phi.clone().requires_grad_(True)
        W = newton_head(p, y, 3, lam=0.7, loss="svm", steps=steps, grad=mode)
        torch.testing.assert_close(W, exact, rtol=0, atol=1e-12)     # converged in value
        grads[mode] = torch.autograd.grad((W * v).sum(), p)[0]
    # the unrolled derivative of an exactly converged generalised-Newton path is the IFT's
    torch.testing.assert_close(grads["implicit"], grads["unrolled"], rtol=1e-9, atol=1e-12)
