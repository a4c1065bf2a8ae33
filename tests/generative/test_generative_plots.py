"""``metaloop.generative.plots``: grey grids are drawn ink-dark and saved as grey PNGs, colour
grids are drawn as they are and saved as RGB PNGs; other channel counts are named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from metaloop.generative import plots


def test_tile_keeps_grey_flat_and_colour_in_three_channels():
    grey = torch.rand(5, 1, 4, 3)
    a = plots.tile(grey, ncol=3, pad=1)                         # 2 rows of 3 (one empty)
    assert a.shape == (2 * 5 - 1, 3 * 4 - 1)
    assert np.array_equal(a[:4, 4:7], grey[1, 0].numpy())      # row 0, column 1
    assert a[4].max() == 0 and a[5:, 8:].max() == 0            # gaps and the empty cell: no ink
    colour = torch.rand(2, 2, 3, 4, 3)                          # [R, K, C, H, W]
    c = plots.tile(colour, pad=1)
    assert c.shape == (2 * 5 - 1, 2 * 4 - 1, 3)
    assert np.array_equal(c[5:9, 4:7], colour[1, 1].permute(1, 2, 0).numpy())
    assert (c[4] == 1).all() and (c[:, 3] == 1).all()           # white gaps between them
    flat = plots.tile(torch.rand(3, 3, 4, 4), ncol=2, pad=1)    # 2 rows of 2, one cell empty
    assert (flat[5:, 5:] == 1).all()                            # ... left white
    with pytest.raises(ValueError, match=r"C = 1 or 3, got \[2, 2, 4, 4\]"):
        plots.tile(torch.rand(2, 2, 4, 4))


@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB")])
def test_grids_are_saved_grey_or_in_colour(channels, mode, tmp_path):
    images = torch.zeros(4, channels, 8, 8)
    if channels == 3:
        images[:, 0] = 1.0                                      # pure red
    else:
        images[:, :, 2:6, 2:6] = 1.0                            # an ink square
    plots.save_grid(images, tmp_path / "grid.png", title="t", ncol=2)
    with Image.open(tmp_path / "grid.png") as im:
        assert im.mode == mode
        px = np.asarray(im)
    if channels == 3:                                           # red drawn as red
        red = (px[..., 0] > 200) & (px[..., 1] < 60) & (px[..., 2] < 60)
        assert red.sum() > 100
    else:                                                       # ink drawn dark
        assert (px < 60).sum() > 100
    plots.save_sweep({2: {"a": images}}, {}, tmp_path / "sweep.png")
    with Image.open(tmp_path / "sweep.png") as im:
        assert im.mode == mode
