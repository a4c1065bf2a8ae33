"""The generative library with the user's own tensors: the output-bias initialisation takes
the uint8 images ``fit_generative`` takes, and a classifier scores the float64 samples of a
float64 model as it scores float32 ones."""

from __future__ import annotations

import pytest
import torch

from metaloop.generative import VAE, sample_quality, train_classifier
from metaloop.generative.nets import logit_of_mean
from metaloop.generative.quality import Classifier, accuracy


def _images(n: int = 24, shape=(3, 9, 11)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return (torch.rand(n, *shape, generator=g) * 255).to(torch.uint8), torch.arange(n) % 3


def test_logit_of_mean_takes_uint8_images_as_their_unit_pixels():
    images, _ = _images()
    want = logit_of_mean(images.float() / 255, n_params=2)
    got = logit_of_mean(images, n_params=2)                       # [2 * 3, 9, 11]
    assert got.shape == (6, 9, 11) and got.dtype == torch.float32
    torch.testing.assert_close(got, want)
    m = (images.float() / 255).mean(0).clamp(1e-3, 1 - 1e-3)
    torch.testing.assert_close(got[:3], torch.log(m / (1 - m)))   # the logit of the mean
    assert bool((got[3:] == 0).all())
    model = VAE(4, image_shape=(3, 9, 11), hidden=(8,), likelihood="gaussian",
                output_bias=got)
    torch.testing.assert_close(model.decoder.bias.detach(), got)


@pytest.mark.parametrize("images, message", [
    (torch.zeros(4, 1, 3, 3, dtype=torch.int64), "uint8 images or float pixels"),
    (torch.full((4, 1, 3, 3), 2.0), r"in \[0, 1\]"),
    (torch.full((4, 1, 3, 3), float("nan")), "NaN"),
    (torch.zeros(4, 9), r"\[N, C, H, W\]"),
    (torch.zeros(0, 1, 3, 3), "N >= 1"),
])
def test_logit_of_mean_names_bad_images(images, message):
    with pytest.raises(ValueError, match=message):
        logit_of_mean(images)


def test_float64_samples_score_as_their_float32_values():
    images, labels = _images()
    clf = train_classifier(images, labels, 3, epochs=1, progress=False)      # float32
    model = VAE(4, image_shape=(3, 9, 11), hidden=(8,), likelihood="gaussian").double()
    samples = model.sample(6, generator=torch.Generator().manual_seed(0))   # float64
    assert samples.dtype == torch.float64
    real = images[:6].double() / 255
    assert sample_quality(clf, samples, real) == sample_quality(clf, samples.float(),
                                                                 real.float())
    assert accuracy(clf, samples, labels[:6]) == accuracy(clf, samples.float(), labels[:6])


@pytest.mark.parametrize("channels", [0, -1, 1.0])
def test_classifier_names_a_bad_channel_count(channels):
    with pytest.raises(ValueError, match="in_channels"):
        Classifier(3, channels)
