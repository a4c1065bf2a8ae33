"""``load_support`` (``metaloop predict``'s support folder) names its classes and refuses
what training refuses in an image folder: class names in Unicode NFC, twins that differ only
in their Unicode form, the same image in two classes; and the error on a class too small for
a task says how many of its files were exact copies left out."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from metaloop.data.images import load_support
from metaloop.tasks.episodes import Episodes, SmallClassesError

NFC = unicodedata.normalize("NFC", "café")
NFD = unicodedata.normalize("NFD", "café")


def _glyph(seed: int) -> np.ndarray:
    """A 12 x 12 uint8 image of its own: dark ink on white."""
    return np.where(np.random.default_rng(seed).random((12, 12)) < 0.2, 0, 255).astype(np.uint8)


def _write(path: Path, seed: int, fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_glyph(seed)).save(path, format=fmt)
    return path


def test_class_folder_names_are_given_in_nfc(tmp_path):
    """A macOS folder ``cafe\\u0301`` was the class ``cafe\\u0301``, where training and the
    docs name it ``caf\\xe9``."""
    _write(tmp_path / NFD / "0.png", 1)
    _write(tmp_path / "tea" / "0.png", 2)
    _, y, names, _ = load_support(tmp_path, image_size=12)
    assert names == [NFC, "tea"] and names[0] != NFD
    assert y.tolist() == [0, 1]


def test_classes_are_in_the_order_of_their_names_in_nfc(tmp_path):
    """``cafe\u0301`` sorted before ``caff`` as stored, ``caf\xe9`` after it in NFC: the
    labels followed the form the disk stores a name in."""
    _write(tmp_path / NFD / "0.png", 1)
    _write(tmp_path / "caff" / "0.png", 2)
    _, y, names, files = load_support(tmp_path, image_size=12)
    assert names == ["caff", NFC] and [f.parent.name for f in files] == ["caff", NFD]


def test_one_image_per_class_names_are_given_in_nfc(tmp_path):
    _write(tmp_path / f"{NFD}.png", 1)
    _write(tmp_path / "tea.png", 2)
    assert load_support(tmp_path, image_size=12)[2] == [NFC, "tea"]


@pytest.mark.parametrize("one_shot", [False, True])
def test_nfc_and_nfd_twins_are_refused(tmp_path, one_shot):
    """``caf\\xe9`` and ``cafe\\u0301`` were two classes that print the same."""
    for k, name in enumerate((NFC, NFD)):
        _write(tmp_path / (f"{name}.png" if one_shot else f"{name}/0.png"), k)
    _write(tmp_path / ("tea.png" if one_shot else "tea/0.png"), 7)
    with pytest.raises(ValueError, match=r"support folder .*: the (class folders|images).* "
                                         r"differ only in their Unicode form \('cafe\\u0301' "
                                         r"and 'caf\\xe9'\)"):
        load_support(tmp_path, image_size=12)


@pytest.mark.parametrize("one_shot", [False, True])
def test_the_same_image_in_two_classes_is_refused(tmp_path, one_shot):
    """Identical decoded pixels (here a PNG and a BMP of one image) in two classes: every
    query was then given to the first."""
    if one_shot:
        a, b = _write(tmp_path / "ant.png", 3), _write(tmp_path / "bee.bmp", 3, "BMP")
        _write(tmp_path / "cat.png", 4)
        words = "ant.png (class 'ant') and bee.bmp (class 'bee') are the same image"
    else:
        a = _write(tmp_path / "ant" / "0.png", 3)
        _write(tmp_path / "ant" / "1.png", 5)
        b = _write(tmp_path / "bee" / "x" / "copy.bmp", 3, "BMP")
        _write(tmp_path / "bee" / "0.png", 6)
        words = "ant/0.png (class 'ant') and bee/x/copy.bmp (class 'bee') are the same image"
    assert a.read_bytes() != b.read_bytes()
    with pytest.raises(ValueError) as e:
        load_support(tmp_path, image_size=12)
    assert str(e.value).startswith(f"support folder {tmp_path}: {words}")
    assert "an image belongs to one class" in str(e.value)


def test_copies_within_a_class_and_distinct_images_are_accepted(tmp_path):
    for k in range(2):
        _write(tmp_path / "ant" / f"{k}.png", 3)                     # one image twice
        _write(tmp_path / "bee" / f"{k}.png", 10 + k)
    x, y, names, files = load_support(tmp_path, image_size=12)
    assert names == ["ant", "bee"] and y.tolist() == [0, 0, 1, 1] and len(files) == 4
    assert x.shape == (4, 1, 12, 12)


def test_a_class_too_small_says_how_many_exact_copies_were_left_out(tmp_path):
    """A class folder of 8 identical files failed with ``'c01' (1)`` only."""
    for k in range(3):
        for i in range(8):
            _write(tmp_path / f"c{k:02d}" / f"{i}.png", 999 if k == 1 else 100 * k + i)
    with pytest.raises(SmallClassesError) as e:
        Episodes.from_folder(tmp_path, ways=2, shots=1, queries=2, image_size=12)
    assert "'c01' (1; 7 exact copies left out)" in str(e.value)
    assert "'c00'" not in str(e.value) and "'c02'" not in str(e.value)
    fam = Episodes.from_folder(tmp_path, ways=2, shots=1, queries=2, image_size=12,
                               drop_small=True)
    assert fam.dropped == ["c01"] and fam.class_names == ["c00", "c02"]
    with pytest.raises(SmallClassesError, match=r": 'c00' \(8\), 'c01' \(1; 7 exact copies "
                                                r"left out\), 'c02' \(8\);"):
        Episodes.from_folder(tmp_path, ways=2, shots=8, queries=1, image_size=12)
