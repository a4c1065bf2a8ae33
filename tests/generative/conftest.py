"""Fixtures of the generative-model tests."""

import pytest
import torch


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
