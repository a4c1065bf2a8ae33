"""Random integer translations of training images, applied to whole meta-batches at once.

``shift_images`` moves each image by its own (dy, dx) in ``[-s, s]`` pixels, filling with 0
(background, as Omniglot stores ink = 1). ``Shifted`` wraps a task family so that its
``sample`` returns shifted support and query images: the training loop uses it unchanged, and
held-out evaluation keeps the plain family. Drawn from the task generator, so a run is
reproducible and resumes exactly.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from metaloop.tasks.batch import TaskBatch
from metaloop.tasks.omniglot import check_positive_int


def shift_images(x: torch.Tensor, max_shift: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image by a uniform random integer offset, zero fill.

    Args:
        x: ``[..., C, H, W]`` images.
        max_shift: s >= 0; each image moves by (dy, dx) drawn uniformly from ``[-s, s]``^2.
        generator: random source.

    Returns:
        ``[..., C, H, W]``, same dtype and device.

    Raises:
        ValueError: a negative or non-int ``max_shift``, or ``x`` with fewer than 3 dims.
    """
    if not isinstance(max_shift, int) or isinstance(max_shift, bool) or max_shift < 0:
        raise ValueError(f"shift_images max_shift must be an int >= 0, got {max_shift!r}")
    if x.dim() < 3:
        raise ValueError(f"shift_images expects [..., C, H, W] images, got {list(x.shape)}")
    if max_shift == 0:
        return x
    *lead, c, h, w = x.shape
    flat = x.reshape(-1, c, h, w)                                       # [N, C, H, W]
    n, s = flat.shape[0], max_shift
    d = torch.randint(0, 2 * s + 1, (2, n), generator=generator).to(x.device)   # [2, N]
    rows = d[0, :, None] + torch.arange(h, device=x.device)             # [N, H] into padded
    cols = d[1, :, None] + torch.arange(w, device=x.device)             # [N, W]
    padded = F.pad(flat, (s, s, s, s))                                  # [N, C, H+2s, W+2s]
    n_idx = torch.arange(n, device=x.device)[:, None, None]
    out = padded[n_idx, :, rows[:, :, None], cols[:, None, :]]          # [N, H, W, C]
    return out.permute(0, 3, 1, 2).reshape(*lead, c, h, w)


class Shifted:
    """A task family whose sampled images are randomly translated (``shift_images``).

    Args:
        family: any image family with ``sample(n, generator)`` returning a ``TaskBatch``.
        max_shift: s >= 1 pixels.

    Every other attribute is the wrapped family's.
    """

    def __init__(self, family, max_shift: int):
        check_positive_int("Shifted", max_shift=max_shift)
        if getattr(family, "image_shape", None) is None:
            raise ValueError(f"Shifted needs an image family, not {type(family).__name__}")
        self.family, self.max_shift = family, max_shift

    def sample(self, n: int, generator: torch.Generator | None = None) -> TaskBatch:
        b = self.family.sample(n, generator=generator)
        return dataclasses.replace(
            b, support_x=shift_images(b.support_x, self.max_shift, generator),
            query_x=shift_images(b.query_x, self.max_shift, generator))

    def __getattr__(self, name):
        return getattr(self.family, name)

    def __repr__(self) -> str:
        return f"Shifted({self.family!r}, max_shift={self.max_shift})"
