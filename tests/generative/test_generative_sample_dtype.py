"""Sampling follows the model's dtype (and device): a float64 model samples in float64, from
the same z a float32 one draws with the same seed."""

from __future__ import annotations

import pytest
import torch

from metaloop.generative import AE, CVAE, VAE, fit_code_gaussian, sample_classes


def _z(n, latent, seed=0):
    return torch.randn(n, latent, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("make", [lambda: VAE(3, hidden=(8,)), lambda: AE(3, hidden=(8,))])
def test_a_float64_model_samples_the_same_z_in_float64(make):
    torch.manual_seed(0)
    model = make().double()
    x = model.sample(4, generator=torch.Generator().manual_seed(0))
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.float64
    want = model.decode_mean(_z(4, 3).double())
    assert torch.equal(x, want)


def test_a_float64_cvae_samples_its_classes():
    torch.manual_seed(0)
    model = CVAE(3, 2, hidden=(8,)).double()
    rows = sample_classes(model, [2, 0], 3, generator=torch.Generator().manual_seed(1))
    assert rows.shape == (2, 3, 1, 28, 28) and rows.dtype == torch.float64
    y = torch.tensor([2, 2, 2, 0, 0, 0])
    assert torch.equal(rows.reshape(6, 1, 28, 28),
                       model.decode_mean(_z(6, 2, seed=1).double(), y))


def test_a_float64_ae_samples_from_the_gaussian_fitted_to_its_codes():
    torch.manual_seed(0)
    model = AE(3, hidden=(8,)).double()
    g = torch.Generator().manual_seed(0)
    x = torch.bernoulli(torch.full((20, 1, 28, 28), 0.3, dtype=torch.float64), generator=g)
    mean, cov = fit_code_gaussian(model, x)
    assert mean.dtype == cov.dtype == torch.float64
    s = model.sample(5, generator=torch.Generator().manual_seed(2), code_gaussian=(mean, cov))
    chol = torch.linalg.cholesky(cov)
    assert torch.allclose(s, model.decode_mean(mean + _z(5, 3, seed=2).double() @ chol.T))
