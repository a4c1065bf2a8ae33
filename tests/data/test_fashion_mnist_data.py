"""Fashion-MNIST IDX reading: synthetic files (header checks) and the Debian files."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from metaloop.data import fashion_mnist as fm
from metaloop.data.fashion_mnist import CLASS_NAMES, load_fashion_mnist, read_idx

_CODES = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write an IDX file (gzipped if the name ends in .gz)."""
    array = np.asarray(array)
    big = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, _CODES[big.dtype], array.ndim]) \
        + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + big.tobytes()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def _fake_split(folder: Path, prefix: str = "train", n: int = 30, gz: bool = True,
                side: int = 28, top_label: int = 9) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(n)
    images = rng.integers(0, 256, (n, side, side), dtype=np.uint8)
    labels = (np.arange(n) % (top_label + 1)).astype(np.uint8)
    ext = ".gz" if gz else ""
    folder.mkdir(parents=True, exist_ok=True)
    write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", images)
    write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", labels)
    return images, labels


@pytest.mark.parametrize("name", ["a.idx", "a.idx.gz"])
def test_read_idx_roundtrip(tmp_path, name):
    x = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(tmp_path / name, x)), x)
    y = np.array([-5, 7, 1 << 20], dtype=">i4")
    got = read_idx(write_idx(tmp_path / ("b" + name), y))
    assert got.dtype == np.int32 and np.array_equal(got, y)


def test_read_idx_rejects_bad_headers(tmp_path):
    good = write_idx(tmp_path / "g.idx", np.zeros((4, 2, 2), np.uint8)).read_bytes()
    cases = {"magic": b"\x01" + good[1:], "type": good[:2] + b"\x07" + good[3:],
             "empty": b"", "header": good[:9], "data": good[:-1], "extra": good + b"\x00"}
    for what, raw in cases.items():
        (tmp_path / f"{what}.idx").write_bytes(raw)
        with pytest.raises(ValueError, match=f"{what}.idx"):
            read_idx(tmp_path / f"{what}.idx")
    (tmp_path / "bad.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="bad.gz"):
        read_idx(tmp_path / "bad.gz")


@pytest.mark.parametrize("gz", [True, False])
def test_load_synthetic(tmp_path, gz):
    images, labels = _fake_split(tmp_path, "t10k", gz=gz)
    x, y = load_fashion_mnist(tmp_path, "test")
    assert x.dtype == torch.uint8 and y.dtype == torch.int64
    assert np.array_equal(x.numpy(), images) and np.array_equal(y.numpy(), labels)


def test_load_rejects_wrong_shapes_and_labels(tmp_path):
    _fake_split(tmp_path / "side", side=27)
    with pytest.raises(ValueError, match=r"\[N, 28, 28\]"):
        load_fashion_mnist(tmp_path / "side")
    _fake_split(tmp_path / "label", top_label=10)
    with pytest.raises(ValueError, match="label 10"):
        load_fashion_mnist(tmp_path / "label")
    _fake_split(tmp_path / "count")
    write_idx(tmp_path / "count" / "train-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(ValueError, match="labels"):
        load_fashion_mnist(tmp_path / "count")
    with pytest.raises(ValueError, match="'val'"):
        load_fashion_mnist(tmp_path / "count", "val")


def test_env_override_and_missing_message(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "DEFAULT_ROOT", tmp_path / "debian")
    monkeypatch.setenv("METALOOP_DATA", str(tmp_path / "data"))
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist()
    for folder in (tmp_path / "data" / "fashion-mnist", tmp_path / "debian"):
        assert str(folder / "train-images-idx3-ubyte.gz") in str(err.value)
    assert "\n" not in str(err.value)        # the CLI prints it as its one-line error
    images, _ = _fake_split(tmp_path / "data" / "fashion-mnist")
    assert np.array_equal(load_fashion_mnist()[0].numpy(), images)


@pytest.mark.parametrize("value", ["a_file", ""])
def test_data_folder_that_cannot_be_one_is_refused_by_name(tmp_path, monkeypatch, value):
    """$METALOOP_DATA set to a file or to nothing is named, not skipped for the Debian copy."""
    monkeypatch.setattr(fm, "DEFAULT_ROOT", tmp_path / "debian")
    _fake_split(tmp_path / "debian")
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("METALOOP_DATA", str(tmp_path / value) if value else "")
    with pytest.raises(ValueError, match=r"^\$METALOOP_DATA is (set but empty|.*a file)"):
        load_fashion_mnist()
    assert load_fashion_mnist(tmp_path / "debian")[0].shape[0] > 0     # a root: not read


def test_labels_come_from_the_images_folder(tmp_path, monkeypatch):
    """Images in $METALOOP_DATA without their labels are not paired with another copy's."""
    monkeypatch.setattr(fm, "DEFAULT_ROOT", tmp_path / "debian")
    monkeypatch.setenv("METALOOP_DATA", str(tmp_path / "data"))
    _fake_split(tmp_path / "debian")
    ours = tmp_path / "data" / "fashion-mnist"
    _fake_split(ours, n=30)
    (ours / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_fashion_mnist()
    assert str(ours / "train-labels-idx1-ubyte.gz") in str(err.value)
    assert str(tmp_path / "debian") not in str(err.value)


def test_debian_files(fashion_mnist_root, monkeypatch):
    monkeypatch.delenv("METALOOP_DATA", raising=False)
    for split, n in (("train", 60000), ("test", 10000)):
        x, y = load_fashion_mnist(fashion_mnist_root, split)
        assert x.shape == (n, 28, 28) and x.dtype == torch.uint8
        assert y.shape == (n,) and y.dtype == torch.int64
        assert torch.equal(torch.bincount(y), torch.full((10,), n // 10))
        assert int(x.max()) == 255 and int(x[:, 0, 0].float().mean()) < 5
    assert len(CLASS_NAMES) == 10 and CLASS_NAMES[9] == "Ankle boot"
    assert load_fashion_mnist()[0] is load_fashion_mnist(fashion_mnist_root)[0]
