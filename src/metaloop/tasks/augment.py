"""Random translations and small rotations of training images, for whole meta-batches at once.

``shift_images`` moves each image by its own (dy, dx) in ``[-s, s]`` pixels, filling with 0
(background, as Omniglot stores ink = 1). ``rotate_images`` turns each image about its centre
by its own angle in ``[-r, r]`` degrees (bilinear, zero fill). ``Shifted`` wraps a task family
so that its ``sample`` returns rotated, then shifted, support and query images: the training
loop uses it unchanged, and held-out evaluation keeps the plain family. Drawn from the task
generator, so a run is reproducible and resumes exactly.
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from metaloop.tasks.batch import TaskBatch


def _check_shift(what: str, shift, x: torch.Tensor) -> None:
    """Name a shift that is not an int >= 0, or images without ``[..., C, H, W]`` dims."""
    if not isinstance(shift, int) or isinstance(shift, bool) or shift < 0:
        raise ValueError(f"{what} must be an int >= 0, got {shift!r}")
    if x.dim() < 3:
        raise ValueError(f"{what.split()[0]} expects [..., C, H, W] images, got "
                         f"{list(x.shape)}")


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
    _check_shift("shift_images max_shift", max_shift, x)
    if max_shift == 0:
        return x
    *lead, c, h, w = x.shape
    flat = x.reshape(-1, c, h, w)                                       # [N, C, H, W]
    n, s = flat.shape[0], max_shift
    # drawn where the generator lives (the CPU's stream for a CPU generator), then moved
    at = generator.device if generator is not None else torch.device("cpu")
    d = torch.randint(0, 2 * s + 1, (2, n), generator=generator, device=at).to(x.device)
    rows = d[0, :, None] + torch.arange(h, device=x.device)             # [N, H] into padded
    cols = d[1, :, None] + torch.arange(w, device=x.device)             # [N, W]
    padded = F.pad(flat, (s, s, s, s))                                  # [N, C, H+2s, W+2s]
    n_idx = torch.arange(n, device=x.device)[:, None, None]
    out = padded[n_idx, :, rows[:, :, None], cols[:, None, :]]          # [N, H, W, C]
    return out.permute(0, 3, 1, 2).reshape(*lead, c, h, w)


def all_shifts(x: torch.Tensor, shift: int) -> torch.Tensor:
    """Every translation of each image by (dy, dx) in ``[-shift, shift]``^2, zero fill: the
    deterministic counterpart of ``shift_images``, for test-time augmentation.

    Args:
        x: ``[..., C, H, W]`` images. shift: s >= 0.

    Returns:
        ``[(2s+1)^2, ..., C, H, W]``: copy ``(dy + s) * (2s+1) + (dx + s)`` is ``x`` moved
        down by dy and right by dx pixels; the middle copy is ``x`` itself.

    Raises:
        ValueError: a negative or non-int ``shift``, or ``x`` with fewer than 3 dims.
    """
    _check_shift("all_shifts shift", shift, x)
    h, w = x.shape[-2:]
    s = shift
    padded = F.pad(x, (s, s, s, s))                                   # [..., C, H+2s, W+2s]
    copies = [padded[..., s - dy: s - dy + h, s - dx: s - dx + w]     # moved by (dy, dx)
              for dy in range(-s, s + 1) for dx in range(-s, s + 1)]
    return torch.stack(copies)                                        # [(2s+1)^2, ..., C, H, W]


def shifted_support(sx: torch.Tensor, sy: torch.Tensor, shift: int):
    """A support set grown by every shift of each image up to ``shift`` pixels (labels
    repeated), so a prototype or head fitted to it averages over the shifts.

    Args:
        sx: ``[..., S, C, H, W]`` support images. sy: ``[..., S]`` (or ``[..., S, out]``).
        shift: s >= 0 (0 returns the inputs).

    Returns:
        ``([..., S * (2s+1)^2, C, H, W], [..., S * (2s+1)^2(, out)])``, the original images
        first.
    """
    if shift == 0:
        return sx, sy
    if sx.dim() < 4:
        raise ValueError(f"shifted_support expects [..., S, C, H, W] images, got "
                         f"{list(sx.shape)}")
    copies = all_shifts(sx, shift)                                    # [K, ..., S, C, H, W]
    k, mid = copies.shape[0], copies.shape[0] // 2
    order = [mid] + [i for i in range(k) if i != mid]                 # the plain images first
    lead = sx.dim() - 4                                               # batch dims before S
    x = torch.cat([copies[i] for i in order], dim=lead)               # [..., K*S, C, H, W]
    y = torch.cat([sy] * k, dim=lead)
    return x, y


def rotate_images(x: torch.Tensor, max_degrees: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate each image about its centre by a uniform random angle, bilinear, zero fill.

    Args:
        x: ``[..., C, H, W]`` float images.
        max_degrees: r in [0, 180]; each image turns by an angle drawn uniformly from
            ``[-r, r]`` degrees (positive: counter-clockwise as displayed, row 0 on top).
        generator: random source (one draw per image, on the CPU).

    Returns:
        ``[..., C, H, W]``, same dtype and device; ``x`` itself when r = 0.

    Raises:
        ValueError: ``max_degrees`` not a number in [0, 180], or ``x`` with fewer than 3
            dims or not floating point.
    """
    if (not isinstance(max_degrees, (int, float)) or isinstance(max_degrees, bool)
            or not 0 <= max_degrees <= 180):
        raise ValueError(f"rotate_images max_degrees must be a number in [0, 180], got "
                         f"{max_degrees!r}")
    if x.dim() < 3 or not x.is_floating_point():
        raise ValueError(f"rotate_images expects float [..., C, H, W] images, got "
                         f"{x.dtype} {list(x.shape)}")
    if max_degrees == 0:
        return x
    *lead, c, h, w = x.shape
    flat = x.reshape(-1, c, h, w)                                       # [N, C, H, W]
    u = torch.rand(flat.shape[0], generator=generator, dtype=torch.float64)
    a = torch.deg2rad((2 * u - 1) * max_degrees).to(x.device, x.dtype)  # [N]
    cos, sin = a.cos(), a.sin()
    # output pixel (u, v) (normalised, v down) reads the input at R (u, v), R = [[c, -s],
    # [s, c]]: a counter-clockwise turn as displayed; square pixels give the h / w factors
    theta = torch.stack([torch.stack([cos, -sin * h / w, torch.zeros_like(a)], -1),
                         torch.stack([sin * w / h, cos, torch.zeros_like(a)], -1)], 1)
    grid = F.affine_grid(theta, list(flat.shape), align_corners=False)  # [N, H, W, 2]
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.reshape(*lead, c, h, w)


class Shifted:
    """A task family whose sampled images are randomly rotated (``rotate_images``), then
    translated (``shift_images``).

    Args:
        family: any image family with ``sample(n, generator)`` returning a ``TaskBatch``.
        max_shift: s >= 0 pixels.
        max_rotate: r in [0, 180] degrees; s and r may not both be 0.

    The TaskFamily attributes are the wrapped family's.
    """

    def __init__(self, family, max_shift: int, max_rotate: float = 0.0):
        shift_images(torch.zeros(1, 1, 1), max_shift)                  # checks max_shift
        rotate_images(torch.zeros(1, 1, 1), max_rotate)                # checks max_rotate
        if max_shift == 0 and max_rotate == 0:
            raise ValueError("Shifted needs max_shift >= 1 or max_rotate > 0: with both 0 it "
                             "would change nothing")
        if getattr(family, "image_shape", None) is None:
            raise ValueError(f"Shifted needs an image family, not {type(family).__name__}")
        self.family, self.max_shift, self.max_rotate = family, max_shift, max_rotate

    def _augment(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return shift_images(rotate_images(x, self.max_rotate, generator), self.max_shift,
                            generator)

    def sample(self, n: int, generator: torch.Generator | None = None) -> TaskBatch:
        b = self.family.sample(n, generator=generator)
        return dataclasses.replace(b, support_x=self._augment(b.support_x, generator),
                                   query_x=self._augment(b.query_x, generator))

    # The TaskFamily protocol, explicitly: everything but sample is the wrapped family's.
    kind = property(lambda self: self.family.kind)
    ways = property(lambda self: self.family.ways)
    shots = property(lambda self: self.family.shots)
    queries = property(lambda self: self.family.queries)
    num_classes = property(lambda self: self.family.num_classes)
    class_names = property(lambda self: self.family.class_names)
    input_shape = property(lambda self: self.family.input_shape)
    image_shape = property(lambda self: self.family.image_shape)

    def with_shots(self, shots: int, queries: int | None = None) -> Shifted:
        """The wrapped family with other shot counts, augmented the same way."""
        return Shifted(self.family.with_shots(shots, queries), self.max_shift, self.max_rotate)

    def sample_flat(self, n: int, generator: torch.Generator | None = None):
        """The wrapped family's flat examples, unaugmented."""
        return self.family.sample_flat(n, generator)

    def __repr__(self) -> str:
        return (f"Shifted({self.family!r}, max_shift={self.max_shift}, "
                f"max_rotate={self.max_rotate})")
