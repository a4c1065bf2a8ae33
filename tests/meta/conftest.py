"""Fixtures of the meta-learner tests."""

import pytest
import torch


@pytest.fixture
def float64():
    """Run a test in float64; the default dtype is restored for the rest of the suite."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)
