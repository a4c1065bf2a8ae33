"""An image between Pillow's pixel limit and twice it (where Pillow only warns) is refused by
name as one past twice it is, whatever the warning filters."""

import warnings

import numpy as np
import pytest
from PIL import Image

from metaloop.data.images import load_image


@pytest.mark.parametrize("filters", ["error", "ignore"])
def test_an_image_just_over_the_pixel_limit_is_refused_by_name(tmp_path, monkeypatch, filters):
    Image.fromarray(np.full((40, 40), 200, np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40 * 40 - 1)       # over it, not 2x over
    with warnings.catch_warnings():
        warnings.simplefilter(filters)
        with pytest.raises(ValueError, match=r"cannot read image .*big\.png: Image size "
                                             r"\(1600 pixels\) exceeds limit of 1599 pixels"
                                             r".*MAX_IMAGE_PIXELS"):
            load_image(tmp_path / "big.png")


def test_an_image_at_the_limit_loads(tmp_path, monkeypatch):
    Image.fromarray(np.full((40, 40), 200, np.uint8)).save(tmp_path / "ok.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40 * 40)
    assert tuple(load_image(tmp_path / "ok.png", image_size=8).shape) == (1, 8, 8)
