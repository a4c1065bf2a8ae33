"""Fashion-MNIST task family: class subsets, layout, determinism, uneven classes."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import metaloop as ml
from metaloop.data.fashion_mnist import load_fashion_mnist
from metaloop.tasks.fashion_mnist import FashionMNIST


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.fixture(scope="module")
def meta_train(fashion_mnist_root) -> FashionMNIST:
    return FashionMNIST(fashion_mnist_root, classes=range(5), ways=5, shots=1, queries=15)


def test_shapes_dtypes_and_labels(meta_train):
    b = meta_train.sample(4, generator=_gen(0))
    assert isinstance(b, ml.TaskBatch) and b.ways == 5
    assert b.support_x.shape == (4, 5, 1, 28, 28) and b.query_x.shape == (4, 75, 1, 28, 28)
    assert b.support_x.dtype == torch.float32 and 0 <= float(b.query_x.min())
    assert float(b.query_x.max()) <= 1.0
    assert torch.equal(b.support_y, torch.arange(5).expand(4, 5))
    assert torch.equal(b.query_y, torch.arange(5).repeat_interleave(15).expand(4, 75))
    assert b.classes.dtype == torch.int64 and b.classes.shape == (4, 5)
    assert meta_train.image_shape == (1, 28, 28) and meta_train.num_classes == 5
    assert meta_train.kind == "classification"


def test_images_come_from_the_right_classes(fashion_mnist_root):
    fam = FashionMNIST(fashion_mnist_root, classes=[9, 2, 7], ways=2, shots=3, queries=4)
    images, labels = load_fashion_mnist(fashion_mnist_root, "train")
    classes, idx = fam.sample_indices(50, generator=_gen(1))
    original = torch.tensor(fam.labels)[classes]                               # [50, 2]
    assert torch.equal(labels[idx], original.unsqueeze(-1).expand_as(idx))
    assert (idx.sort(dim=-1).values.diff(dim=-1) > 0).all()
    assert (classes[:, 0] != classes[:, 1]).all() and int(classes.max()) == 2
    b = fam.sample(50, generator=_gen(1))
    assert torch.equal(b.classes, classes)
    assert torch.equal(b.support_x[:, :, 0], images[idx[:, :, :3].flatten(1)].float() / 255)
    assert fam.class_names == ["Ankle boot", "Pullover", "Sneaker"]


def test_disjoint_families(fashion_mnist_root, meta_train):
    held_out = FashionMNIST(fashion_mnist_root, classes=range(5, 10), ways=3, split="test")
    assert not set(meta_train.labels) & set(held_out.labels)
    assert held_out.sample(2).support_x.shape == (2, 3, 1, 28, 28)


def test_same_seed_same_batch(meta_train):
    a, b = meta_train.sample(6, generator=_gen(7)), meta_train.sample(6, generator=_gen(7))
    assert torch.equal(a.query_x, b.query_x) and torch.equal(a.classes, b.classes)
    assert not torch.equal(a.query_x, meta_train.sample(6, generator=_gen(8)).query_x)


def test_uneven_classes_never_sample_padding(tmp_path):
    labels = np.array([0] * 3 + [1] * 30 + [2] * 7, np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz",
               np.arange(len(labels), dtype=np.uint8)[:, None, None].repeat(28, 1).repeat(28, 2))
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    fam = FashionMNIST(tmp_path, classes=[0, 1, 2], ways=3, shots=1, queries=2)
    classes, idx = fam.sample_indices(300, generator=_gen(0))
    got = torch.from_numpy(labels.astype(np.int64))[idx]
    assert torch.equal(got, classes.unsqueeze(-1).expand_as(idx))
    assert (idx.sort(dim=-1).values.diff(dim=-1) > 0).all()
    assert set(idx[classes == 0].flatten().tolist()) == {0, 1, 2}
    b = fam.sample(5, generator=_gen(0))
    assert torch.equal(b.support_x[:, :, 0, 0, 0] * 255, fam.sample_indices(
        5, generator=_gen(0))[1][:, :, 0].float())
    x, y = fam.sample_flat(400, generator=_gen(0))
    assert torch.equal(torch.from_numpy(labels.astype(np.int64))[
        (x[:, 0, 0, 0] * 255).round().long()], y)
    with pytest.raises(ValueError, match="smallest class"):
        fam.with_shots(2, 2)


@pytest.mark.parametrize("kwargs, match", [
    ({"classes": range(3), "ways": 4}, "ways=4 exceeds the 3 classes"),
    ({"classes": [1, 1, 2]}, "duplicates"),
    ({"classes": [3, 10]}, "labels in 0..9"),
    ({"classes": []}, "non-empty"),
    # one label instead of a collection failed: TypeError: 'int' object is not iterable
    ({"classes": 5}, r"classes must be a collection of labels in 0..9 \(e.g. range\(5\)\), "
                     r"got 5"),
    ({"shots": 0}, "shots must be a positive int"),
    ({"shots": 5000, "queries": 1001}, "shots \\+ queries"),
])
def test_validation(fashion_mnist_root, kwargs, match):
    with pytest.raises(ValueError, match=match):
        FashionMNIST(fashion_mnist_root, **kwargs)


def test_sample_flat_and_with_shots(meta_train):
    x, y = meta_train.sample_flat(32, generator=_gen(0))
    assert x.shape == (32, 1, 28, 28) and y.dtype == torch.int64 and int(y.max()) < 5
    five = meta_train.with_shots(5, 5)
    assert five.sample(1).support_x.shape == (1, 25, 1, 28, 28) and meta_train.shots == 1
