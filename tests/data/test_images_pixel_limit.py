"""Pillow's pixel limit, checked by metaloop as Pillow checks it by default: an image up to
twice ``PIL.Image.MAX_IMAGE_PIXELS`` is read (Pillow warned of it, naming no file, and under
``-W error`` raised the warning), one past twice it is refused by name; neither depends on
the warning filters, and reading touches none of them."""

import warnings

import numpy as np
import pytest
from PIL import Image

from metaloop.data.images import load_image


@pytest.mark.parametrize("filters", ["error", "default"])
def test_an_image_between_the_limit_and_twice_it_is_read_without_a_warning(
        tmp_path, monkeypatch, filters):
    Image.fromarray(np.full((40, 40), 200, np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40 * 40 - 1)       # over it, not 2x over
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter(filters)
        assert tuple(load_image(tmp_path / "big.png", image_size=8).shape) == (1, 8, 8)
    assert not seen
    assert Image.MAX_IMAGE_PIXELS == 40 * 40 - 1                       # given back


@pytest.mark.parametrize("filters", ["error", "ignore"])
def test_an_image_past_twice_the_limit_is_refused_by_name(tmp_path, monkeypatch, filters):
    Image.fromarray(np.full((40, 40), 200, np.uint8)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 799)                # 1600 > 2 * 799
    with warnings.catch_warnings():
        warnings.simplefilter(filters)
        with pytest.raises(ValueError, match=r"cannot read image .*bomb\.png: Image size "
                                             r"\(1600 pixels\) exceeds limit of 1598 pixels"
                                             r".*MAX_IMAGE_PIXELS"):
            load_image(tmp_path / "bomb.png")
    assert Image.MAX_IMAGE_PIXELS == 799


def test_reading_images_leaves_the_warning_registry_alone(tmp_path):
    """catch_warnings around every open reset the registry, so a once-per-place warning was
    shown again after every image."""
    for i in range(3):
        Image.fromarray(np.full((8, 8), 50 * i, np.uint8)).save(tmp_path / f"{i}.png")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("default")
        for i in range(3):
            warnings.warn("once here", UserWarning, stacklevel=1)
            load_image(tmp_path / f"{i}.png", image_size=8)
    assert [str(w.message) for w in seen] == ["once here"]
