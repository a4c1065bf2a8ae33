"""Exact copies in an image folder: left out once within a class (and listed), refused
across two classes (naming both files), judged by the decoded pixels whatever the format;
the folder cache's pixels stay ``load_image``'s for every format and size."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from metaloop.data.folder import CACHE_DIRNAME, load_folder
from metaloop.data.images import load_image
from metaloop.tasks import Episodes

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from conftest import write_image_folder  # noqa: E402


def _folder(root: Path, classes=("cat", "dog"), per_class: int = 3) -> Path:
    """Every image different: class c's image i is noise seeded by (c, i)."""
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            a = np.random.default_rng([c, i]).integers(0, 256, (12, 12), dtype=np.uint8)
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root


def test_copies_within_a_class_are_left_out_once_and_listed(tmp_path):
    root = _folder(tmp_path / "photos")
    shutil.copy(root / "cat" / "0.png", root / "cat" / "copy.png")
    (root / "cat" / "z").mkdir()
    shutil.copy(root / "cat" / "0.png", root / "cat" / "z" / "again.png")
    with Image.open(root / "dog" / "1.png") as im:        # the same pixels, another format
        im.save(root / "dog" / "9.bmp")
    data = load_folder(root, image_size=12)
    assert data.files == ["cat/0.png", "cat/1.png", "cat/2.png",
                          "dog/0.png", "dog/1.png", "dog/2.png"]
    assert data.duplicates == [("cat/copy.png", "cat/0.png"),
                               ("cat/z/again.png", "cat/0.png"),
                               ("dog/9.bmp", "dog/1.png")]
    assert data.images.shape[0] == len(data.labels) == 6
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    for i, f in enumerate(data.files):                      # each row is still its own file
        ref = load_image(root / f, 12, "never", 1).mul(255).round().to(torch.uint8)
        assert torch.equal(data.images[i], ref), f
    hit = load_folder(root, image_size=12)                   # the cache says the same
    assert hit.cache_status == "hit" and hit.duplicates == data.duplicates
    assert hit.files == data.files
    fam = Episodes.from_folder(root, ways=2, shots=1, queries=1, image_size=12)
    assert fam.num_examples == 6                             # no copy can be drawn twice


def test_a_copy_added_to_a_cached_folder_is_found_from_the_cached_digests(tmp_path):
    """The rebuild re-decodes the new file only; the original's digest comes from the
    cache, not from decoding it again."""
    root = _folder(tmp_path / "photos")
    assert load_folder(root, image_size=12).duplicates == []
    shutil.copy(root / "dog" / "2.png", root / "dog" / "3.png")
    decoded = []
    again = load_folder(root, image_size=12, progress=decoded.append)
    assert again.cache_status == "rebuilt (files changed)" and decoded[-1] == 1
    assert again.duplicates == [("dog/3.png", "dog/2.png")]
    assert len(again.files) == 6
    (root / "dog" / "2.png").unlink()                        # the copy is now the only one
    last = load_folder(root, image_size=12)
    assert last.duplicates == [] and "dog/3.png" in last.files and len(last.files) == 6


def test_the_same_image_in_two_classes_is_refused_naming_both(tmp_path):
    root = _folder(tmp_path / "photos", classes=("cat", "dog", "owl"))
    shutil.copy(root / "cat" / "1.png", root / "owl" / "x.png")
    shutil.copy(root / "cat" / "2.png", root / "dog" / "y.png")
    with pytest.raises(ValueError, match=r"cat/2\.png \(class 'cat'\) and dog/y\.png \(class "
                                         r"'dog'\) are the same image \(and 1 more such "
                                         r"pair\(s\)\); an image belongs to one class"):
        load_folder(root, image_size=12)
    assert not (root / CACHE_DIRNAME).exists()               # nothing written


def test_a_cross_class_copy_added_to_a_cached_folder_is_refused(tmp_path):
    root = _folder(tmp_path / "photos")
    first = load_folder(root, image_size=12)
    manifest = sorted((root / CACHE_DIRNAME).glob("*.json"))
    before = manifest[0].read_text()
    shutil.copy(root / "cat" / "0.png", root / "dog" / "9.png")
    with pytest.raises(ValueError, match=r"cat/0\.png \(class 'cat'\) and dog/9\.png"):
        load_folder(root, image_size=12)
    assert manifest[0].read_text() == before                 # the old cache stays whole
    assert json.loads(before)["duplicates"] == [] and len(first.files) == 6


def test_unreadable_files_are_not_taken_for_copies_of_each_other(tmp_path):
    root = _folder(tmp_path / "photos")
    for name in ("cat", "dog"):
        (root / name / "broken.png").write_bytes(b"not a png")
    data = load_folder(root, image_size=12, skip_corrupt=True)
    assert [f for f, _ in data.skipped] == ["cat/broken.png", "dog/broken.png"]
    assert data.duplicates == [] and len(data.files) == 6


def test_the_cache_holds_load_image_pixels_for_every_format_and_size(tmp_path):
    """The folder decodes with load_image's own steps to keep each image's pixels for its
    digest: every cached image must still be exactly what load_image (and so ``metaloop
    predict``) gives, for each format, mode and size, a large JPEG decoded at a reduced
    scale and a large PNG shrunk first included."""
    root = write_image_folder(tmp_path / "m", classes=7, per_class=7, mixed=True)
    rng = np.random.default_rng(5)
    big = rng.integers(0, 256, (620, 470, 3), dtype=np.uint8)
    Image.fromarray(big).save(root / "class_01" / "photo.jpg", quality=90)    # draft: 1/2
    Image.fromarray(big[..., 0]).save(root / "class_02" / "scan.png")           # shrunk 2x
    for kw in ({"image_size": 28, "invert": "auto"}, {"image_size": 20, "channels": 3}):
        data = load_folder(root, **kw)
        assert len(data.files) == 51 and data.duplicates == []
        for i, f in enumerate(data.files):
            ref = load_image(root / f, kw["image_size"], kw.get("invert", "never"),
                             kw.get("channels", 1))
            assert torch.equal(data.images[i], ref.mul(255).round().to(torch.uint8)), (kw, f)
