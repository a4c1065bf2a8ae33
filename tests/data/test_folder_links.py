"""Symbolic links in an image folder: followed, except one back to a folder above it."""

import os

import numpy as np
import pytest
from PIL import Image

from metaloop.data.folder import load_folder, scan_folder


def _folder(root):
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.fromarray(np.full((8, 8), 60 * i, np.uint8)).save(root / c / f"{i}.png")
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
