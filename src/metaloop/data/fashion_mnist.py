"""Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from its IDX files.

The Debian package ``dataset-fashion-mnist`` installs the original gzipped files in
``/usr/share/datasets/fashion-mnist``: ``train-images-idx3-ubyte.gz``,
``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``
(60,000 training and 10,000 test images, 28x28, 10 balanced classes). Uncompressed copies
(the same names without ``.gz``) are read too.
"""

from __future__ import annotations

import functools
import gzip
import os
from pathlib import Path

import numpy as np
import torch

from metaloop.data.omniglot import data_env_dir

DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
SPLITS = ("train", "test")
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot")
_PREFIX = {"train": "train", "test": "t10k"}

# IDX type codes (byte 3 of the magic number) -> big-endian numpy dtype
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read one IDX file (gzipped if its name ends in ``.gz``).

    The header is two zero bytes, a type code, the number of dimensions, then one big-endian
    uint32 per dimension. The data must fill the rest of the file exactly.

    Args:
        path: the ``.idx*-ubyte`` or ``.gz`` file.

    Returns:
        An array of the header's shape and dtype (native byte order).

    Raises:
        ValueError: naming the file, for a bad magic number, unknown type code, truncated
            header or a data size that does not match the dimensions.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip raises BadGzipFile (an OSError) or EOFError
        raise ValueError(f"{path}: cannot read: {e}") from e
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (magic {raw[:4].hex() or 'empty'}, expected "
                         f"0000<type><ndim> with type in "
                         f"{sorted(hex(t) for t in _IDX_DTYPES)})")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    if len(raw) < 4 + 4 * ndim:
        raise ValueError(f"{path}: IDX header truncated ({len(raw)} bytes for {ndim} dims)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) - 4 - 4 * ndim != expected:
        raise ValueError(f"{path}: IDX dims {list(dims)} of {dtype.name} need {expected} data "
                         f"bytes, file has {len(raw) - 4 - 4 * ndim}")
    data = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(dims)
    return data.astype(dtype.newbyteorder("="))


def search_dirs(root: str | os.PathLike | None = None) -> list[Path]:
    """``[root]`` if given, else ``[$METALOOP_DATA/fashion-mnist (if set), DEFAULT_ROOT]``.
    ValueError: ``$METALOOP_DATA`` is set but names no folder (an empty value, a file:
    ``metaloop.data.omniglot.data_env_dir``)."""
    if root is not None:
        return [Path(root).expanduser()]
    data = data_env_dir()
    return ([] if data is None else [data / "fashion-mnist"]) + [DEFAULT_ROOT]


def _find(name: str, dirs: list[Path]) -> Path:
    looked = []
    for d in dirs:
        for candidate in (d / f"{name}.gz", d / name):
            if candidate.is_file():
                return candidate.resolve()
            looked.append(str(candidate))
    raise FileNotFoundError(f"Fashion-MNIST file {name} not found (looked for "
                            + ", ".join(looked)
                            + "). Install the Debian package dataset-fashion-mnist, or set "
                              "$METALOOP_DATA and put the IDX files in $METALOOP_DATA/"
                              "fashion-mnist.")


@functools.lru_cache(maxsize=4)
def _load(images_path: Path, labels_path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise ValueError(f"{images_path}: expected uint8 images [N, 28, 28], got "
                         f"{images.dtype} {list(images.shape)}")
    if labels.dtype != np.uint8 or labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"{labels_path}: expected uint8 labels [{images.shape[0]}] to match "
                         f"{images_path}, got {labels.dtype} {list(labels.shape)}")
    if labels.size and int(labels.max()) >= len(CLASS_NAMES):
        raise ValueError(f"{labels_path}: label {int(labels.max())} out of range "
                         f"0..{len(CLASS_NAMES) - 1}")
    return torch.from_numpy(images), torch.from_numpy(labels.astype(np.int64))


def load_fashion_mnist(root: str | os.PathLike | None = None, split: str = "train"
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST images and labels, cached in-process (treat them as read-only).

    Args:
        root: folder with the IDX files; None searches ``$METALOOP_DATA/fashion-mnist`` (if
            set) and then ``/usr/share/datasets/fashion-mnist``.
        split: ``"train"`` (60,000) or ``"test"`` (10,000).

    Returns:
        images: uint8 ``[N, 28, 28]``, 0 = background.
        labels: int64 ``[N]`` in ``0..9``; ``CLASS_NAMES[label]`` names them.

    Raises:
        ValueError: unknown split, or a malformed IDX file (naming it).
        FileNotFoundError: listing every place looked; the labels are read from the folder
            the images were found in.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; expected one of {SPLITS}")
    prefix = _PREFIX[split]
    images = _find(f"{prefix}-images-idx3-ubyte", search_dirs(root))
    # the labels from the images' own folder: never another copy's, which may be ordered
    # differently and would pair every image with a wrong label without a word
    return _load(images, _find(f"{prefix}-labels-idx1-ubyte", [images.parent]))
