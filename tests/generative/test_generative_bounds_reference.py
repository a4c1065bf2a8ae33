"""The ELBO, the IWAE bound and the test-set averages against an independent computation
with ``torch.distributions``, from the same noise draws."""

from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Bernoulli, ContinuousBernoulli, Normal, kl_divergence

from metaloop.generative import CVAE, VAE, elbo, evaluate_bounds, iwae_bound

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
