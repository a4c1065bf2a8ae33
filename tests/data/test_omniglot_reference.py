"""Omniglot's official PNG layout against hand-made ink: the classes come in the packed
files' order (alphabet, then character number), each drawing under its own class and number,
with ink = 255 where the PNG is black."""

import numpy as np
import torch
from PIL import Image

from metaloop.data.omniglot import load_omniglot_images


def test_png_folder_gives_each_character_and_drawing_its_own_pixels(tmp_path):
    n = 11
    rng = np.random.default_rng(3)
    ink = rng.random((n, 20, 105, 105)) < 0.05                 # [C, 20, 105, 105]
    ink[:, :, 0, 0] = True
    for c in range(n):
        d = tmp_path / "images_background" / "Alpha" / f"character{c + 1:02d}"
        d.mkdir(parents=True)
        for k in range(20):         # the official files: mode "1", white (1) = background
            Image.fromarray(~ink[c, k]).save(d / f"{c + 1:04d}_{k + 1:02d}.png")
    images, names = load_omniglot_images(tmp_path, "background", 105)
    assert names == [f"Alpha/character{c:02d}" for c in range(1, n + 1)]
    assert images.shape == (n, 20, 105, 105)
    assert torch.equal(images, torch.from_numpy(ink.astype(np.uint8) * 255))
