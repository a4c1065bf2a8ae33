import pytest
import torch

from metaloop.tasks import Omniglot, Shifted, shift_images


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
    with pytest.raises(ValueError, match="max_shift"):
        Shifted(fam, 0)
