"""Reading a user's image folders: formats, polarity, aspect ratio, and named errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from metaloop.data.images import (
    image_files,
    image_to_input,
    load_image,
    load_query,
    load_support,
    pad_square,
)


def _glyph(size=28) -> np.ndarray:
    """uint8 [size, size]: a bright cross (ink = 255) on black."""
    a = np.zeros((size, size), np.uint8)
    a[size // 2 - 2:size // 2 + 2, 4:-4] = 255
    a[4:-4, size // 2 - 2:size // 2 + 2] = 255
    return a


def test_png_roundtrip_is_exact_and_dark_ink_is_inverted(tmp_path):
    a = _glyph()
    Image.fromarray(a).save(tmp_path / "light.png")
    Image.fromarray(255 - a).save(tmp_path / "dark.png")          # black ink on white paper
    want = torch.from_numpy(a).float().div(255).unsqueeze(0)
    light, dark = load_image(tmp_path / "light.png"), load_image(tmp_path / "dark.png")
    assert light.shape == (1, 28, 28) and light.dtype == torch.float32
    torch.testing.assert_close(light, want, atol=0, rtol=0)
    torch.testing.assert_close(dark, want, atol=1e-6, rtol=0)
    torch.testing.assert_close(load_image(tmp_path / "dark.png", invert="never"), 1 - want,
                               atol=1e-6, rtol=0)
    torch.testing.assert_close(load_image(tmp_path / "light.png", invert="always"), 1 - want,
                               atol=1e-6, rtol=0)


def test_resize_matches_the_omniglot_loader_kernel(tmp_path):
    big = np.zeros((105, 105), np.uint8)
    big[20:80, 50:56] = 255
    Image.fromarray(255 - big).save(tmp_path / "orig.png")          # as the official PNGs
    x = torch.from_numpy(big).float().div(255).view(1, 1, 105, 105)
    want = F.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False,
                         antialias=True).view(1, 28, 28)
    torch.testing.assert_close(load_image(tmp_path / "orig.png"), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [0, -3, 2.5, True, "28"])
def test_bad_image_size_is_a_named_value_error(tmp_path, size):
    Image.fromarray(_glyph()).save(tmp_path / "a.png")
    with pytest.raises(ValueError, match=f"image_size must be a positive int, got {size!r}"):
        load_image(tmp_path / "a.png", size)
    with Image.open(tmp_path / "a.png") as im, pytest.raises(ValueError, match="image_size"):
        image_to_input(im, size)


def test_jpeg_rgb_rgba_and_non_square(tmp_path):
    a = _glyph()
    rgb = np.stack([255 - a] * 3, -1)
    Image.fromarray(rgb).save(tmp_path / "a.jpg", quality=95)
    rgba = np.zeros((28, 28, 4), np.uint8)                            # transparent background
    rgba[..., 3] = a                                                  # black ink where opaque
    Image.fromarray(rgba, "RGBA").save(tmp_path / "b.png")
    wide = np.full((28, 56), 255, np.uint8)
    wide[:, 14:42] = 255 - a                                          # the glyph, centred
    Image.fromarray(wide).save(tmp_path / "c.gif")
    want = torch.from_numpy(a).float().div(255).unsqueeze(0)
    assert (load_image(tmp_path / "a.jpg") - want).abs().max() < 0.1
    assert (load_image(tmp_path / "b.png") - want).abs().max() < 1e-6
    c = load_image(tmp_path / "c.gif")
    assert c.shape == (1, 28, 28)
    # padded to 56x56 (not stretched or cropped): the glyph shrinks by half, centred
    ref = F.interpolate(F.pad(want, (14, 14, 14, 14)).unsqueeze(0), size=(28, 28),
                        mode="bilinear", align_corners=False, antialias=True)[0]
    torch.testing.assert_close(c, ref, atol=1e-5, rtol=0)


def test_pad_square_fills_with_each_images_border_colour(tmp_path):
    # a colour photo on white, wider than tall: white bars above and below, not black ones
    photo = np.full((20, 40, 3), 255, np.uint8)
    photo[5:15, 10:30] = (200, 30, 30)                                # a red block
    Image.fromarray(photo).save(tmp_path / "photo.png")
    x = load_image(tmp_path / "photo.png", image_size=40, invert="never", channels=3)
    assert x.shape == (3, 40, 40)
    torch.testing.assert_close(x[:, :10], torch.ones(3, 10, 40), atol=1e-6, rtol=0)
    torch.testing.assert_close(x[:, 30:], torch.ones(3, 10, 40), atol=1e-6, rtol=0)
    red = torch.tensor([200, 30, 30]).div(255).view(3, 1, 1).expand(3, 10, 20)
    torch.testing.assert_close(x[:, 15:25, 10:30], red, atol=1e-6, rtol=0)
    # a batch [N, C, h, w]: each image and channel by its own border's median, centred
    u = torch.stack([torch.zeros(2, 3, 5), torch.full((2, 3, 5), 0.25)])
    u[0, 1] = 0.75
    u[:, :, 1, 2] = 1.0                                               # one inner pixel each
    sq = pad_square(u)                                                # [2, 2, 5, 5]
    assert sq.shape == (2, 2, 5, 5)
    torch.testing.assert_close(sq[:, :, 1:4], u)
    for i, fill in enumerate(((0.0, 0.75), (0.25, 0.25))):
        for c, v in enumerate(fill):
            assert (sq[i, c, 0] == v).all() and (sq[i, c, 4] == v).all()
    square = u[..., :3]
    assert pad_square(square) is square                             # square: unchanged


def test_support_and_query_folders(tmp_path):
    a = _glyph()
    for k, (cls, n) in enumerate((("b_cls", 2), ("a_cls", 1))):
        (tmp_path / "s" / cls).mkdir(parents=True)
        for i in range(n):                        # an image belongs to one class: its own
            Image.fromarray(np.roll(a, k, axis=0)).save(tmp_path / "s" / cls / f"{i}.png")
    (tmp_path / "s" / "a_cls" / ".DS_Store").write_bytes(b"junk")     # hidden: skipped
    x, y, classes, files = load_support(tmp_path / "s")
    assert classes == ["a_cls", "b_cls"] and y.tolist() == [0, 1, 1]
    assert x.shape == (3, 1, 28, 28) and len(files) == 3
    (tmp_path / "q" / "sub").mkdir(parents=True)
    Image.fromarray(a).save(tmp_path / "q" / "z.bmp")
    Image.fromarray(a).save(tmp_path / "q" / "sub" / "a.png")
    qx, names = load_query(tmp_path / "q", image_size=20)
    assert names == ["sub/a.png", "z.bmp"] and qx.shape == (2, 1, 20, 20)
    assert [p.name for p in image_files(tmp_path / "q")] == ["z.bmp"]


def test_a_folder_of_images_is_one_class_per_image(tmp_path):
    """The one-shot layout (the training folder of one of Lake's runs): each file a class,
    named by its stem, in sorted order; hidden files skipped."""
    root = tmp_path / "training"
    root.mkdir()
    glyphs = {f"class{i:02d}": np.roll(_glyph(), 3 * i, axis=1) for i in (2, 1, 10)}
    for name, g in glyphs.items():
        Image.fromarray(g).save(root / f"{name}.png")
    (root / ".DS_Store").write_bytes(b"junk")
    x, y, classes, files = load_support(root)
    assert classes == ["class01", "class02", "class10"] and y.tolist() == [0, 1, 2]
    assert [f.name for f in files] == ["class01.png", "class02.png", "class10.png"]
    for k, name in enumerate(classes):
        torch.testing.assert_close(x[k], load_image(root / f"{name}.png"))
    assert not torch.equal(x[0], x[1])


def _support(root, classes):
    for c, n in classes.items():
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(_glyph()).save(root / c / f"{i}.png")
    return root


@pytest.mark.parametrize("case,message", [
    ("missing", "does not exist"),
    ("one_class", "at least 2"),
    ("empty_class", "empty_cls holds no images"),
    ("stray_file", "stray.png is a file beside the class folders"),
    ("one_image", "has 1 image"),
    ("same_stem", r"class .a. has several files \(a.bmp, a.png\)"),
    ("unreadable", "cannot read image"),
])
def test_bad_support_names_the_path(tmp_path, case, message):
    root = tmp_path / "s"
    if case == "one_class":
        _support(root, {"only": 2})
    elif case == "empty_class":
        _support(root, {"ok": 1})
        (root / "empty_cls").mkdir()
    elif case == "stray_file":
        _support(root, {"x": 1, "y": 1})
        Image.fromarray(_glyph()).save(root / "stray.png")
    elif case in ("one_image", "same_stem"):
        root.mkdir()
        for name in ("a.png", "a.bmp")[:1 if case == "one_image" else 2]:
            Image.fromarray(_glyph()).save(root / name)
    elif case == "unreadable":
        _support(root, {"x": 1, "y": 1})
        (root / "y" / "notes.png").write_text("not an image")
    with pytest.raises(ValueError, match=message) as err:
        load_support(root)
    if case == "unreadable":
        assert "notes.png" in str(err.value)
    else:
        assert str(root) in str(err.value)


def test_bad_query_names_the_path(tmp_path):
    (tmp_path / "q").mkdir()
    with pytest.raises(ValueError, match=f"{tmp_path / 'q'} holds no images"):
        load_query(tmp_path / "q")
    (tmp_path / "q" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    with pytest.raises(ValueError, match="broken.jpg"):
        load_query(tmp_path / "q")
    with pytest.raises(ValueError, match="does not exist"):
        load_query(tmp_path / "nope")
