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
