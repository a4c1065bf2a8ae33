"""Image folders as people collect them: upper-case suffixes, macOS and Windows litter,
class names with spaces and accents, an empty class folder, phone-sized photos, float
images with missing data and a pipe named like an image (named, or left out with
``skip_corrupt``)."""

import os
import shutil
import threading

import numpy as np
import pytest
from PIL import Image

from metaloop.data.folder import CACHE_DIRNAME, UnreadableImagesError, load_folder
from metaloop.data.images import load_query


def _messy_folder(root):
    """3 classes of 3 images each, in the forms a real collection has them."""
    rng = np.random.default_rng(0)
    for name in ["café au lait", "dog ", "Ωmega"]:
        d = root / name
        d.mkdir(parents=True)
        for i, ext in enumerate(["JPG", "PNG", "tiff"]):
            a = np.where(rng.random((24, 32)) < 0.2, 0, 255).astype(np.uint8)
            Image.fromarray(a).save(d / f"{i}.{ext}", format={"JPG": "JPEG"}.get(ext))
        (d / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
        (d / "._0.JPG").write_bytes(b"\0\5\26\7")             # macOS resource fork
        (d / "Thumbs.db").write_bytes(b"\xd0\xcf")
    (root / "empty class").mkdir()
    big = (rng.random((8, 12, 3)) * 255).astype(np.uint8)     # a 2400 x 1600 photo
    Image.fromarray(big).resize((2400, 1600), Image.BICUBIC).save(root / "dog " / "IMG_1.JPG")
    return root


def test_a_messy_folder_reads_as_its_classes(tmp_path):
    d = load_folder(_messy_folder(tmp_path / "m"), image_size=28, invert="auto")
    assert d.class_names == ["café au lait", "dog ", "Ωmega"]       # the empty folder is none
    assert d.labels.tolist() == [0, 0, 0, 1, 1, 1, 1, 2, 2, 2]
    assert (d.ignored, d.hidden) == (3, 6) and d.images.shape == (10, 1, 28, 28)
    assert load_folder(tmp_path / "m", image_size=28, invert="auto").cache_status == "hit"


def test_a_float_image_with_nan_is_named_or_left_out(tmp_path):
    """A float TIFF with NaN pixels was decoded into the cache as whatever bytes NaN casts
    to, without a word; it is now an unreadable image: named, and nothing written, or left
    out and counted with skip_corrupt."""
    root = _messy_folder(tmp_path / "m")
    a = np.full((24, 24), 0.5, np.float32)
    a[:4] = np.nan
    Image.fromarray(a, "F").save(root / "Ωmega" / "scan.tif")
    with pytest.raises(UnreadableImagesError, match=r"Ωmega/scan\.tif: 96 of its pixel "
                                                    r"values are NaN or infinite"):
        load_folder(root)
    assert not (root / CACHE_DIRNAME).exists()
    d = load_folder(root, skip_corrupt=True)
    assert [f for f, _ in d.skipped] == ["Ωmega/scan.tif"] and len(d.files) == 10


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_a_pipe_named_like_an_image_is_named_not_waited_on(tmp_path):
    """A named pipe ``x.png`` in a class folder made the decode wait for a writer for ever
    (the run hung), and a query folder left it out without a word. Here a thread writes
    nothing to it after a few seconds, so the old code ends too, with another message."""
    root = _messy_folder(tmp_path / "m")
    pipe = root / "dog " / "pipe.png"
    os.mkfifo(pipe)

    def release():                           # unblocks a reader stuck in open(), if any
        try:
            os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:                      # no reader: nothing waits on it
            pass

    for wait in (3.0, 6.0):
        threading.Timer(wait, release).start()
    with pytest.raises(UnreadableImagesError, match=r"dog /pipe\.png: it is not a regular "
                                                    r"file"):
        load_folder(root)
    assert not (root / CACHE_DIRNAME).exists()
    assert [f for f, _ in load_folder(root, skip_corrupt=True).skipped] == ["dog /pipe.png"]
    with pytest.raises(ValueError, match=r"pipe\.png: it is not a regular file"):
        load_query(root / "dog ")


def test_a_class_folder_that_cannot_be_listed_is_named(tmp_path, monkeypatch):
    """A folder without read permission (a copied drive's ``System Volume Information``)
    escaped as a PermissionError traceback; it is now a ValueError naming the folder."""
    root = _messy_folder(tmp_path / "m")
    locked = root / "System Volume Information"
    locked.mkdir()
    scandir = os.scandir

    def denied(path="."):                    # root may read anything: deny it by hand
        if os.fspath(path) == os.fspath(locked):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", denied)
    with pytest.raises(ValueError, match=r"cannot list image folder .*System Volume "
                                         r"Information: Permission denied"):
        load_folder(root)
    assert not (root / CACHE_DIRNAME).exists()


def test_jpegs_saved_as_jfif_or_jpe_and_pnm_files_are_images(tmp_path):
    """A browser's downloads (.jfif), .jpe and .pnm (which predict's help names) were left
    out as non-image files, counted but never read."""
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        for i, (ext, fmt) in enumerate([("jfif", "JPEG"), ("JPE", "JPEG"), ("pnm", "PPM")]):
            (tmp_path / "f" / c).mkdir(parents=True, exist_ok=True)
            a = (rng.random((12, 16, 3)) * 255).astype(np.uint8)
            Image.fromarray(a).save(tmp_path / "f" / c / f"{i}.{ext}", format=fmt)
    d = load_folder(tmp_path / "f", image_size=8)
    assert d.files == ["a/0.jfif", "a/1.JPE", "a/2.pnm", "b/0.jfif", "b/1.JPE", "b/2.pnm"]
    assert d.ignored == 0 and d.images.shape == (6, 1, 8, 8)
    x, names = load_query(tmp_path / "f")
    assert names == d.files and x.shape == (6, 1, 28, 28)


def test_an_image_with_a_truncated_exif_block_is_decoded_into_the_cache(tmp_path):
    """Its struct.error escaped the decoding threads: a traceback, skip_corrupt or not."""
    root = _messy_folder(tmp_path / "m")
    a = (np.random.default_rng(1).random((16, 16, 3)) * 255).astype(np.uint8)
    Image.fromarray(a).save(root / "Ωmega" / "phone.png", exif=b"II*\x00")
    for skip in (False, True):
        d = load_folder(root, image_size=8, skip_corrupt=skip)
        assert "Ωmega/phone.png" in d.files and d.skipped == []


def test_a_class_folder_of_files_read_by_no_suffix_is_named_not_dropped_silently(tmp_path):
    """A folder of .heic phone photos beside PNG classes was left out, reported only as
    "ignored 5 non-image": the class and one ignored file are now named."""
    from metaloop.tasks import Episodes

    root = tmp_path / "photos"
    for k, c in enumerate(("cat", "dog")):
        (root / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 60 * i + 20 * k, np.uint8)).save(root / c / f"{i}.png")
    (root / "owl").mkdir()
    for i in range(5):
        (root / "owl" / f"IMG_{i}.HEIC").write_bytes(b"not decoded here")
    fam = Episodes.from_folder(root, ways=2, shots=1, queries=1, image_size=8)
    assert fam.class_names == ["cat", "dog"]
    assert fam.report["empty"] == ["owl"] and fam.report["ignored_files"][0] == "owl/IMG_0.HEIC"
    line = fam.describe()
    assert "ignored 5 non-image (by suffix, e.g. owl/IMG_0.HEIC)" in line, line
    assert "left out 1 class folder(s) without images, e.g. 'owl'" in line, line
    # a folder of them only: the error names one and the suffixes read
    shutil.rmtree(root / "cat")
    shutil.rmtree(root / "dog")
    with pytest.raises(ValueError, match=r"holds no images .*e\.g\. owl/IMG_0\.HEIC; images are "
                                         r"read by their suffix: \.png, \.jpg"):
        Episodes.from_folder(root, ways=2, shots=1, queries=1, image_size=8)


def test_a_progress_that_is_not_callable_is_named(tmp_path):
    """progress=True (as ml.train takes it) failed with "'bool' object is not callable"
    once decoding began, or not at all on a cache hit."""
    from metaloop.tasks import Episodes

    root = tmp_path / "photos"
    for c in ("cat", "dog"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8), 90 * i, np.uint8)).save(root / c / f"{i}.png")
    with pytest.raises(ValueError, match=r"load_folder: progress must be None or False "
                                         r"\(none\), or a callable progress\(n\).*got True"):
        Episodes.from_folder(root, ways=2, shots=1, queries=1, image_size=8, progress=True)
    assert not (root / CACHE_DIRNAME).exists()
