"""Small made-up image data of your own kind for the user-data tests: an image folder of
three shapes (dark outlines on light paper, in mixed sizes and Pillow modes) and the same
kind of images as tensor files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "cross", "square")        # sorted: the folder reader's class order


def _draw(shape: str, i: int, width: int, height: int) -> Image.Image:
    """Dark ``shape`` outline number ``i`` (< 18: a tick where it is) on a white
    ``width`` x ``height`` page."""
    im = Image.new("L", (width, height), 255)
    d = ImageDraw.Draw(im)
    o = 3 + i % 4                                   # a margin that varies a little
    box = [o, o, width - 1 - o, height - 1 - o]
    if shape == "square":
        d.rectangle(box, outline=0, width=2)
    elif shape == "circle":
        d.ellipse(box, outline=0, width=2)
    else:
        d.line(box, fill=0, width=2)
        d.line([box[0], box[3], box[2], box[1]], fill=0, width=2)
    d.rectangle([4 + i % 18, 1, 5 + i % 18, 2], fill=0)    # a tick: no two images alike
    return im


def write_shape_folder(root: Path, per_class: int = 20, shapes=SHAPES) -> Path:
    """``root/<shape>/<i>.png`` (some JPEG and BMP): sizes 24..44 pixels, some not square,
    modes L, RGB, RGBA and P. Returns ``root``."""
    for shape in shapes:
        folder = root / shape
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            w = 24 + 4 * (i % 6)
            h = w + 6 * (i % 3 == 1)                                # every third: taller
            im = _draw(shape, i, w, h)
            mode = ("L", "RGB", "RGBA", "P")[i % 4]
            im = im.convert(mode)
            ext = ".jpg" if i % 7 == 3 else ".bmp" if i % 7 == 5 else ".png"
            if ext == ".jpg" and mode in ("RGBA", "P"):
                im = im.convert("RGB")
            im.save(folder / f"{shape}_{i:02d}{ext}")
    return root


def shape_arrays(per_class: int = 20, size: int = 28, shapes=SHAPES
                 ) -> tuple[np.ndarray, np.ndarray]:
    """uint8 ``[K * per_class, size, size]`` light pages with dark outlines, labels int64."""
    x = np.stack([np.asarray(_draw(s, i, size, size)) for s in shapes
                  for i in range(per_class)])
    y = np.repeat(np.arange(len(shapes)), per_class)
    return x.astype(np.uint8), y.astype(np.int64)
