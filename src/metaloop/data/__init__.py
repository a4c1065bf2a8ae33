"""Dataset loaders: Omniglot (packed, PNG folder or official zip), Fashion-MNIST (IDX),
WordNet nouns (Debian's ``wordnet-base``), and checksummed downloads."""

from metaloop.data.download import fetch, file_digest, read_sha256sums, verify_file
from metaloop.data.fashion_mnist import CLASS_NAMES as FASHION_MNIST_CLASSES
from metaloop.data.fashion_mnist import load_fashion_mnist, read_idx
from metaloop.data.omniglot import load_omniglot_images
from metaloop.data.wordnet import load_wordnet

__all__ = [
    "FASHION_MNIST_CLASSES",
    "fetch",
    "file_digest",
    "load_fashion_mnist",
    "load_omniglot_images",
    "load_wordnet",
    "read_idx",
    "read_sha256sums",
    "verify_file",
]
