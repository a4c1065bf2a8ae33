"""Images that decode to a single value: a drawing in white on a transparent background
(an icon) is read composited on white and nothing of it is left. Two such files of two
classes were "the same image", and in one class they were left out as exact copies without
a word; they are refused by name, saying why and what to do, before any copy is looked
for (``skip_corrupt`` leaves them out as unreadable). A plain picture of one value is read
as it is, and two of them in two classes are said to be blank."""

import numpy as np
import pytest
from PIL import Image

from metaloop.data.folder import CACHE_DIRNAME, UnreadableImagesError, load_folder
from metaloop.data.images import load_support


def _icon(path, k: int, side: int = 16) -> None:
    """White strokes (a pattern of ``k``) on a transparent background, as icons are saved."""
    a = np.zeros((side, side, 2), np.uint8)
    a[..., 0] = 255
    a[k % side, :, 1] = 255
    a[:, (3 * k + 1) % side, 1] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a, "LA").save(path)


def _noise(path, seed: int, side: int = 16) -> None:
    a = np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def test_transparent_icons_in_two_classes_are_refused_as_blank_not_the_same_image(tmp_path):
    root = tmp_path / "icons"
    for c in ("star", "moon"):
        for i in range(3):
            _icon(root / c / f"{i}.png", i + 5 * (c == "moon"))
    with pytest.raises(UnreadableImagesError) as e:
        load_folder(root, image_size=8)
    text = str(e.value)
    assert "are the same image" not in text
    assert "6 images decode to a blank image" in text and "moon/0.png" in text
    assert "transparent background" in text and "composited on white" in text
    assert "dark background" in text and "skip_corrupt=True" in text
    assert not (root / CACHE_DIRNAME).exists()


def test_transparent_icons_in_one_class_are_not_left_out_as_copies(tmp_path):
    root = tmp_path / "icons"
    for i in range(3):
        _icon(root / "star" / f"{i}.png", i)
        _noise(root / "noise" / f"{i}.png", i)
    with pytest.raises(UnreadableImagesError) as e:
        load_folder(root, image_size=8)
    assert "3 images decode to a blank image" in str(e.value)


def test_one_blank_image_among_many_is_named_with_its_path(tmp_path):
    root = tmp_path / "photos"
    for c in range(2):
        for i in range(4):
            _noise(root / f"c{c}" / f"{i}.png", 10 * c + i)
    _icon(root / "c1" / "icon.png", 3)
    with pytest.raises(UnreadableImagesError) as e:
        load_folder(root, image_size=8)
    text = str(e.value)
    assert f"{root / 'c1' / 'icon.png'} decodes to a blank image (every pixel 255 (white))" \
        in text
    assert [f for f, _ in e.value.files] == ["c1/icon.png"]
    data = load_folder(root, image_size=8, skip_corrupt=True)      # left out, listed
    assert [f for f, _ in data.skipped] == ["c1/icon.png"] and len(data.files) == 8
    assert data.duplicates == []


def test_the_same_icons_flattened_on_black_are_read(tmp_path):
    root = tmp_path / "icons"
    for c in ("star", "moon"):
        for i in range(3):
            p = root / c / f"{i}.png"
            _icon(p, i + 5 * (c == "moon"))
            with Image.open(p) as im:
                black = Image.new("RGBA", im.size, (0, 0, 0, 255))
                Image.alpha_composite(black, im.convert("RGBA")).convert("RGB").save(p)
    data = load_folder(root, image_size=8)
    assert len(data.files) == 6 and data.duplicates == []


def test_plain_pictures_of_one_value_in_two_classes_are_said_to_be_blank(tmp_path):
    root = tmp_path / "scans"
    for c in range(2):
        for i in range(2):
            _noise(root / f"c{c}" / f"{i}.png", 10 * c + i)
        Image.fromarray(np.full((12, 12), 255, np.uint8)).save(root / f"c{c}" / "blank.jpg")
    with pytest.raises(ValueError, match=r"c0/blank\.jpg \(class 'c0'\) and c1/blank\.jpg "
                                         r"\(class 'c1'\) both decode to a blank image "
                                         r"\(every pixel 255 \(white\): a plain picture\)"):
        load_folder(root, image_size=8)


def test_a_transparent_icon_in_a_support_folder_is_refused_by_name(tmp_path):
    _icon(tmp_path / "star" / "0.png", 1)
    _noise(tmp_path / "moon" / "0.png", 2)
    with pytest.raises(ValueError, match=r"star/0\.png decodes to a blank image .*transparent "
                                         r"background.*dark background"):
        load_support(tmp_path, image_size=8)
