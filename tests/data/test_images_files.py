"""Reading a user's image folders: links to folders, oversized images and transparency
given by a PNG's tRNS chunk."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from metaloop.data.images import load_image, load_query, load_support


def _glyph(size=28) -> np.ndarray:
    """uint8 [size, size]: a bright bar (ink = 255) on black."""
    a = np.zeros((size, size), np.uint8)
    a[size // 2 - 2:size // 2 + 2, 4:-4] = 255
    return a


def test_linked_folders_are_searched(tmp_path):
    """A query folder (or a class folder) that holds a symbolic link to a folder of images
    reads those images, as the training folder's scan does; they were silently left out."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.fromarray(_glyph()).save(elsewhere / "far.png")
    (tmp_path / "q").mkdir()
    Image.fromarray(_glyph()).save(tmp_path / "q" / "own.png")
    os.symlink(elsewhere, tmp_path / "q" / "linked")
    qx, names = load_query(tmp_path / "q")
    assert names == ["linked/far.png", "own.png"] and qx.shape == (2, 1, 28, 28)
    for c in ("a", "b"):
        (tmp_path / "s" / c).mkdir(parents=True)
        Image.fromarray(_glyph()).save(tmp_path / "s" / c / "0.png")
    os.symlink(elsewhere, tmp_path / "s" / "b" / "more")
    x, y, classes, files = load_support(tmp_path / "s")
    assert classes == ["a", "b"] and y.tolist() == [0, 1, 1]
    assert [f.name for f in files] == ["0.png", "0.png", "far.png"]


def test_a_link_back_up_is_a_named_error(tmp_path):
    (tmp_path / "q" / "sub").mkdir(parents=True)
    Image.fromarray(_glyph()).save(tmp_path / "q" / "own.png")
    os.symlink(tmp_path / "q", tmp_path / "q" / "sub" / "up")
    with pytest.raises(ValueError, match="links back to") as err:
        load_query(tmp_path / "q")
    assert str(tmp_path / "q" / "sub" / "up") in str(err.value)


def test_an_image_over_pillows_pixel_limit_is_a_named_error(tmp_path, monkeypatch):
    """Pillow's DecompressionBombError is no OSError: it escaped as a traceback (exit 1)."""
    Image.fromarray(_glyph(40)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40 * 40 // 2 - 1)   # 40x40 is > 2x that
    with pytest.raises(ValueError, match="cannot read image .*big.png.*MAX_IMAGE_PIXELS"):
        load_image(tmp_path / "big.png")


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_trns_transparency_counts_as_white(tmp_path, mode):
    """An L or RGB PNG whose background colour is made transparent by a tRNS chunk is read
    as a viewer shows it, on white, like an RGBA one (it was read as its stored colour)."""
    a = np.zeros((28, 28), np.uint8)
    a[10:18, 4:24] = 60                                   # dark grey ink, black background
    key = 0 if mode == "L" else (0, 0, 0)
    img = Image.fromarray(a if mode == "L" else np.stack([a] * 3, -1))
    img.save(tmp_path / "t.png", transparency=key)
    rgba = np.zeros((28, 28, 4), np.uint8)
    rgba[..., :3] = a[..., None]
    rgba[..., 3] = np.where(a > 0, 255, 0)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "ref.png")
    got, want = load_image(tmp_path / "t.png"), load_image(tmp_path / "ref.png")
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)
    assert float(want.max()) > 0.7                         # the ink, inverted: 1 - 60/255


def test_a_broken_link_is_a_named_error(tmp_path):
    """A link to a file that no longer exists was left out of the query without a word."""
    (tmp_path / "q").mkdir()
    Image.fromarray(_glyph()).save(tmp_path / "q" / "own.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "q" / "lost.png")
    with pytest.raises(ValueError, match="lost.png is a link to .*gone.png, which does not"):
        load_query(tmp_path / "q")
