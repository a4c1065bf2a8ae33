"""A large image is shrunk by a whole factor before it is resized; these compare the result
with the full-size resize of the padded square (nothing shrunk), for sizes that no factor
divides, EXIF turns of a JPEG decoded at a reduced scale, and a border the shrinking blurs."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageOps

from metaloop.data import images as images_mod
from metaloop.data.images import load_image


def _strokes(w: int, h: int, seed: int, mode: str = "L") -> Image.Image:
    """Sharp dark strokes on light paper (or coloured ones on cream)."""
    im = Image.new(mode, (w, h), 255 if mode == "L" else (250, 245, 235))
    draw = ImageDraw.Draw(im)
    rng = np.random.default_rng(seed)
    for _ in range(10):
        points = [tuple(int(v) for v in rng.random(2) * (w, h)) for _ in range(3)]
        ink = 0 if mode == "L" else tuple(int(v) for v in rng.integers(0, 200, 3))
        draw.line(points, fill=ink, width=max(2, min(w, h) // 50))
    return im


def _full_size(path, image_size: int, channels: int, invert: str = "never") -> torch.Tensor:
    """The reference: the whole image converted, padded and resized, nothing shrunk first."""
    with Image.open(path) as im:
        pix = images_mod._pixels(ImageOps.exif_transpose(im), channels)    # [h, w, c]
    return images_mod._to_input(pix, image_size, invert)                   # [c, S, S]


def _grey_levels(got: torch.Tensor, want: torch.Tensor) -> tuple[float, float]:
    diff = (got - want).abs() * 255
    return float(diff.mean()), float(diff.max())


@pytest.mark.parametrize("n_in, n_out", [(300, 28), (1000, 28), (257, 84), (64, 28), (20, 28)])
def test_resize_taps_are_pytorchs_antialiased_bilinear_weights(n_in, n_out):
    lo, taps = images_mod._resize_taps(n_in, n_out)                    # [n_out], [n_out, k]
    dense = np.zeros((n_out, n_in + taps.shape[1]))
    for i in range(n_out):
        dense[i, lo[i]:lo[i] + taps.shape[1]] = taps[i]
    assert not dense[:, n_in:].any()                                   # no tap past the end
    eye = torch.eye(n_in)[None, None]                                  # [1, 1, n_in, n_in]
    want = F.interpolate(eye, size=(n_out, n_in), mode="bilinear", align_corners=False,
                         antialias=True)[0, 0]                         # [n_out, n_in]
    torch.testing.assert_close(torch.from_numpy(dense[:, :n_in]), want.double(), atol=3e-6,
                               rtol=0)


@pytest.mark.parametrize("kind, size, channels, invert", [
    ("png", (1801, 1203), 1, "never"),
    ("png", (2999, 2001), 1, "auto"),
    ("png", (1237, 3001), 3, "never"),
    ("jpg", (4031, 3023), 1, "auto"),
    ("rgba", (1901, 1301), 3, "never"),
])
def test_an_odd_size_image_matches_the_full_size_resize(tmp_path, kind, size, channels, invert):
    """Where no whole factor divides the sides and the padding, the shrunk image's blocks
    were taken as whole ones, so the content moved by a fraction of a pixel: 1 to 3 grey
    levels (in 255) from the full-size resize on average and up to 26 at a stroke's edge.
    Each shrunk pixel now takes the resize's weights of the full-size pixels it averages."""
    im = _strokes(*size, seed=sum(size), mode="L" if channels == 1 else "RGB")
    if kind == "rgba":
        alpha = Image.new("L", size, 0)
        ImageDraw.Draw(alpha).ellipse((100, 50, size[0] - 77, size[1] - 101), fill=255)
        im.putalpha(alpha)                            # opaque oval, transparent corners
    path = tmp_path / ("big.jpg" if kind == "jpg" else "big.png")
    im.save(path, **({"quality": 95} if kind == "jpg" else {}))
    for image_size in (28, 84):
        got = load_image(path, image_size, invert, channels)                 # [c, S, S]
        mean, most = _grey_levels(got, _full_size(path, image_size, channels, invert))
        assert mean < 0.3 and most < 2, (image_size, mean, most)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_turned_jpeg_decoded_at_a_reduced_scale_matches_the_full_size_resize(
        tmp_path, orientation):
    """A JPEG decoded at 1/8 scale has a partial last block at the right and the bottom
    as stored; its EXIF turn moves them (to the left or the top for some), which the
    weights follow."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    _strokes(1801, 1203, seed=orientation).save(tmp_path / "turned.jpg", quality=95,
                                                exif=exif)
    got = load_image(tmp_path / "turned.jpg", 28, "never")                   # [1, 28, 28]
    want = _full_size(tmp_path / "turned.jpg", 28, 1)
    assert want.shape == got.shape == (1, 28, 28)
    mean, most = _grey_levels(got, want)
    assert mean < 0.3 and most < 2, (mean, most)


def test_the_padding_takes_the_full_size_border_colour(tmp_path):
    """A wide image whose outermost rows alternate black and white pixels (a dithered
    frame): the full-size border's median is black, but the shrunk border's averages are
    grey, and the padding (two thirds of the square) came out grey."""
    a = np.full((1000, 3001), 255, np.uint8)
    a[:, ::2] = 0                                     # columns alternate: median black
    a[100:900, 100:2900] = 200
    Image.fromarray(a).save(tmp_path / "frame.png")
    got = load_image(tmp_path / "frame.png", 28, "never")                   # [1, 28, 28]
    want = _full_size(tmp_path / "frame.png", 28, 1)
    assert float(want[0, 0, 0]) == 0.0                                      # padding: black
    mean, most = _grey_levels(got, want)
    assert mean < 0.3 and most < 2, (mean, most)
