"""The random shift's offsets against their documented law, over many draws: each image
moves by (dy, dx) uniform on [-s, s]^2, every offset reachable, the image kept intact."""

import math
from collections import Counter

import torch

from metaloop.tasks.augment import rotate_images, shift_images, stroke_images


def test_shift_offsets_are_uniform_over_the_whole_square():
    side, s, n = 9, 2, 5000
    x = torch.zeros(n, 1, side, side)
    x[:, 0, 4, 4] = 1.0                                        # one dot in the middle
    out = shift_images(x, s, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert torch.equal(out.sum((1, 2, 3)), torch.ones(n))     # the dot kept, zero elsewhere
    dots = out[:, 0].flatten(1).argmax(1)                      # [n]
    offsets = Counter(zip((dots // side - 4).tolist(), (dots % side - 4).tolist()))
    want = {(dy, dx) for dy in range(-s, s + 1) for dx in range(-s, s + 1)}
    assert set(offsets) == want                                # -s and +s both reached
    p = 1 / len(want)
    for o in want:                                             # uniform: binomial, 5 sd
        assert abs(offsets[o] - n * p) < 5 * math.sqrt(n * p * (1 - p)), (o, offsets[o])


def test_rotation_angles_are_uniform_over_both_directions():
    side, r, n, c = 15, 60.0, 2000, 7
    x = torch.zeros(n, 1, side, side)
    x[:, 0, c, c + 5] = 1.0                                    # a dot 5 pixels right of centre
    out = rotate_images(x, r, torch.Generator().manual_seed(1))[:, 0]   # [n, H, W]
    ys, xs = torch.meshgrid(torch.arange(side),
                            torch.arange(side), indexing="ij")
    mass = out.sum((1, 2))
    cy = (out * ys).sum((1, 2)) / mass - c
    cx = (out * xs).sum((1, 2)) / mass - c
    angle = torch.rad2deg(torch.atan2(-cy, cx))                # counter-clockwise as displayed
    assert float(angle.abs().max()) < r + 3
    assert float((cy ** 2 + cx ** 2).sqrt().sub(5).abs().max()) < 0.5   # a turn, no skew
    for lo, hi in ((-r, -r / 2), (-r / 2, 0), (0, r / 2), (r / 2, r)):  # uniform: 1/4 each
        frac = float(((angle >= lo) & (angle < hi)).float().mean())
        assert abs(frac - 0.25) < 5 * math.sqrt(0.25 * 0.75 / n), (lo, hi, frac)


def test_strokes_thicken_and_thin_equally_often():
    n = 2000
    x = torch.zeros(n, 1, 12, 12)
    x[:, 0, 3:9, 4:7] = 1.0                                    # a bar three pixels wide
    out = stroke_images(x, 0.8, torch.Generator().manual_seed(2))
    change = (out - x).sum((1, 2, 3))                          # ink gained (t > 0) or lost
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    thicker = float((change > 0).float().mean())
    assert abs(thicker - 0.5) < 5 * math.sqrt(0.25 / n), thicker
    # |t| <= 0.8: at most 0.8 of the dilation's extra ink, 0.8 of the erosion's loss
    assert float(change.max()) <= 0.8 * (8 * 5 - 18) + 1e-4
    assert float(change.min()) >= -0.8 * (18 - 4) - 1e-4
