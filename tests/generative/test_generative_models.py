"""Shapes, likelihoods, training and the errors of the AE, VAE and CVAE."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metaloop.generative import (
    AE,
    CVAE,
    VAE,
    fit_code_gaussian,
    fit_generative,
    likelihoods,
    sample_classes,
)
from metaloop.generative import data as gdata
from metaloop.generative.quality import class_frechet_distance, frechet_distance


def _images(n=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, 28, 28, generator=g) * 255).to(torch.uint8)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
@pytest.mark.parametrize("likelihood", likelihoods.KINDS)
def test_vae_shapes(arch, likelihood):
    m = VAE(3, arch=arch, hidden=(16,), likelihood=likelihood)
    x = gdata.binarize_static(_images(5))
    mu, logvar = m.posterior(x)
    assert mu.shape == logvar.shape == (5, 3)
    assert m.log_px(x, torch.randn(7, 5, 3)).shape == (7, 5)
    loss, metrics = m.loss(x)
    loss.backward()
    assert set(metrics) == {"loss", "elbo", "recon", "kl"}
    assert math.isclose(metrics["elbo"], metrics["recon"] - metrics["kl"], rel_tol=1e-5)
    s = m.sample(4)
    assert s.shape == (4, 1, 28, 28) and s.min() >= 0 and s.max() <= 1
    assert m.reconstruct(x).shape == x.shape


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_ae_and_cvae_shapes(arch):
    x = gdata.binarize_static(_images(6))
    ae = AE(4, arch=arch, hidden=(16,))
    assert ae.codes(x).shape == (6, 4) and ae.sample(3).shape == (3, 1, 28, 28)
    mean, cov = fit_code_gaussian(ae, x)
    assert mean.shape == (4,) and cov.shape == (4, 4)
    assert ae.sample(3, code_gaussian=(mean, cov)).shape == (3, 1, 28, 28)
    cv = CVAE(3, 2, arch=arch, hidden=(16,))
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    assert cv.posterior(x, y)[0].shape == (6, 2)
    assert sample_classes(cv, [2, 0], 5).shape == (2, 5, 1, 28, 28)


def test_likelihoods_match_torch_distributions():
    out = torch.randn(3, 1, 4, 4, dtype=torch.float64)
    x = torch.rand(3, 1, 4, 4, dtype=torch.float64)
    xb = torch.bernoulli(x)
    bern = torch.distributions.Bernoulli(logits=out).log_prob(xb).flatten(1).sum(1)
    assert torch.allclose(likelihoods.log_prob(out, xb, "bernoulli"), bern)
    cb = torch.distributions.ContinuousBernoulli(logits=out).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(likelihoods.log_prob(out, x, "cbernoulli"), cb)
    assert torch.allclose(likelihoods.mean(out, "cbernoulli"),
                          torch.distributions.ContinuousBernoulli(logits=out).mean)
    two = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    m = torch.sigmoid(two[:, :1])
    scale = torch.exp(math.log(likelihoods.GAUSSIAN_MIN_SCALE)
                      + torch.nn.functional.softplus(two[:, 1:]))
    gauss = torch.distributions.Normal(m, scale).log_prob(x).flatten(1).sum(1)
    assert torch.allclose(likelihoods.log_prob(two, x, "gaussian"), gauss)


def test_training_lowers_the_loss():
    torch.manual_seed(0)
    images = torch.zeros(200, 1, 28, 28, dtype=torch.uint8)
    images[:100, :, 5:20, 10:14] = 255                             # two kinds of image
    images[100:, :, 12:16, 4:24] = 200
    m = VAE(2, hidden=(32,))
    hist = fit_generative(m, images, epochs=15, batch_size=50, lr=3e-3, progress=False)
    assert len(hist) == 15 and hist[-1]["loss"] < 0.5 * hist[0]["loss"]
    assert {"epoch", "steps", "lr", "cpu_s", "loss", "kl"} <= set(hist[-1])


def test_cpu_budget_stops_training():
    m = AE(2, hidden=(8,))
    hist = fit_generative(m, _images(64), epochs=1000, batch_size=8, cpu_budget_s=1e-9,
                          progress=False)
    assert len(hist) == 1 and hist[0]["steps"] == 1


def test_frechet_distance_of_gaussians():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(20000, 3, generator=g, dtype=torch.float64)
    b = 2 * torch.randn(20000, 3, generator=g, dtype=torch.float64) + 1
    # (mean diff)^2 = 3; trace term: 3 * (1 + 4 - 2 * 2) = 3
    assert abs(frechet_distance(a, b) - 6.0) < 0.3
    assert frechet_distance(a, a) < 1e-6


@pytest.mark.parametrize("n, m, d", [(50, 40, 5), (40, 30, 20), (10, 12, 20)])
def test_frechet_distance_matches_scipy_sqrtm(n, m, d):
    # correlated, non-commuting covariances; the last two are rank-deficient (d >= rows),
    # as the class-wise FD's 40 images per class in 128 features are
    scipy_linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(d)
    a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    b = rng.normal(size=(m, d)) @ rng.normal(size=(d, d)) + 1.0
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    want = (((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(sa + sb)
            - 2 * np.trace(scipy_linalg.sqrtm(sa @ sb).real))
    got = frechet_distance(torch.from_numpy(a), torch.from_numpy(b))
    assert got == pytest.approx(want, rel=1e-6)
    assert frechet_distance(torch.from_numpy(b), torch.from_numpy(a)) == pytest.approx(
        got, rel=1e-7)                                           # symmetric
    assert abs(frechet_distance(torch.from_numpy(a), torch.from_numpy(a))) < 1e-6 * got


def test_class_frechet_distance_is_the_mean_of_per_class_distances():
    g = torch.Generator().manual_seed(1)
    # two classes of real features, far apart; samples drawn like them
    real = torch.cat([torch.randn(4000, 3, generator=g, dtype=torch.float64),
                      torch.randn(4000, 3, generator=g, dtype=torch.float64) + 5])
    real_y = torch.arange(2).repeat_interleave(4000)
    x = torch.cat([torch.randn(4000, 3, generator=g, dtype=torch.float64),
                   2 * torch.randn(4000, 3, generator=g, dtype=torch.float64) + 5])
    y = real_y.clone()
    # class 0 matches (about 0); class 1: means agree, trace term 3 * (1 + 4 - 4) = 3
    assert class_frechet_distance(x, y, real, real_y) == pytest.approx(1.5, abs=0.25)
    # the same images meant as the other class: the unconditional FD cannot tell,
    # the class FD sees 3 * 25 = 75 of mean difference in each class
    assert frechet_distance(x, real) < 2
    assert class_frechet_distance(x, 1 - y, real, real_y) > 70
    # a class with fewer than two rows on either side is left out of the mean
    z = torch.cat([x[:4000], x[4000:4001]])
    assert class_frechet_distance(z, y[:4001], real, real_y) == pytest.approx(
        frechet_distance(x[:4000], real[:4000]))


def test_class_frechet_distance_bad_input():
    a, b = torch.randn(10, 3), torch.randn(10, 3)
    with pytest.raises(ValueError, match="one label per row"):
        class_frechet_distance(a, torch.zeros(9, dtype=torch.long), b,
                               torch.zeros(10, dtype=torch.long))
    with pytest.raises(ValueError, match="no class has two rows"):
        class_frechet_distance(a, torch.zeros(10, dtype=torch.long), b,
                               torch.ones(10, dtype=torch.long))


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("latent", [0, -3])
def test_latent_must_be_positive(latent):
    for make in (VAE, AE, lambda n: CVAE(10, n)):
        with pytest.raises(ValueError, match="latent size must be a positive int"):
            make(latent)


def test_bernoulli_decoder_refuses_grey_pixels_without_binarisation():
    m = VAE(2, hidden=(8,))
    with pytest.raises(ValueError, match="Bernoulli decoder needs binary pixels"):
        fit_generative(m, _images(16), binarize="none", epochs=1, progress=False)
    grey = gdata.to_unit(_images(4))
    with pytest.raises(ValueError, match="binarise the data"):
        likelihoods.check_data(grey, "bernoulli")
    likelihoods.check_data(grey, "cbernoulli")                     # fine for [0, 1] data
    hist = fit_generative(VAE(2, hidden=(8,), likelihood="gaussian"), _images(16), binarize="none",
                 epochs=1, progress=False)
    assert math.isfinite(hist[0]["loss"])


def test_unknown_class_for_cvae_sampling():
    cv = CVAE(10, 2, hidden=(8,))
    with pytest.raises(ValueError, match=r"unknown class\(es\) \[10, -1\].*0\.\.9"):
        sample_classes(cv, [3, 10, -1], 2)
    with pytest.raises(ValueError, match="labels must lie in"):
        cv.sample(2, y=torch.tensor([0, 12]))
    with pytest.raises(ValueError, match="needs a conditional model"):
        sample_classes(VAE(2), [0], 1)


def test_label_errors():
    x = gdata.binarize_static(_images(3))
    with pytest.raises(ValueError, match="conditional on 4 classes: pass labels"):
        CVAE(4, 2).loss(x)
    with pytest.raises(ValueError, match="unconditional network"):
        VAE(2).loss(x, torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="a conditional model needs labels"):
        fit_generative(CVAE(4, 2), _images(3), epochs=1, progress=False)


def test_other_bad_settings():
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        VAE(2, likelihood="poisson")
    with pytest.raises(ValueError, match="unknown architecture 'rnn'"):
        VAE(2, arch="rnn")
    with pytest.raises(ValueError, match="beta must be >= 0"):
        VAE(2, beta=-1.0)
    with pytest.raises(ValueError, match="unknown binarisation 'always'"):
        fit_generative(VAE(2), _images(4), binarize="always", progress=False)


def test_the_older_names_still_work_with_a_warning():
    import metaloop.generative as gen

    with pytest.warns(FutureWarning, match="generative.fit_generative"):
        assert gen.train is gen.fit_generative
    with pytest.warns(FutureWarning, match="generative.evaluate_bounds"):
        assert gen.evaluate is gen.evaluate_bounds
    assert not hasattr(gen, "no_such_name")


def test_the_scoring_classifier_is_built_for_the_images_size_and_channels():
    from metaloop.generative.quality import Classifier, predict, train_classifier

    # 28x28 grey: the built-in sets' classifier, 32 maps of 7x7 into the 128-unit layer
    assert Classifier(10).body[-2].in_features == 32 * 7 * 7
    for c, side in ((1, 30), (3, 32), (3, 17)):
        images = torch.randint(0, 256, (12, c, side, side), dtype=torch.uint8)
        clf = train_classifier(images, torch.arange(12) % 3, 3, epochs=1, progress=False)
        assert clf.image_shape == (c, side, side)
        m = -(-side // 4)                                      # each convolution halves a side
        assert clf.body[-2].in_features == 32 * m * m
        probs, feats = predict(clf, images.float() / 255)
        assert probs.shape == (12, 3) and feats.shape == (12, 128)
        assert torch.allclose(probs.sum(-1), torch.ones(12))
    with pytest.raises(ValueError,
                       match=r"built for images \[B, 3, 17, 17\], got \[2, 1, 17, 17\]"):
        clf(torch.zeros(2, 1, 17, 17))


def _codes_data(n=10):
    torch.manual_seed(0)
    return (torch.rand(n, 1, 28, 28) < 0.3).float()


@pytest.mark.parametrize("jitter", [float("nan"), -1.0, float("inf"), "1e-5", True])
def test_fit_code_gaussian_needs_a_finite_jitter_at_least_0(jitter):
    with pytest.raises(ValueError, match="jitter must be >= 0"):
        fit_code_gaussian(AE(4, hidden=(16,)), _codes_data(), jitter=jitter)


def test_fit_code_gaussian_refuses_non_finite_or_integer_data():
    x = _codes_data()
    with torch.no_grad(), pytest.raises(ValueError, match="finite data"):
        fit_code_gaussian(AE(4, hidden=(16,)), torch.full_like(x, float("nan")))
    with torch.no_grad(), pytest.raises(ValueError, match="float data"):
        fit_code_gaussian(AE(4, hidden=(16,)), x.to(torch.uint8))


def test_ae_sample_names_a_covariance_that_is_not_positive_definite():
    ae = AE(4, hidden=(16,)).eval()
    bad = (torch.zeros(4), -torch.eye(4))
    with pytest.raises(ValueError, match="positive definite covariance"):
        ae.sample(3, code_gaussian=bad)


@pytest.mark.parametrize("n_classes", [1, 0, 2.0, True])
def test_train_classifier_needs_two_classes_up_front(n_classes):
    from metaloop.generative.quality import train_classifier
    imgs = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    with pytest.raises(ValueError, match="n_classes >= 2"):
        train_classifier(imgs, torch.zeros(4, dtype=torch.long), n_classes, epochs=1,
                         progress=False)
