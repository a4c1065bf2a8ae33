"""What the training loop feeds the models and what the models return, against independent
computations: dynamic binarisation counted over batches (in ``fit_generative`` and the IWAE
protocol), the learning-rate schedule, the beta-VAE loss written out with
``torch.distributions``, the conditional networks' use of the label, reconstructions at the
posterior mean, and the autoencoder's code Gaussian (fitted by NumPy, sampled through its
Cholesky factor)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Bernoulli, Normal, kl_divergence

from metaloop.generative import AE, CVAE, VAE, fit_code_gaussian, fit_generative
from metaloop.generative import protocol as P


class RecordingVAE(VAE):
    """A VAE that keeps every training batch it is given."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.batches = []

    def loss(self, x, y=None, generator=None):
        self.batches.append(x.detach().clone())
        return super().loss(x, y, generator)


def _check_fresh_coins(seen: torch.Tensor, p: float) -> None:
    """Batches ``[S, B, ...]`` of one grey level ``p``, binarised afresh in each batch."""
    assert set(seen.unique().tolist()) == {0.0, 1.0}
    assert abs(float(seen.mean()) - p) < 4 * math.sqrt(p * (1 - p) / seen.numel())
    firsts = seen[:, 0]                # the batches' first images: 64 coins, never alike
    assert len({tuple(b.flatten().tolist()) for b in firsts}) == len(seen)
    # every pixel position inked in some batches and not in others
    per_pixel = seen.flatten(1).mean(0)
    assert ((per_pixel > 0) & (per_pixel < 1)).float().mean() > 0.95


def test_dynamic_binarisation_draws_fresh_coins_in_every_batch():
    # every image is the same grey 77/255 = 0.302: a fresh Bernoulli draw in every batch
    # gives batches that differ, with ink at that rate, and each pixel inked in some epochs
    # and not in others
    torch.manual_seed(0)
    images = torch.full((8, 1, 8, 8), 77, dtype=torch.uint8)
    model = RecordingVAE(2, hidden=(4,), image_shape=(1, 8, 8))
    fit_generative(model, images, epochs=25, batch_size=8, progress=False, seed=3)
    seen = torch.stack(model.batches)                          # [25, 8, 1, 8, 8]
    assert seen.shape == (25, 8, 1, 8, 8)
    _check_fresh_coins(seen, 77 / 255)


def test_the_iwae_protocol_binarises_afresh_in_every_pass(monkeypatch, tmp_path):
    batches = []
    loss = VAE.loss

    def recording(self, x, y=None, generator=None):
        batches.append(x.detach().clone())
        return loss(self, x, y, generator)

    monkeypatch.setattr(VAE, "loss", recording)
    images = torch.full((8, 1, 8, 8), 77, dtype=torch.uint8)
    s = P.ProtocolSettings(latent=2, hidden=(4,), batch_size=8, stages=3, checkpoint_every=100)
    P.train_protocol(images, tmp_path / "run", s)                  # 1 + 3 + 9 passes
    seen = torch.stack(batches)                                    # [13, 8, 1, 8, 8]
    assert seen.shape == (13, 8, 1, 8, 8)
    _check_fresh_coins(seen, 77 / 255)


def test_the_beta_vae_loss_is_minus_recon_plus_beta_kl():
    torch.manual_seed(0)
    model = VAE(3, hidden=(8,), image_shape=(1, 4, 4), beta=0.3).double()
    g = torch.Generator().manual_seed(1)
    x = torch.bernoulli(torch.full((6, 1, 4, 4), 0.4, dtype=torch.float64), generator=g)
    loss, metrics = model.loss(x, generator=torch.Generator().manual_seed(2))
    mu, logvar = model.encoder(x).chunk(2, dim=-1)                       # [6, 3]
    eps = torch.randn(6, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    q = Normal(mu, torch.exp(0.5 * logvar))
    recon = Bernoulli(logits=model.decoder(mu + q.stddev * eps)).log_prob(x).flatten(1).sum(1)
    kl = kl_divergence(q, Normal(0.0, 1.0)).sum(-1)
    want = -(recon - 0.3 * kl).mean()
    assert torch.allclose(loss, want, rtol=1e-12)
    assert metrics["kl"] > 0.05           # so that the weight on it matters
    assert math.isclose(metrics["loss"], float(want.detach()), rel_tol=1e-12)
    assert math.isclose(metrics["elbo"], float((recon - kl).mean().detach()), rel_tol=1e-12)


def test_conditional_encoder_and_decoder_use_the_label():
    torch.manual_seed(0)
    model = CVAE(3, 2, hidden=(8,), image_shape=(1, 4, 4)).double()
    x = torch.bernoulli(torch.full((1, 1, 4, 4), 0.5, dtype=torch.float64),
                        generator=torch.Generator().manual_seed(1)).expand(3, -1, -1, -1)
    y = torch.tensor([2, 0, 1])
    onehot = torch.eye(3, dtype=torch.float64)[y]                  # [3, 3]
    inputs = []
    for first in (model.encoder.head[0], model.decoder.head[0]):   # the first Linear layers
        first.register_forward_hook(lambda m, i, o: inputs.append(i[0].detach().clone()))
    mu, _ = model.posterior(x, y)                                  # one image, three labels
    z = torch.zeros(3, 2, dtype=torch.float64)
    out = model.decode(z, y)                                       # one code, three labels
    # the first layers see [image features, one-hot] and [z, one-hot]
    assert torch.equal(inputs[0], torch.cat([model.encoder.body(x), onehot], -1))
    assert torch.equal(inputs[1], torch.cat([z, onehot], -1))
    # and so one image (one code) gives a different posterior (image) for every label
    assert (mu[0] - mu[1]).abs().max() > 1e-3 and (mu[1] - mu[2]).abs().max() > 1e-3
    assert (out[0] - out[1]).abs().max() > 1e-3 and (out[1] - out[2]).abs().max() > 1e-3


def test_autoencoder_samples_from_the_code_gaussian_use_its_cholesky_factor():
    torch.manual_seed(0)
    model = AE(2, hidden=(6,), image_shape=(1, 3, 3)).double()
    mean = torch.tensor([0.5, -1.0], dtype=torch.float64)
    cov = torch.tensor([[2.0, 1.2], [1.2, 1.0]], dtype=torch.float64)      # not diagonal
    got = model.sample(5, generator=torch.Generator().manual_seed(4), code_gaussian=(mean, cov))
    eps = torch.randn(5, 2, generator=torch.Generator().manual_seed(4)).double()
    chol = torch.tensor([[math.sqrt(2.0), 0.0],
                         [1.2 / math.sqrt(2.0), math.sqrt(1.0 - 1.44 / 2.0)]],
                        dtype=torch.float64)                               # cov = chol chol^T
    assert torch.allclose(chol @ chol.T, cov)
    want = torch.sigmoid(model.decoder(mean + eps @ chol.T))
    assert torch.allclose(got, want, rtol=1e-10)


def test_reconstructions_and_codes_use_the_posterior_mean():
    torch.manual_seed(0)
    model = VAE(3, hidden=(8,), image_shape=(1, 4, 4)).double()
    x = torch.bernoulli(torch.full((5, 1, 4, 4), 0.5, dtype=torch.float64),
                        generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        mu = model.encoder(x)[:, :3]                       # the first half is the mean
        want = torch.sigmoid(model.decoder(mu))            # Bernoulli mean of p(x | mu)
    assert torch.equal(model.codes(x), mu)
    assert torch.allclose(model.reconstruct(x), want, rtol=1e-12)
    ae = AE(3, hidden=(8,), image_shape=(1, 4, 4)).double()
    with torch.no_grad():
        assert torch.allclose(ae.reconstruct(x), torch.sigmoid(ae.decoder(ae.encoder(x))),
                              rtol=1e-12)


def test_the_learning_rate_decays_geometrically_over_the_run_or_the_budget():
    # 16 images in batches of 8 for 4 epochs: 8 steps, step s at lr (lr_end / lr)^(s / 8);
    # each record holds the rate of its epoch's last step (s = 1, 3, 5, 7)
    images = torch.full((16, 1, 4, 4), 128, dtype=torch.uint8)
    want = [1e-2 * (1e-3 / 1e-2) ** (s / 8) for s in (1, 3, 5, 7)]
    for budget in (None, 1e6):               # a budget far off: the epochs run out first
        torch.manual_seed(0)
        hist = fit_generative(AE(2, hidden=(4,), image_shape=(1, 4, 4)), images, epochs=4,
                              batch_size=8, lr=1e-2, lr_end=1e-3, cpu_budget_s=budget,
                              progress=False)
        assert [h["lr"] for h in hist] == pytest.approx(want, rel=1e-4)
    # a spent budget: the schedule is at its end from the first step
    torch.manual_seed(0)
    hist = fit_generative(AE(2, hidden=(4,), image_shape=(1, 4, 4)), images, epochs=4,
                          batch_size=8, lr=1e-2, lr_end=1e-3, cpu_budget_s=1e-9,
                          progress=False)
    assert len(hist) == 1 and hist[0]["steps"] == 1 and hist[0]["lr"] == pytest.approx(1e-3)


class MarkedAE(AE):
    """An autoencoder whose ``marked`` metric is each batch's mean of "this image is the
    marked one" (its first pixel fully inked), as a model reports a per-image mean."""

    def loss(self, x, y=None, generator=None):
        loss, metrics = super().loss(x, y, generator)
        return loss, {**metrics, "marked": float((x[:, 0, 0, 0] == 1).double().mean())}


@pytest.mark.parametrize("seed", range(4))
def test_epoch_metrics_are_means_over_the_images_not_over_the_batches(seed):
    # 101 images in batches of 100: the last batch holds one image. One image is marked,
    # so its epoch mean is 1/101 wherever the shuffle puts it (a mean of the two batch
    # means would give 0.005, or 0.5 with the marked image alone in the last batch)
    images = torch.zeros(101, 1, 4, 4, dtype=torch.uint8)
    images[17, 0, 0, 0] = 255
    torch.manual_seed(0)
    hist = fit_generative(MarkedAE(2, hidden=(4,), image_shape=(1, 4, 4)), images,
                          epochs=3, batch_size=100, binarize="none", progress=False,
                          seed=seed)
    assert [h["marked"] for h in hist] == pytest.approx([1 / 101] * 3, rel=1e-12)


def test_epoch_metrics_of_equal_batches_are_the_plain_mean_of_the_batch_means():
    """Where every batch has one size, the epoch's number is the mean of the batch means,
    to the last bit, as the recorded curves were computed (weighting by sizes changes the
    last bit in most epochs)."""
    seen = []

    class Recording(MarkedAE):
        def loss(self, x, y=None, generator=None):
            loss, metrics = super().loss(x, y, generator)
            seen.append(metrics["loss"])
            return loss, metrics
    torch.manual_seed(0)
    images = torch.randint(0, 2, (96, 1, 4, 4), dtype=torch.uint8) * 255
    hist = fit_generative(Recording(2, hidden=(4,), image_shape=(1, 4, 4)), images, epochs=6,
                          batch_size=24, binarize="none", progress=False)
    assert [h["loss"] for h in hist] == [sum(seen[i:i + 4]) / 4 for i in range(0, 24, 4)]


def test_the_code_gaussian_is_the_mean_and_full_covariance_of_the_codes():
    torch.manual_seed(0)
    model = AE(3, hidden=(6,), image_shape=(1, 4, 4)).double()
    x = torch.rand(50, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        z = model.encoder(x).numpy()                                        # [50, 3]
    mean, cov = fit_code_gaussian(model, x, batch_size=7, jitter=0.0)
    assert torch.allclose(mean, torch.from_numpy(np.mean(z, 0)), rtol=1e-10)
    want = torch.from_numpy(np.cov(z, rowvar=False))                         # [3, 3]
    assert (want - torch.diag(want.diagonal())).abs().max() > 1e-4           # correlated codes
    assert torch.allclose(cov, want, rtol=1e-10, atol=1e-14)
