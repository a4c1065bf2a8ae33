"""Shared fixtures. Data lives in ../shared beside the repository, never in it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def _need(path: Path, what: str) -> Path:
    if path.exists():
        return path
    msg = f"{what} not found at {path}"
    if os.environ.get("CI"):
        pytest.fail(msg + " (CI must provide it)")
    pytest.skip(msg)


@pytest.fixture
def float64():
    """Run a test in float64; the default dtype is restored for the rest of the suite."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture(scope="session")
def omniglot_root() -> Path:
    """The packed Omniglot copy in ../shared/data/omniglot."""
    return _need(SHARED / "data" / "omniglot", "Omniglot")


@pytest.fixture(scope="session")
def fashion_mnist_root() -> Path:
    """Fashion-MNIST IDX files from the Debian package dataset-fashion-mnist."""
    return _need(FASHION_MNIST, "Fashion-MNIST (apt-get install dataset-fashion-mnist)")


@pytest.fixture(scope="session")
def save_tiny_bert(tmp_path_factory):
    """A function ``words -> folder``: a random (seeded) 2-layer BERT and its word-piece
    tokenizer over ``words``, saved like any Hugging Face model (needs the text extra)."""
    def save(words) -> Path:
        import transformers

        d = tmp_path_factory.mktemp("tiny_bert")
        (d / "vocab.txt").write_text("\n".join(words) + "\n")
        tok = transformers.BertTokenizer(str(d / "vocab.txt"))
        cfg = transformers.BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2,
                                      num_attention_heads=2, intermediate_size=37,
                                      max_position_embeddings=64)
        torch.manual_seed(0)
        transformers.BertModel(cfg).save_pretrained(d / "model")
        tok.save_pretrained(d / "model")
        return d / "model"
    return save


# Tests use tiny tensors: one thread avoids OpenMP start-up and oversubscription costs
# that dominate at this size (measured 2-4x faster on the 2-core CI machines).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
