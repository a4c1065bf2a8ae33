"""The ELBO, the IWAE bound and the test-set averages against an independent computation
with ``torch.distributions``, from the same noise draws."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, ContinuousBernoulli, Normal, kl_divergence

from metaloop.generative import CVAE, VAE, elbo, evaluate_bounds, gaussian_kl, iwae_bound
from metaloop.generative.bounds import log_weights

B, L, SHAPE = 5, 3, (1, 6, 6)


def _model(conditional: bool, likelihood: str = "bernoulli") -> VAE:
    torch.manual_seed(0)
    kw = dict(hidden=(16,), image_shape=SHAPE, likelihood=likelihood)
    return (CVAE(3, L, **kw) if conditional else VAE(L, **kw)).double()


def _data(likelihood: str = "bernoulli"):
    g = torch.Generator().manual_seed(1)
    x = torch.rand(B, *SHAPE, generator=g, dtype=torch.float64)
    return torch.bernoulli(x, generator=g) if likelihood == "bernoulli" else x


def _reference_log_weights(model: VAE, x, y, eps):
    """log p(x|z) + log p(z) - log q(z|x) for z = mu + sigma * eps ``[k, B, L]``, written
    out with torch.distributions."""
    mu, logvar = model.encoder(x, y).chunk(2, dim=-1)                  # [B, L]
    q = Normal(mu, torch.exp(0.5 * logvar))
    z = mu + q.stddev * eps                                            # [k, B, L]
    out = model.decoder(z, y)                                          # [k, B, 1, 6, 6]
    lik = Bernoulli(logits=out) if model.likelihood == "bernoulli" else ContinuousBernoulli(
        logits=out)
    log_px = lik.log_prob(x).flatten(-3).sum(-1)                       # [k, B]
    log_pz = Normal(0.0, 1.0).log_prob(z).sum(-1)
    return log_px + log_pz - q.log_prob(z).sum(-1), log_px, kl_divergence(
        q, Normal(0.0, 1.0)).sum(-1)


@pytest.mark.parametrize("conditional", [False, True])
@pytest.mark.parametrize("likelihood", ["bernoulli", "cbernoulli"])
def test_elbo_is_one_sample_log_likelihood_minus_closed_form_kl(conditional, likelihood):
    model, x = _model(conditional, likelihood), _data(likelihood)
    y = torch.tensor([0, 1, 2, 0, 1]) if conditional else None
    got = elbo(model, x, y, generator=torch.Generator().manual_seed(7))
    eps = torch.randn(1, B, L, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    _, log_px, kl = _reference_log_weights(model, x, y, eps)
    assert torch.allclose(got["recon"], log_px[0])
    assert torch.allclose(got["kl"], kl)
    assert torch.allclose(got["elbo"], log_px[0] - kl)


@pytest.mark.parametrize("conditional", [False, True])
def test_iwae_bound_is_the_log_mean_of_the_importance_weights(conditional):
    model, x = _model(conditional), _data()
    y = torch.tensor([2, 1, 0, 0, 1]) if conditional else None
    k, chunk = 23, 10
    got = iwae_bound(model, x, k, y, chunk=chunk, generator=torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)             # the same draws, chunk by chunk
    eps = torch.cat([torch.randn(c, B, L, generator=g, dtype=torch.float64)
                     for c in (10, 10, 3)])                            # [k, B, L]
    lw, _, _ = _reference_log_weights(model, x, y, eps)                # [k, B]
    want = torch.log(torch.exp(lw.double()).mean(0))                   # log (1/k) sum w
    assert torch.allclose(got, want, atol=1e-9)
    # in nats per image, at most log p(x), and k = 1 is the one-sample ELBO with a sampled KL
    assert got.shape == (B,) and (got < 0).all()
    one = iwae_bound(model, x, 1, y, generator=torch.Generator().manual_seed(3))
    eps1 = torch.randn(1, B, L, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.allclose(one, _reference_log_weights(model, x, y, eps1)[0][0])


@torch.no_grad()
def test_evaluate_bounds_averages_the_nll_as_minus_iwae_in_nats():
    model, x = _model(False), _data()
    m = evaluate_bounds(model, x, k=11, batch_size=2, seed=5)
    g = torch.Generator().manual_seed(5)             # elbo then iwae, batch by batch
    nll, elbos = [], []
    for s in range(0, B, 2):
        xb = x[s:s + 2]
        elbos.append(elbo(model, xb, generator=g)["elbo"])
        nll.append(-iwae_bound(model, xb, 11, generator=g))
    assert m["n"] == B and m["k"] == 11
    assert m["nll"] == pytest.approx(float(torch.cat(nll).mean()), rel=1e-12)
    assert m["elbo"] == pytest.approx(float(torch.cat(elbos).mean()), rel=1e-12)
    assert m["elbo"] == pytest.approx(m["recon"] - m["kl"], rel=1e-12)
    # nats per image: positive for binary pixels, and an untrained model is near the
    # 36 log 2 of a fair coin per pixel
    assert 0.5 * 36 * math.log(2) < m["nll"] < 2 * 36 * math.log(2)


@torch.no_grad()
@pytest.mark.parametrize("likelihood", ["bernoulli", "cbernoulli"])
def test_bounds_against_the_exact_log_likelihood_of_a_one_dimensional_latent(likelihood):
    # log p(x) = log int p(x|z) N(z; 0, 1) dz by the trapezoid rule on a fine grid (a 1-D z),
    # and the exact ELBO = int q log p(x|z) - KL on the same grid: then
    # ELBO <= IWAE_k (mean over draws) <= log p(x), IWAE_k grows with k and reaches log p(x).
    torch.manual_seed(0)
    model = VAE(1, hidden=(8,), image_shape=(1, 2, 2), likelihood=likelihood).double()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 1, 2, 2, generator=g, dtype=torch.float64)
    x = torch.bernoulli(x, generator=g) if likelihood == "bernoulli" else x
    z = torch.linspace(-12, 12, 24001, dtype=torch.float64)                # [G]
    log_pxz = model.log_px(x, z.reshape(-1, 1, 1).expand(-1, 3, 1))        # [G, 3]
    prior = Normal(0.0, 1.0).log_prob(z)[:, None]                          # [G, 1]
    dz = float(z[1] - z[0])
    log_p = torch.logsumexp(log_pxz + prior, 0) + math.log(dz)            # [3]
    mu, logvar = model.posterior(x)                                        # [3, 1]
    q = Normal(mu[:, 0], torch.exp(0.5 * logvar[:, 0]))
    qz = torch.exp(q.log_prob(z[:, None]))                                 # [G, 3]
    exact_elbo = (qz * log_pxz).sum(0) * dz - gaussian_kl(mu, logvar)      # [3]
    posterior = log_pxz + prior - log_p                                    # log p(z|x)
    kl_to_posterior = (qz * (q.log_prob(z[:, None]) - posterior)).sum(0) * dz
    assert torch.allclose(log_p - exact_elbo, kl_to_posterior, atol=1e-6)  # the ELBO's gap
    assert (exact_elbo < log_p - 0.01).all()
    # E_q[w^2] / p(x)^2, small enough here for IWAE_5000 to sit within 0.02 of log p(x)
    rel_var = torch.exp(torch.logsumexp(2 * (log_pxz + prior) - q.log_prob(z[:, None]), 0)
                        + math.log(dz) - 2 * log_p)
    assert (rel_var < 10).all()
    gen = torch.Generator().manual_seed(2)
    lw = log_weights(model, x, 200_000, generator=gen)                     # [R * k, 3]
    means = {k: (torch.logsumexp(lw.reshape(-1, k, 3), 1) - math.log(k)).mean(0)
             for k in (1, 10, 100)}                                        # over R draws
    means[5000] = torch.stack([iwae_bound(model, x, 5000, generator=gen)
                               for _ in range(20)]).mean(0)
    assert torch.allclose(means[1], exact_elbo, atol=0.02)                 # IWAE_1 = ELBO
    assert (means[1] < means[10]).all() and (means[10] < means[100]).all()
    assert (means[100] < log_p + 0.01).all()
    assert torch.allclose(means[5000], log_p, atol=0.02)
