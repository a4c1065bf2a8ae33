"""Fixtures of the generative-model tests."""

import numpy as np
import pytest
import torch

from metaloop.generative import experiment as E


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One intra-op thread per module, whatever an earlier test's ``--threads`` left: tiny ops
    on a busy 2-core machine only wait for a second thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """64 tiny 8x8 uint8 images (the protocol tests' training set)."""
    g = torch.Generator().manual_seed(0)
    return (torch.rand(64, 1, 8, 8, generator=g) * 255).to(torch.uint8)      # [64, 1, 8, 8]


@pytest.fixture(scope="module")
def x_test() -> torch.Tensor:
    """30 binary 8x8 test images."""
    g = torch.Generator().manual_seed(1)
    return torch.bernoulli(torch.rand(30, 1, 8, 8, generator=g), generator=g)  # [30, 1, 8, 8]


@pytest.fixture
def settings(tmp_path) -> E.Settings:
    """A VAE experiment of one epoch on 120 random binary 8x8 images of 2 classes."""
    x = (np.random.default_rng(0).random((120, 8, 8)) < 0.3).astype(np.uint8) * 255
    np.savez(tmp_path / "bits.npz", x=x, y=np.arange(120) % 2)
    return E.Settings(model="vae", data=str(tmp_path / "bits.npz"), image_size=8,
                      test_fraction=0.5, invert="never", binarize="none", latent=2,
                      hidden=(8,), epochs=1, k=0, classifier_epochs=1, quality_samples=20,
                      progress=False)
