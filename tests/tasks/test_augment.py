import math

import pytest
import torch

from metaloop.tasks import Omniglot, Shifted, rotate_images, shift_images
from metaloop.tasks.augment import all_shifts, shifted_support


def _reference_shift(img: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """Move a [C, H, W] image by (dy, dx) pixels with zero fill, written out pixel by pixel."""
    out = torch.zeros_like(img)
    _, h, w = img.shape
    for i in range(h):
        for j in range(w):
            si, sj = i - dy, j - dx
            if 0 <= si < h and 0 <= sj < w:
                out[:, i, j] = img[:, si, sj]
    return out


def test_shift_images_matches_a_pixel_loop_for_every_offset():
    x = torch.rand(3, 4, 2, 6, 5)                                    # [..., C, H, W]
    y = shift_images(x, 2, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == x.dtype
    seen = set()
    for xi, yi in zip(x.reshape(-1, 2, 6, 5), y.reshape(-1, 2, 6, 5)):
        match = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                 if torch.equal(_reference_shift(xi, dy, dx), yi)]
        assert len(match) == 1                                       # exactly one offset
        seen.add(match[0])
    assert len(seen) > 3                                             # offsets differ per image
    assert shift_images(x, 0) is x


def test_shift_images_is_reproducible_and_rejects_bad_input():
    x = torch.rand(8, 1, 7, 7)
    a = shift_images(x, 1, torch.Generator().manual_seed(3))
    assert torch.equal(a, shift_images(x, 1, torch.Generator().manual_seed(3)))
    with pytest.raises(ValueError, match="max_shift"):
        shift_images(x, -1)
    with pytest.raises(ValueError, match=r"\[\.\.\., C, H, W\]"):
        shift_images(torch.rand(7, 7), 1)


def test_shifted_family_moves_only_the_images(omniglot_root):
    fam = Omniglot(omniglot_root, "test", ways=3, shots=1, queries=2)
    plain = fam.sample(2, torch.Generator().manual_seed(5))
    b = Shifted(fam, 2).sample(2, torch.Generator().manual_seed(5))
    assert torch.equal(b.support_y, plain.support_y) and torch.equal(b.classes, plain.classes)
    assert b.query_x.shape == plain.query_x.shape and not torch.equal(b.query_x, plain.query_x)
    # ink is conserved unless a stroke is pushed over the border (2 pixels at most)
    assert torch.allclose(b.support_x.sum((-1, -2)), plain.support_x.sum((-1, -2)), rtol=0.2)
    assert Shifted(fam, 2).num_classes == fam.num_classes
    with pytest.raises(ValueError, match="max_shift >= 1 or max_rotate > 0"):
        Shifted(fam, 0)
    with pytest.raises(ValueError, match="max_shift must be an int >= 0"):
        Shifted(fam, -1, max_rotate=5.0)
    rotated = Shifted(fam, 0, max_rotate=10.0).sample(2, torch.Generator().manual_seed(5))
    assert torch.equal(rotated.query_y, plain.query_y)
    assert not torch.equal(rotated.support_x, plain.support_x)
    with pytest.raises(ValueError, match="max_degrees"):
        Shifted(fam, 1, max_rotate=200.0)


def _reference_rotate(img: torch.Tensor, degrees: float) -> torch.Tensor:
    """Turn a [C, H, W] image counter-clockwise (as displayed) about its centre, bilinear,
    zero fill, written out pixel by pixel in pixel coordinates."""
    c, h, w = img.shape
    a = math.radians(degrees)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    out = torch.zeros_like(img, dtype=torch.float64)
    src = img.double()
    for i in range(h):
        for j in range(w):
            # output (row i, col j) reads the input at the point turned clockwise by a
            y, x = i - cy, j - cx
            sx, sy = math.cos(a) * x - math.sin(a) * y + cx, math.sin(a) * x + math.cos(a) * y + cy
            x0, y0 = math.floor(sx), math.floor(sy)
            for yy, xx in ((y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)):
                wgt = (1 - abs(sx - xx)) * (1 - abs(sy - yy))
                if 0 <= yy < h and 0 <= xx < w and wgt > 0:
                    out[:, i, j] += wgt * src[:, yy, xx]
    return out.to(img.dtype)


def test_rotate_images_matches_a_pixel_loop_and_rot90():
    x = torch.rand(2, 3, 1, 7, 7)                                    # [..., C, H, W]
    y = rotate_images(x, 20.0, torch.Generator().manual_seed(4))
    u = torch.rand(6, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    angles = ((2 * u - 1) * 20.0).tolist()                           # the draws, one per image
    assert y.shape == x.shape and len({round(a, 3) for a in angles}) == 6
    for xi, yi, a in zip(x.reshape(-1, 1, 7, 7), y.reshape(-1, 1, 7, 7), angles):
        torch.testing.assert_close(yi, _reference_rotate(xi, a), atol=1e-5, rtol=0)
    # a quarter turn is torch.rot90 exactly (to rounding): the sign convention
    quarter = _reference_rotate(x[0, 0], 90.0)
    torch.testing.assert_close(quarter, torch.rot90(x[0, 0], 1, (-2, -1)), atol=1e-5, rtol=0)
    assert rotate_images(x, 0) is x
    assert torch.equal(y, rotate_images(x, 20.0, torch.Generator().manual_seed(4)))
    for bad in (-1.0, 181, float("nan"), True):
        with pytest.raises(ValueError, match="max_degrees"):
            rotate_images(x, bad)
    with pytest.raises(ValueError, match="float"):
        rotate_images(torch.ones(1, 5, 5, dtype=torch.uint8), 10.0)


def test_all_shifts_gives_every_offset_in_order_against_a_pixel_loop():
    x = torch.rand(2, 3, 1, 5, 6)                                    # [..., C, H, W]
    out = all_shifts(x, 2)
    assert out.shape == (25, 2, 3, 1, 5, 6)
    for k, (dy, dx) in enumerate((dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)):
        for xi, oi in zip(x.reshape(-1, 1, 5, 6), out[k].reshape(-1, 1, 5, 6)):
            assert torch.equal(oi, _reference_shift(xi, dy, dx))
    assert torch.equal(out[12], x) and torch.equal(all_shifts(x, 0)[0], x)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="shift must be an int >= 0"):
            all_shifts(x, bad)
    with pytest.raises(ValueError, match=r"\[\.\.\., C, H, W\]"):
        all_shifts(torch.rand(4, 4), 1)


def test_shifted_support_grows_a_task_or_a_batch_with_its_labels():
    sx, sy = torch.rand(6, 1, 5, 5), torch.tensor([0, 1, 2, 0, 1, 2])    # one task
    x, y = shifted_support(sx, sy, 1)
    assert x.shape == (54, 1, 5, 5) and torch.equal(x[:6], sx)         # the plain images first
    assert torch.equal(y, sy.repeat(9))
    copies = all_shifts(sx, 1)
    for j in range(54):                                               # each a shift of its own
        assert any(torch.equal(x[j], copies[k][j % 6]) for k in range(9))
    bx, by = torch.rand(3, 6, 1, 5, 5), torch.randint(0, 3, (3, 6))  # a batch of 3 tasks
    x, y = shifted_support(bx, by, 1)
    assert x.shape == (3, 54, 1, 5, 5) and y.shape == (3, 54)
    for b in range(3):
        tx, ty = shifted_support(bx[b], by[b], 1)
        assert torch.equal(x[b], tx) and torch.equal(y[b], ty)
    assert shifted_support(sx, sy, 0) == (sx, sy)
    with pytest.raises(ValueError, match="S, C, H, W"):
        shifted_support(torch.rand(6, 5), sy, 1)
