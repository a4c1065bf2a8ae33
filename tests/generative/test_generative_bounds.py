"""The maths: analytic KL, reparameterised gradients, and the IWAE bound's ordering."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metaloop.generative import (
    AE,
    VAE,
    elbo,
    evaluate_bounds,
    gaussian_kl,
    iwae_bound,
    reparameterize,
)
from metaloop.generative.nets import latent_log_normal


def test_analytic_kl_matches_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([[0.0, 1.5, -0.7], [2.0, -1.0, 0.3]], dtype=torch.float64)
    logvar = torch.tensor([[0.0, -1.0, 0.8], [-2.0, 0.5, 0.0]], dtype=torch.float64)
    n = 200_000
    z = reparameterize(mu, logvar, n=n, generator=g)                     # [n, 2, 3]
    zeros = torch.zeros_like(mu)
    log_ratio = latent_log_normal(z, mu, logvar) - latent_log_normal(z, zeros, zeros)   # [n, 2]
    mc, se = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n)
    analytic = gaussian_kl(mu, logvar)
    assert torch.all((mc - analytic).abs() < 4 * se), (mc, analytic, se)
    assert gaussian_kl(zeros, zeros).abs().max() == 0


def test_reparameterised_gradient_matches_analytic_gradient():
    # E_{z ~ N(mu, sigma^2)}[z^2] = mu^2 + sigma^2, so d/dmu = 2 mu, d/dlogvar = sigma^2.
    mu = torch.tensor([0.7, -1.2], dtype=torch.float64, requires_grad=True)
    logvar = torch.tensor([-0.5, 0.4], dtype=torch.float64, requires_grad=True)
    n = 400_000
    z = reparameterize(mu, logvar, n=n, generator=torch.Generator().manual_seed(1))  # [n, 2]
    per_sample = z.square()
    grad_mu, grad_lv = torch.autograd.grad(per_sample.mean(0).sum(), (mu, logvar))
    with torch.no_grad():
        eps = (z - mu) / torch.exp(0.5 * logvar)
        se_mu = (2 * z).std(0) / math.sqrt(n)                      # per-sample grads wrt mu
        se_lv = (z * eps * torch.exp(0.5 * logvar)).std(0) / math.sqrt(n)
        want_mu, want_lv = 2 * mu, torch.exp(logvar)
    assert torch.all((grad_mu - want_mu).abs() < 4 * se_mu), (grad_mu, want_mu)
    assert torch.all((grad_lv - want_lv).abs() < 4 * se_lv), (grad_lv, want_lv)


@pytest.fixture(scope="module")
def small_vae_and_data():
    torch.manual_seed(0)
    model = VAE(4, hidden=(32,), image_shape=(1, 8, 8))
    x = torch.bernoulli(torch.full((16, 1, 8, 8), 0.3), generator=torch.Generator().manual_seed(2))
    return model, x


@torch.no_grad()
def test_iwae_bound_is_above_elbo_and_grows_with_k(small_vae_and_data):
    model, x = small_vae_and_data
    g = torch.Generator().manual_seed(3)
    reps = 40
    e = torch.stack([elbo(model, x, generator=g)["elbo"] for _ in range(200)])   # [200, B]
    bounds = {k: torch.stack([iwae_bound(model, x, k, chunk=16, generator=g) for _ in range(reps)])
              for k in (1, 5, 50, 200)}                                            # [reps, B]
    tol = {k: 4 * b.mean(1).std() / math.sqrt(reps) + 1e-3 for k, b in bounds.items()}
    means = {k: float(b.mean()) for k, b in bounds.items()}
    # k = 1 is the ELBO in expectation (the analytic KL only lowers its variance)
    assert abs(means[1] - float(e.mean())) < tol[1] + 4 * e.mean(1).std() / math.sqrt(200)
    ks = sorted(means)
    for a, b in zip(ks, ks[1:]):
        assert means[b] >= means[a] - tol[a] - tol[b], means
    assert means[200] > float(e.mean()) + 0.5, (means, float(e.mean()))  # a real gap here


def test_iwae_rejects_bad_k(small_vae_and_data):
    model, x = small_vae_and_data
    with pytest.raises(ValueError, match="k >= 1"):
        iwae_bound(model, x, 0)


def _bin(n=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 28, 28, generator=g) < 0.3).float()


def test_iwae_bound_refuses_nan_pixels():
    m = VAE(4, hidden=(16,)).eval()
    with torch.no_grad(), pytest.raises(ValueError, match="finite"):
        iwae_bound(m, torch.full((2, 1, 28, 28), float("nan")), 3)


@pytest.mark.parametrize("n", [0, -1, 1.0, True])
def test_reparameterize_needs_a_positive_int_n(n):
    with pytest.raises(ValueError, match="n must be a positive int"):
        reparameterize(torch.zeros(2, 3), torch.zeros(2, 3), n=n)


def test_numpy_ints_are_taken_for_k():
    m = VAE(4, hidden=(16,)).eval()
    x = _bin()
    with torch.no_grad():
        torch.manual_seed(0)
        a = iwae_bound(m, x, np.int64(3), chunk=np.int32(2),
                       generator=torch.Generator().manual_seed(1))
        b = iwae_bound(m, x, 3, chunk=2, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    out = evaluate_bounds(m, x, k=np.int64(3), batch_size=np.int64(1))
    assert out["k"] == 3 and type(out["k"]) is int


@pytest.mark.parametrize("call", [
    lambda m, x: elbo(m, x),
    lambda m, x: iwae_bound(m, x, 2),
    lambda m, x: evaluate_bounds(m, x),
])
def test_bounds_on_an_autoencoder_name_the_model(call):
    with torch.no_grad(), pytest.raises(ValueError, match="needs a VAE or CVAE.*got AE"):
        call(AE(4, hidden=(16,)), _bin())
