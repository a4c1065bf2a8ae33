"""Symbolic links in an image folder: followed, except one back to a folder above it; a
link to nothing is an unreadable image."""

import os

import numpy as np
import pytest
from PIL import Image

from metaloop.data.folder import UnreadableImagesError, load_folder, scan_folder


def _folder(root):
    for k, c in enumerate(("a", "b")):
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8), 60 * i + 20 * k, np.uint8)).save(root / c / f"{i}.png")
    return root


@pytest.mark.parametrize("link, target", [("a/loop", ".."), ("a/deeper/loop", "../.."),
                                          ("loop", ".")])
def test_link_back_up_is_named_not_walked_forever(tmp_path, link, target):
    root = _folder(tmp_path / "images")
    (root / link).parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, root / link)
    with pytest.raises(ValueError, match=rf"{link}.* links back to .*images, a folder above"):
        scan_folder(root)
    with pytest.raises(ValueError, match="links back to"):
        load_folder(root, image_size=8)


def test_link_to_a_sibling_folder_is_followed(tmp_path):
    root = _folder(tmp_path / "images")
    os.symlink("../b", root / "a" / "more")
    s = scan_folder(root)
    assert s.classes == ["a", "b"]
    assert s.files[0] == ["a/0.png", "a/1.png", "a/more/0.png", "a/more/1.png"]


def test_link_to_nothing_is_named_and_skip_corrupt_leaves_it_out(tmp_path):
    """A dangling link was a raw '[Errno 2] No such file or directory' from the scan, and
    skip_corrupt did not help; now it is named as metaloop predict names it, skip_corrupt
    leaves it out (in ``skipped``), and restoring its target rebuilds the cache with it."""
    root = _folder(tmp_path / "images")
    target = tmp_path / "elsewhere.png"
    os.symlink(target, root / "b" / "dangling.png")
    with pytest.raises(UnreadableImagesError,
                       match=rf"b/dangling\.png is a link to {target}, which does not exist; "
                             rf"remove the link or restore its target; .*skip_corrupt=True"):
        load_folder(root, image_size=8)
    d = load_folder(root, image_size=8, skip_corrupt=True)
    assert d.files == ["a/0.png", "a/1.png", "b/0.png", "b/1.png"]
    assert [f for f, _ in d.skipped] == ["b/dangling.png"] and d.cache_status == "built"
    assert "is a link to" in d.skipped[0][1]
    again = load_folder(root, image_size=8, skip_corrupt=True)
    assert again.cache_status == "hit" and again.skipped == d.skipped
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(target)
    restored = load_folder(root, image_size=8, skip_corrupt=True)
    assert restored.cache_status.startswith("rebuilt") and restored.skipped == []
    assert restored.files[-1] == "b/dangling.png"


@pytest.mark.parametrize("link", ["gone", "a/more"])
def test_folder_link_to_nothing_is_named_not_ignored(tmp_path, link):
    """A class folder (or a class's sub-folder) linked to a drive that is not mounted was
    counted as one more non-image entry, and its class or images left out without a word."""
    root = _folder(tmp_path / "images")
    os.symlink(tmp_path / "unmounted" / "dogs", root / link)
    with pytest.raises(ValueError, match=rf"images/{link} is a link to .*unmounted/dogs, which "
                                         rf"does not exist .*restore its target"):
        scan_folder(root)
    with pytest.raises(ValueError, match="is a link to"):
        load_folder(root, image_size=8, skip_corrupt=True)
    (tmp_path / "unmounted" / "dogs").mkdir(parents=True)       # mounted again: a folder
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "unmounted" / "dogs" / "0.png")
    assert len(scan_folder(root).classes) == (3 if link == "gone" else 2)
