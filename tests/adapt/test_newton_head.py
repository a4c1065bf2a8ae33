"""newton_head (logistic and SVM): against scipy L-BFGS, both gradient modes, errors."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.optimize import minimize
from scipy.special import logsumexp

from metaloop.adapt.newton_head import newton_head, svm_head
from metaloop.adapt.ridge_head import head_logits

# the module, not the function metaloop.adapt re-exports under the same name
nh = importlib.import_module("metaloop.adapt.newton_head")

sys.path.insert(0, str(Path(__file__).parent))
from _checks import LargestOutput  # noqa: E402

DT = torch.float64
LOSSES = ["logistic", "svm"]
# (N, D): the representer side (N < D) and the primal side (N >= D).
REGIMES = [(6, 10), (20, 4)]


def _data(B, N, D, C, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    phi = scale * torch.randn(B, N, D, generator=g, dtype=DT)
    labels = torch.stack([torch.randperm(N, generator=g) % C for _ in range(B)])   # [B, N]
    return phi, labels


def _objective(w, phi, y, C, lam, loss):
    """Independent numpy objective and gradient for one task; w is W [D, C] flattened."""
    N, D = phi.shape
    W = w.reshape(D, C)
    z = phi @ W                                                     # [N, C]
    rows = np.arange(N)
    if loss == "logistic":
        lse = logsumexp(z, axis=1)
        f = (lse - z[rows, y]).sum()
        r = np.exp(z - lse[:, None])
        r[rows, y] -= 1.0
    else:
        h = np.maximum(0.0, 1.0 + z - z[rows, y][:, None])
        h[rows, y] = 0.0
        f = (h ** 2).sum()
        r = 2.0 * h
        r[rows, y] = -2.0 * h.sum(axis=1)
    return f + 0.5 * lam * (W ** 2).sum(), (phi.T @ r + lam * W).ravel()


def _scipy_head(phi, labels, C, lam, loss):
    """Reference W [B, D, C] by scipy L-BFGS-B, one task at a time."""
    out = []
    for p, y in zip(phi.numpy(), labels.numpy(), strict=True):
        res = minimize(_objective, np.zeros(p.shape[1] * C), args=(p, y, C, lam, loss),
                       jac=True, method="L-BFGS-B",
                       options={"maxiter": 5000, "gtol": 1e-12, "ftol": 1e-16, "maxcor": 30})
        out.append(res.x.reshape(p.shape[1], C))
    return torch.from_numpy(np.stack(out))


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("N,D", REGIMES)
def test_matches_scipy_lbfgs(loss, N, D):
    C, lam = 3, 0.5
    phi, labels = _data(2, N, D, C)
    W = newton_head(phi, labels, C, lam=lam, steps=25, loss=loss)
    assert W.shape == (2, D, C) and W.dtype == DT
    torch.testing.assert_close(W, _scipy_head(phi, labels, C, lam, loss), rtol=0, atol=1e-6)
    for b in range(2):   # our solution is stationary to near machine precision
        _, g = _objective(W[b].numpy().ravel(), phi[b].numpy(), labels[b].numpy(), C, lam, loss)
        assert np.abs(g).max() < 1e-10


@pytest.mark.parametrize("loss", LOSSES)
def test_representer_and_primal_sides_agree(loss):
    # Same problem solved with N < D (padding features with zero columns keeps the solution).
    phi, labels = _data(2, 8, 5, 4)
    W = newton_head(phi, labels, 4, lam=0.3, steps=30, loss=loss)                 # primal
    wide = torch.cat([phi, torch.zeros(2, 8, 7, dtype=DT)], dim=2)                   # D = 12
    W_wide = newton_head(wide, labels, 4, lam=0.3, steps=30, loss=loss)           # representer
    torch.testing.assert_close(W_wide[:, :5], W, rtol=0, atol=1e-10)
    torch.testing.assert_close(W_wide[:, 5:], torch.zeros_like(W_wide[:, 5:]))


@pytest.mark.parametrize("loss", LOSSES)
def test_duplicate_support_examples_singular_gram(loss):
    # N < D but K = Phi Phi^T is singular: the representer system must still be well posed.
    phi, labels = _data(1, 6, 10, 3)
    phi = torch.cat([phi, phi[:, :3]], dim=1)                                       # [1, 9, 10]
    labels = torch.cat([labels, labels[:, :3]], dim=1)                              # [1, 9]
    W = newton_head(phi, labels, 3, lam=0.5, steps=25, loss=loss)
    torch.testing.assert_close(W, _scipy_head(phi, labels, 3, 0.5, loss), rtol=0, atol=1e-6)


def test_float32_matches_float64():
    phi, labels = _data(2, 6, 10, 3)
    for loss in LOSSES:
        W32 = newton_head(phi.float(), labels, 3, lam=0.5, steps=10, loss=loss)
        W64 = newton_head(phi, labels, 3, lam=0.5, steps=10, loss=loss)
        assert W32.dtype == torch.float32
        torch.testing.assert_close(W32.double(), W64, rtol=1e-4, atol=1e-5)


def test_svm_head_is_newton_head_with_svm_loss():
    phi, labels = _data(2, 6, 9, 3)
    torch.testing.assert_close(svm_head(phi, labels, 3, lam=0.5, steps=4),
                               newton_head(phi, labels, 3, lam=0.5, steps=4, loss="svm"))


def test_classifies_support_set_with_small_lam():
    phi, labels = _data(3, 10, 16, 5)
    for loss in LOSSES:
        W = newton_head(phi, labels, 5, lam=0.01, steps=15, loss=loss)
        assert torch.equal(head_logits(phi, W).argmax(-1), labels)


def test_line_search_keeps_newton_from_diverging(monkeypatch):
    # A task on which full, undamped Newton steps from zero diverge (found by search).
    g = torch.Generator().manual_seed(0)
    phi = torch.randn(16, 40, 24, generator=g, dtype=DT)[:1]                     # [1, 40, 24]
    labels = torch.randperm(40, generator=g)[None] % 5                            # [1, 40]
    lam, p, y = 0.1, phi[0].numpy(), labels[0].numpy()

    def objective_and_grad(steps):
        W = newton_head(phi, labels, 5, lam=lam, steps=steps)
        f, grad = _objective(W[0].numpy().ravel(), p, y, 5, lam, "logistic")
        return f, np.abs(grad).max()

    values = [objective_and_grad(s) for s in range(1, 21)]
    assert all(b[0] <= a[0] + 1e-12 for a, b in zip(values, values[1:]))   # monotone
    assert values[-1][1] < 1e-10
    monkeypatch.setattr(nh, "_step_sizes", lambda problem, x, d, slope: torch.ones(x.shape[0]))
    assert objective_and_grad(20)[1] > 1.0                          # the undamped iteration


def _query_loss(W, query, q_labels):
    logits = head_logits(query, W)                                  # [B, M, C]
    return torch.nn.functional.cross_entropy(logits.flatten(0, 1), q_labels.flatten())


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("N,D", REGIMES)
def test_implicit_matches_unrolled_at_convergence(loss, N, D):
    C = 3
    phi, labels = _data(2, N, D, C)
    query, q_labels = _data(2, 7, D, C, seed=1)
    grads = {}
    for mode in ("unrolled", "implicit"):
        f = phi.clone().requires_grad_(True)
        lam = torch.tensor(0.4, dtype=DT, requires_grad=True)
        W = newton_head(f, labels, C, lam=lam, steps=20, loss=loss, grad=mode)
        grads[mode] = (W.detach(), *torch.autograd.grad(_query_loss(W, query, q_labels), (f, lam)))
    for u, i in zip(grads["unrolled"], grads["implicit"], strict=True):
        torch.testing.assert_close(i, u, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("loss", LOSSES)
def test_implicit_forward_equals_unrolled_forward_for_any_steps(loss):
    phi, labels = _data(2, 6, 10, 3, scale=3.0)
    for steps in (1, 2, 3):
        u = newton_head(phi, labels, 3, lam=0.05, steps=steps, loss=loss, grad="unrolled")
        i = newton_head(phi, labels, 3, lam=0.05, steps=steps, loss=loss, grad="implicit")
        torch.testing.assert_close(i, u, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("N,D", [(4, 5), (6, 2)])
def test_implicit_solves_no_extra_system_under_no_grad(loss, N, D, monkeypatch):
    """Evaluation runs under no_grad: the implicit mode's extra solve at the result, which
    only gives a Jacobian, is skipped there (the same number of solves as unrolled), and
    the head is the same."""
    nh = importlib.import_module("metaloop.adapt.newton_head")
    phi, labels = _data(2, N, D, 3, scale=3.0)
    calls = []
    for space in (nh._Primal, nh._Representer):
        real = space.direction

        def counted(self, *a, _real=real, **k):
            calls.append(1)
            return _real(self, *a, **k)
        monkeypatch.setattr(space, "direction", counted)
    heads = {}
    for mode in ("unrolled", "implicit"):
        calls.clear()
        with torch.no_grad():
            heads[mode] = newton_head(phi, labels, 3, lam=0.05, steps=3, loss=loss, grad=mode)
        assert len(calls) == 3, mode
    assert torch.equal(heads["implicit"], heads["unrolled"])
    calls.clear()
    newton_head(phi.requires_grad_(), labels, 3, lam=0.05, steps=3, loss=loss,
                grad="implicit")
    assert len(calls) == 4                  # with gradients: the solve at the result


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("mode", ["unrolled", "implicit"])
@pytest.mark.parametrize("N,D", [(4, 5), (6, 2)])
def test_gradcheck_features_and_lam(loss, mode, N, D):
    C = 2
    phi, labels = _data(1, N, D, C, seed=3)
    phi.requires_grad_(True)
    lam = torch.tensor(0.7, dtype=DT, requires_grad=True)
    # Implicit gradients are exact at the solution only, so give that mode enough steps.
    steps = 3 if mode == "unrolled" else 8     # converged to 1e-15 by step 6

    def f(phi, lam):
        return newton_head(phi, labels, C, lam=lam, steps=steps, loss=loss, grad=mode)

    assert torch.autograd.gradcheck(f, (phi, lam))


def _graph_size(t: torch.Tensor) -> int:
    seen, todo = set(), [t.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        todo.extend(n for n, _ in node.next_functions)
    return len(seen)


@pytest.mark.parametrize("N,D", REGIMES)
def test_implicit_graph_does_not_grow_with_steps(N, D):
    phi, labels = _data(1, N, D, 3)
    phi.requires_grad_(True)
    size = {(mode, s): _graph_size(newton_head(phi, labels, 3, steps=s, grad=mode))
            for mode in ("unrolled", "implicit") for s in (2, 6)}
    assert size["implicit", 2] == size["implicit", 6]
    assert size["unrolled", 6] > size["unrolled", 2] > size["implicit", 2]


@pytest.mark.parametrize("loss", LOSSES)
def test_representer_side_never_forms_a_dc_by_dc_matrix(loss):
    N, D, C = 6, 300, 3
    phi, labels = _data(1, N, D, C)
    phi.requires_grad_(True)
    with LargestOutput() as spy:
        W = newton_head(phi, labels, C, lam=1.0, steps=3, loss=loss)
        W.sum().backward()
    assert spy.largest <= N * D        # (D C)^2 would be 810000


@pytest.mark.parametrize("lam", [0.0, -0.5, float("nan"), torch.tensor(0.0)])
def test_nonpositive_lam_is_rejected(lam):
    phi, labels = _data(1, 6, 4, 3)
    with pytest.raises(ValueError, match="lam must be finite and > 0"):
        newton_head(phi, labels, 3, lam=lam)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("N,D", REGIMES)
def test_a_lam_too_small_for_the_features_is_named_as_such(loss, N, D):
    # all-zero features (a dead backbone): the Newton system is lam I, and lam=1e-50 is 0 in
    # float32. On either side the error names lam, not NaN features, nor torch's LinAlgError.
    phi, labels = _data(1, N, D, 3)
    with pytest.raises(ValueError, match=r"newton_head: the Newton system is singular in "
                       r"torch.float32: lam=1e-50 is too small .*raise lam"):
        newton_head(torch.zeros_like(phi, dtype=torch.float32), labels, 3, lam=1e-50,
                    loss=loss)


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("bad", [-1, 3])
def test_labels_out_of_range_are_rejected(loss, bad):
    phi, labels = _data(2, 6, 4, 3)
    labels[1, 2] = bad
    with pytest.raises(ValueError, match=rf"labels must lie in \[0, n_classes=3\), found {bad}"):
        newton_head(phi, labels, 3, loss=loss)


@pytest.mark.parametrize("loss", LOSSES)
def test_class_without_support_example_is_rejected(loss):
    phi, labels = _data(2, 6, 4, 3)
    labels[1] = torch.tensor([0, 0, 1, 1, 0, 1])
    with pytest.raises(ValueError, match=r"at least one support example.*task 1 class 2"):
        newton_head(phi, labels, 3, loss=loss)


def test_other_bad_arguments_are_rejected():
    phi, labels = _data(2, 6, 4, 3)
    cases = [
        (dict(labels=labels.int()), "labels must be int64"),
        (dict(labels=labels[:, :5]), r"labels must be \[B, N\] = \[2, 6\]"),
        (dict(n_classes=1), "n_classes must be an int >= 2"),
        (dict(steps=0), "steps must be an int >= 1"),
        (dict(loss="hinge"), "loss must be one of"),
        (dict(grad="ift"), "grad must be one of"),
        (dict(features=phi[0]), r"features must be \[B, N, D\]"),
    ]
    for override, match in cases:
        kwargs = dict(features=phi, labels=labels, n_classes=3) | override
        with pytest.raises(ValueError, match=match):
            newton_head(**kwargs)
