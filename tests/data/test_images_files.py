"""Reading a user's image folders: links to folders, oversized images, transparency given
by a PNG's tRNS chunk, large photos shrunk before conversion, float images with NaN."""

import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw, ImageOps

from metaloop.data import images as images_mod
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
    for k, c in enumerate(("a", "b")):             # an image of each class's own
        (tmp_path / "s" / c).mkdir(parents=True)
        Image.fromarray(np.roll(_glyph(), k + 1, axis=0)).save(tmp_path / "s" / c / "0.png")
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



def test_a_class_folder_linked_to_nothing_is_a_named_error(tmp_path):
    """A support class folder that is a link to nothing (a drive not mounted) was left out
    as 'not an image by its suffix', and its class with it."""
    for k, c in enumerate(("a", "b")):             # an image of each class's own
        (tmp_path / "s" / c).mkdir(parents=True)
        Image.fromarray(np.roll(_glyph(), k + 1, axis=0)).save(tmp_path / "s" / c / "0.png")
    os.symlink(tmp_path / "unmounted" / "dogs", tmp_path / "s" / "dogs")
    with pytest.raises(ValueError, match=r"s/dogs is a link to .*unmounted/dogs, which does "
                                         r"not exist"):
        load_support(tmp_path / "s")
    (tmp_path / "unmounted" / "dogs").mkdir(parents=True)
    Image.fromarray(_glyph()).save(tmp_path / "unmounted" / "dogs" / "0.png")
    assert load_support(tmp_path / "s")[2] == ["a", "b", "dogs"]

def _photo(w: int, h: int, seed: int = 0) -> np.ndarray:
    """uint8 [h, w, 3]: a smooth random picture (blocks of colour, bicubic-upsampled)."""
    rng = np.random.default_rng(seed)
    small = Image.fromarray((rng.random((6, 9, 3)) * 255).astype(np.uint8))
    return np.asarray(small.resize((w, h), Image.BICUBIC))


def _full_size(path, image_size, channels):
    """The reference: the whole image converted, padded and resized, nothing shrunk first."""
    with Image.open(path) as im:
        pix = images_mod._pixels(ImageOps.exif_transpose(im), channels)    # [h, w, c]
    return images_mod._to_input(pix, image_size, "never")


@pytest.mark.parametrize("kind", ["jpeg-rotated", "rgba-png", "grey16-png", "palette-png",
                                  "strip-png"])
def test_a_large_image_is_shrunk_before_it_is_converted(tmp_path, monkeypatch, kind):
    """A phone photo (or any image many times the output side) was converted to float32 at
    full size, padded and resized: a 6000x4000 JPEG took 2.4 s and over 700 MB per image, and
    the folder decodes on every core at once; a 3 x 12000 strip, padded to a square, took
    1.6 GB. It is now shrunk by a whole factor first (a JPEG while it decodes), keeping at
    least 8 times the output side, and comes out within a fraction of a grey level (in 255)
    of the full-size resize, EXIF orientation and transparency included."""
    a = _photo(1800, 1200)
    path = tmp_path / ("big.jpg" if kind.startswith("jpeg") else "big.png")
    if kind == "jpeg-rotated":
        exif = Image.Exif()
        exif[0x0112] = 6                                    # shown turned 90 degrees clockwise
        Image.fromarray(a).save(path, quality=95, exif=exif)
    elif kind == "rgba-png":
        alpha = np.zeros(a.shape[:2], np.uint8)
        alpha[300:900, 400:1400] = 255                      # opaque middle, transparent rest
        Image.fromarray(np.dstack([a, alpha]), "RGBA").save(path)
    elif kind == "grey16-png":
        Image.fromarray(a[..., 0].astype(np.uint16) * 257).save(path)
    elif kind == "palette-png":
        Image.fromarray(a).quantize(16, dither=Image.Dither.NONE).save(path, transparency=0)
    else:                              # 2 x 2400: padded to a square, 2400 x 2400 floats
        Image.fromarray(_photo(2, 2400)[..., 0]).save(path)
    seen = []
    to_input = images_mod._to_input
    monkeypatch.setattr(images_mod, "_to_input",
                        lambda pix, *args: seen.append(pix.shape) or to_input(pix, *args))
    channels = 1 if kind in ("grey16-png", "strip-png") else 3
    got = load_image(path, 28, "never", channels)                           # [c, 28, 28]
    monkeypatch.setattr(images_mod, "_to_input", to_input)
    assert max(seen[0][:2]) < 16 * 28, seen                 # not 1800 x 1200 floats
    if kind == "jpeg-rotated":
        assert seen[0][0] > seen[0][1]                      # portrait: the rotation applied
    want = _full_size(path, 28, channels)
    assert got.shape == want.shape == (channels, 28, 28)
    diff = (got - want).abs() * 255                        # grey levels
    # a strip is nearly all padding: its colour, the median of the full-size border, too
    assert float(diff.mean()) < 0.3 and float(diff.max()) < 2, (float(diff.mean()),
                                                                 float(diff.max()))


@pytest.mark.parametrize("size", [(4032, 3024), (6000, 4000)])
def test_a_phone_jpeg_keeps_its_geometry_through_draft_and_shrink(tmp_path, size):
    """A 4032 x 3024 JPEG decoded at 1/8 scale (504 x 378, exact) was then reduced by 2,
    which does not divide its padding (63 rows): the strokes moved by a fraction of a pixel,
    1.4 grey levels off the full-size resize on average and 12 at an edge, where the same
    picture as a PNG was 0.1 off. The decode scale now leaves a shrink that is exact."""
    w, h = size
    im = Image.new("L", size, 255)
    draw = ImageDraw.Draw(im)
    rng = np.random.default_rng(1)
    for _ in range(8):                                     # dark strokes on white paper
        draw.line([tuple(int(v) for v in rng.random(2) * size) for _ in range(3)], fill=0,
                  width=w // 60)
    im.save(tmp_path / "phone.jpg", quality=95)
    got = load_image(tmp_path / "phone.jpg", 28, "never")                  # [1, 28, 28]
    diff = (got - _full_size(tmp_path / "phone.jpg", 28, 1)).abs() * 255  # grey levels
    assert float(diff.mean()) < 0.5 and float(diff.max()) < 3


@pytest.mark.parametrize("size", [(3000, 5), (5, 3000)])
def test_a_large_jpeg_thinner_than_its_draft_scale_loads(tmp_path, size):
    """A JPEG strip with a side under 8 pixels (3000 x 5) asked Pillow's draft for a 375 x 0
    decode and failed with ZeroDivisionError, a traceback in predict and the folder loader.
    The decode scale is now no more than the shorter side."""
    w, h = size
    Image.fromarray(_photo(w, h)).save(tmp_path / "strip.jpg", quality=95)
    got = load_image(tmp_path / "strip.jpg", 28, "never", 3)                # [3, 28, 28]
    want = _full_size(tmp_path / "strip.jpg", 28, 3)
    assert got.shape == want.shape == (3, 28, 28)
    # a strip is nearly all padding (the median of its border, shrunk or not: see above);
    # its brightness is kept
    assert abs(float(got.mean() - want.mean())) * 255 < 4


def test_a_float_image_with_nan_pixels_is_a_named_error(tmp_path):
    """A float TIFF (mode F) with NaN pixels, as scientific images mark missing data, gave
    NaN inputs (every query scored NaN in predict) or garbage bytes in a folder's cache."""
    a = np.full((20, 20), 0.3, np.float32)
    a[3, 3] = np.nan
    Image.fromarray(a, "F").save(tmp_path / "nan.tif")
    with pytest.raises(ValueError, match=r"cannot read image .*nan\.tif: 1 of its pixel "
                                         r"values are NaN or infinite"):
        load_image(tmp_path / "nan.tif")
    big = np.full((1000, 1000), 0.3, np.float32)
    big[100:104, 100:104] = np.inf               # 16 pixels: 1 once shrunk (4 times)
    Image.fromarray(big, "F").save(tmp_path / "big.tif")
    with pytest.raises(ValueError, match=r"big\.tif: 16 of its pixel values are NaN"):
        load_image(tmp_path / "big.tif")
    Image.fromarray(np.full((20, 20), 0.3, np.float32), "F").save(tmp_path / "ok.tif")
    assert float(load_image(tmp_path / "ok.tif", invert="never").mean()) == pytest.approx(0.3)


@pytest.mark.parametrize("fmt, exif", [("PNG", b"II*\x00"),
                                       ("WEBP", b"Exif\x00\x00II*\x00\x08\x00"),
                                       ("PNG", b"garbage!")])
def test_a_damaged_exif_block_leaves_the_image_as_stored(tmp_path, fmt, exif):
    """A PNG or WebP whose EXIF block was truncated raised struct.error out of load_image
    (a traceback in predict, and in training even with skip_corrupt), and one whose block is
    not TIFF data was an unreadable image, though its pixels decode, a JPEG with the same
    block read fine, and a viewer shows it: the image is now read as stored."""
    a = _photo(30, 20)
    Image.fromarray(a).save(tmp_path / "plain.png")
    Image.fromarray(a).save(tmp_path / f"bad.{fmt.lower()}", fmt, exif=exif, lossless=True)
    want = load_image(tmp_path / "plain.png", 16, "never", 3)
    torch.testing.assert_close(load_image(tmp_path / f"bad.{fmt.lower()}", 16, "never", 3),
                               want, atol=0, rtol=0)
    with Image.open(tmp_path / f"bad.{fmt.lower()}") as im:
        torch.testing.assert_close(images_mod.image_to_input(im, 16, "never", 3), want,
                                   atol=0, rtol=0)
    x, names = load_query(tmp_path)
    assert names == ["bad." + fmt.lower(), "plain.png"] and x.shape == (2, 1, 28, 28)
