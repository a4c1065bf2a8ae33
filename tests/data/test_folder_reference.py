"""The image folder cache against Pillow directly: each cached image is its own file's
pixels under its own class's label, after an image is edited in place and when a corrupt
image is left out."""

import os

import numpy as np
import torch
from PIL import Image

from metaloop.data.folder import load_folder


def _pixels(path) -> np.ndarray:
    """uint8 [28, 28]: the file as Pillow decodes it (28x28 greyscale, nothing to resize)."""
    with Image.open(path) as im:
        return np.array(im.convert("L"))


def _write(path, seed: int) -> None:
    a = np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(a).save(path)


def _check(data, root) -> None:
    """Every cached image is its file's pixels, labelled with its folder's class."""
    assert len(data.files) == len(data.labels) == data.images.shape[0]
    for i, rel in enumerate(data.files):
        assert data.class_names[int(data.labels[i])] == rel.split("/")[0], rel
        assert torch.equal(data.images[i, 0], torch.from_numpy(_pixels(root / rel))), rel


def test_an_image_edited_in_place_with_the_same_size_is_decoded_again(tmp_path):
    root = tmp_path / "images"
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(2):
            _write(root / name / f"{i}.bmp", 10 * c + i)     # BMP: the size is the shape's
    first = load_folder(root)
    _check(first, root)
    target = root / "cat" / "1.bmp"
    size, mtime = target.stat().st_size, target.stat().st_mtime_ns
    _write(target, 99)                                       # new pixels, same byte size
    os.utime(target, ns=(mtime + 5 * 10 ** 9, mtime + 5 * 10 ** 9))
    assert target.stat().st_size == size
    again = load_folder(root)
    assert again.cache_status == "rebuilt (files changed)"
    _check(again, root)
    i = again.files.index("cat/1.bmp")
    assert not torch.equal(again.images[i], first.images[i])


def test_a_skipped_corrupt_image_leaves_the_others_labels_as_they_are(tmp_path):
    root = tmp_path / "images"
    for c, name in enumerate(("a", "b", "c")):
        (root / name).mkdir(parents=True)
        for i in range(2):
            _write(root / name / f"{i}.png", 10 * c + i)
    (root / "a" / "0b.png").write_bytes(b"not a png")        # sorts between a/0 and a/1
    data = load_folder(root, skip_corrupt=True)
    assert [s[0] for s in data.skipped] == ["a/0b.png"]
    assert data.files == ["a/0.png", "a/1.png", "b/0.png", "b/1.png", "c/0.png", "c/1.png"]
    assert data.labels.tolist() == [0, 0, 1, 1, 2, 2]
    _check(data, root)


def test_sixteen_bit_images_are_cached_by_their_bit_depth(tmp_path):
    """A dark 16-bit PNG (all values under 256) was divided by 255 and cached 257 times too
    bright, beside a brighter one of the same class read right: both are divided by 65535,
    the depth the files declare."""
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    want = {}
    for name in ("dark", "bright"):
        (root / name).mkdir(parents=True)
        for i in range(2):
            top = 256 if name == "dark" else 65536
            v = rng.integers(0, top, (28, 28)).astype(np.uint16)
            Image.fromarray(v).save(root / name / f"{i}.png")
            want[f"{name}/{i}.png"] = np.round(v / 65535 * 255).astype(np.uint8)
    data = load_folder(root, invert="never")
    assert sorted(data.files) == sorted(want)
    for i, rel in enumerate(data.files):
        np.testing.assert_array_equal(data.images[i, 0].numpy(), want[rel], err_msg=rel)
    assert int(data.images[data.files.index("dark/0.png")].max()) == 1     # 255 / 65535

