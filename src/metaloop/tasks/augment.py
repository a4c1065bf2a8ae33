"""Random distortions of training images, for whole meta-batches at once.

``shift_images`` moves each image by its own (dy, dx) in ``[-s, s]`` pixels, filling with 0
(background, as Omniglot stores ink = 1). ``rotate_images`` turns each image about its centre
by its own angle in ``[-r, r]`` degrees (bilinear, zero fill). ``stroke_images`` thickens or
thins each image's strokes by up to a pixel; ``elastic_images`` bends each image by a smooth
random displacement field (Simard et al. 2003). ``Shifted`` wraps a task family so that its
``sample`` returns support and query images with strokes changed, bent, rotated, then shifted
(each step only when it is on): the training loop uses it unchanged, and held-out evaluation
keeps the plain family. Drawn from the task generator, so a run is reproducible and resumes
exactly, and a step that is off draws nothing (older runs' streams are unchanged).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from metaloop._random import draw_device
from metaloop.tasks.batch import TaskBatch


def _check_shift(what: str, shift, x: torch.Tensor) -> None:
    """Name a shift that is not an int >= 0, one as large as the images (a copy moved by it
    holds no image at all), or images without ``[..., C, H, W]`` dims."""
    if not isinstance(shift, int) or isinstance(shift, bool) or shift < 0:
        raise ValueError(f"{what} must be an int >= 0, got {shift!r}")
    if x.dim() < 3:
        raise ValueError(f"{what.split()[0]} expects [..., C, H, W] images, got "
                         f"{list(x.shape)}")
    side = min(x.shape[-2:])
    if shift >= side > 0:
        raise ValueError(f"{what} = {shift} moves images of {list(x.shape[-2:])} pixels by up "
                         f"to {shift}, so some moved copies hold no image at all: give a shift "
                         f"below {side}")


def shift_images(x: torch.Tensor, max_shift: int,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Translate each image by a uniform random integer offset, zero fill.

    Args:
        x: ``[..., C, H, W]`` images.
        max_shift: s >= 0; each image moves by (dy, dx) drawn uniformly from ``[-s, s]``^2.
        generator: random source.

    Returns:
        ``[..., C, H, W]``, same dtype and device, contiguous (plain NCHW for any C: a
        channels-last result would send the convolutions and BatchNorm after it down
        torch's channels-last kernels, whose float32 BatchNorm on the CPU is not exact).

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
    at = draw_device(generator)
    d = torch.randint(0, 2 * s + 1, (2, n), generator=generator, device=at).to(x.device)
    # every (2s+1)^2 window of the padded images as a view: windows[i, :, a, b] is image i
    # moved down by s - a and right by s - b pixels; one gather picks each image's own
    windows = F.pad(flat, (s, s, s, s)).unfold(2, h, 1).unfold(3, w, 1)  # [N, C, 2s+1, 2s+1, H, W]
    out = windows[torch.arange(n, device=x.device), :, d[0], d[1]]      # [N, C, H, W]
    return out.contiguous().reshape(*lead, c, h, w)


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
        sx: ``[..., S, C, H, W]`` support images.
        sy: ``[..., S]`` labels (or ``[..., S, out]`` targets).
        shift: s >= 0 (0 returns the inputs).

    Returns:
        ``([..., S * (2s+1)^2, C, H, W], [..., S * (2s+1)^2(, out)])``, the original images
        first.

    Raises:
        ValueError: for a ``shift`` other than 0, ``sx`` with fewer than 4 dims, a
            ``shift`` that is not an int >= 0, or one as large as the images' height or
            width (a copy moved that far holds no image).
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


def _check_images(what: str, x: torch.Tensor) -> None:
    if x.dim() < 3 or not x.is_floating_point():
        raise ValueError(f"{what} expects float [..., C, H, W] images, got {x.dtype} "
                         f"{list(x.shape)}")


def rotate_images(x: torch.Tensor, max_degrees: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Rotate each image about its centre by a uniform random angle, bilinear, zero fill.

    Args:
        x: ``[..., C, H, W]`` float images.
        max_degrees: r in [0, 180]; each image turns by an angle drawn uniformly from
            ``[-r, r]`` degrees (positive: counter-clockwise as displayed, row 0 on top).
        generator: random source (one draw per image, on the generator's device).

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
    _check_images("rotate_images", x)
    if max_degrees == 0:
        return x
    *lead, c, h, w = x.shape
    flat = x.reshape(-1, c, h, w)                                       # [N, C, H, W]
    a = torch.deg2rad(_uniform(flat.shape[0], generator, x) * max_degrees).to(x.dtype)  # [N]
    cos, sin = a.cos(), a.sin()
    # output pixel (u, v) (normalised, v down) reads the input at R (u, v), R = [[c, -s],
    # [s, c]]: a counter-clockwise turn as displayed; square pixels give the h / w factors
    theta = torch.stack([torch.stack([cos, -sin * h / w, torch.zeros_like(a)], -1),
                         torch.stack([sin * w / h, cos, torch.zeros_like(a)], -1)], 1)
    grid = F.affine_grid(theta, list(flat.shape), align_corners=False)  # [N, H, W, 2]
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.reshape(*lead, c, h, w)


def _uniform(n: int, generator: torch.Generator | None, x: torch.Tensor,
             *shape: int) -> torch.Tensor:
    """``[n, *shape]`` uniform draws in [-1, 1), float64, drawn on the generator's device
    (``x``'s without one) and moved to ``x``'s device."""
    at = draw_device(generator, x.device)
    u = torch.rand(n, *shape, generator=generator, dtype=torch.float64, device=at)
    return (2 * u - 1).to(x.device)


def _max_min_3x3(p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The 3x3 maximum and minimum filters of ``p [..., H+2, W+2]`` (valid part, ``[..., H,
    W]``), separably by shifted slices: the same numbers as ``max_pool2d(p, 3, stride=1)``
    and its negative on ``-p``, about 10x faster on the CPU for small images."""
    h, w = p.shape[-2] - 2, p.shape[-1] - 2
    rows = [p[..., i:i + h, :] for i in range(3)]                       # [..., H, W+2]
    hi = torch.maximum(torch.maximum(rows[0], rows[1]), rows[2])
    lo = torch.minimum(torch.minimum(rows[0], rows[1]), rows[2])
    hi = torch.maximum(torch.maximum(hi[..., 0:w], hi[..., 1:w + 1]), hi[..., 2:w + 2])
    lo = torch.minimum(torch.minimum(lo[..., 0:w], lo[..., 1:w + 1]), lo[..., 2:w + 2])
    return hi, lo                                                       # [..., H, W]


def stroke_images(x: torch.Tensor, max_change: float,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Thicken or thin each image's strokes by a random fraction of a pixel (ink = 1 on 0).

    Each image draws t uniformly from ``[-w, w]`` and moves toward its 3x3 dilation (max
    filter, t > 0) or its 3x3 erosion (min filter, t < 0): ``x + |t| (D(x) - x)``. t = 1 is a
    stroke one pixel wider on each side, t = -1 one pixel thinner; values stay within the
    image's own range.

    Args:
        x: ``[..., C, H, W]`` float images, ink bright on a dark background.
        max_change: w in [0, 1].
        generator: random source (one draw per image).

    Returns:
        ``[..., C, H, W]``, same dtype and device; ``x`` itself when w = 0.

    Raises:
        ValueError: ``max_change`` not a number in [0, 1], or ``x`` not float ``[..., C, H,
            W]``.
    """
    if (not isinstance(max_change, (int, float)) or isinstance(max_change, bool)
            or not 0 <= max_change <= 1):
        raise ValueError(f"stroke_images max_change must be a number in [0, 1], got "
                         f"{max_change!r}")
    _check_images("stroke_images", x)
    if max_change == 0:
        return x
    *lead, c, h, w = x.shape
    flat = x.reshape(-1, c, h, w)                                       # [N, C, H, W]
    t = (_uniform(flat.shape[0], generator, x) * max_change).to(x.dtype)       # [N]
    t = t[:, None, None, None]                                          # [N, 1, 1, 1]
    low = flat.amin((1, 2, 3), keepdim=True)                            # [N, 1, 1, 1]
    # pad with each image's own minimum (the background), so the border neither grows nor
    # eats strokes
    padded = F.pad(flat - low, (1, 1, 1, 1)) + low                      # [N, C, H+2, W+2]
    dilated, eroded = _max_min_3x3(padded)                              # [N, C, H, W] each
    out = flat + t.abs() * (torch.where(t > 0, dilated, eroded) - flat)
    return out.reshape(*lead, c, h, w)


def _smoothing(n: int, sigma: float, like: torch.Tensor) -> torch.Tensor:
    """``[n, n]``: a 1-d Gaussian filter (std ``sigma``, radius ``ceil(3 sigma)``) with
    replicated edges, as a matrix, so that ``M @ f`` smooths the columns of ``f``; one small
    matmul per axis is ~30x faster on the CPU than the equivalent 2-d convolutions."""
    r = max(1, math.ceil(3 * sigma))
    offsets = torch.arange(-r, r + 1, device=like.device)
    k = torch.exp(-0.5 * (offsets.to(like.dtype) / sigma) ** 2)
    k = k / k.sum()                                                     # [2r+1]
    cols = (torch.arange(n, device=like.device)[:, None] + offsets).clamp(0, n - 1)
    return torch.zeros(n, n, dtype=like.dtype, device=like.device).scatter_add_(
        1, cols, k.expand(n, -1).contiguous())                         # [n, n]


def elastic_images(x: torch.Tensor, alpha: float, sigma: float = 3.0,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """Bend each image by its own smooth random displacement field (Simard et al. 2003).

    Per image and axis: uniform noise in [-1, 1] per pixel, smoothed by a Gaussian of std
    ``sigma`` pixels, scaled so that its root-mean-square over the image is ``alpha`` pixels;
    each output pixel reads the input at its position plus that displacement (bilinear, zero
    fill). The smoothing replicates the edge pixels' noise, so the field is not uniform over
    the image: at 28x28 with sigma 3, its RMS is about 0.7 ``alpha`` over the middle (where
    a character's strokes are) and rises toward the edges, to about 2.7 ``alpha`` at the
    corners.

    Args:
        x: ``[..., C, H, W]`` float images.
        alpha: the RMS displacement in pixels, >= 0 (1 to 2 is mild at 28x28).
        sigma: the field's smoothness in pixels, > 0 (larger: a gentler bend).
        generator: random source (``2 H W`` draws per image).

    Returns:
        ``[..., C, H, W]``, same dtype and device; ``x`` itself when alpha = 0.

    Raises:
        ValueError: ``alpha`` not a finite number >= 0, ``sigma`` not > 0, or ``x`` not
            float ``[..., C, H, W]``.
    """
    for name, v, low in (("alpha", alpha, 0.0), ("sigma", sigma, None)):
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or (v < 0 if low is not None else v <= 0):
            raise ValueError(f"elastic_images {name} must be a finite number "
                             f"{'>= 0' if low is not None else '> 0'}, got {v!r}")
    _check_images("elastic_images", x)
    if alpha == 0:
        return x
    *lead, c, h, w = x.shape
    flat = x.reshape(-1, c, h, w)                                       # [N, C, H, W]
    n = flat.shape[0]
    field = _uniform(n, generator, x, 2, h, w).to(x.dtype)              # [N, 2, H, W]
    field = _smoothing(h, sigma, x) @ field @ _smoothing(w, sigma, x).T   # [N, 2, H, W]
    rms = field.square().mean((2, 3), keepdim=True).sqrt().clamp_min(1e-12)  # [N, 2, 1, 1]
    field = field * (alpha / rms)                                       # pixels, (dx, dy)
    # normalised coordinates (align_corners=False): a pixel is 2 / W wide and 2 / H high
    eye = torch.eye(2, 3, dtype=x.dtype, device=x.device).expand(n, 2, 3)
    grid = F.affine_grid(eye, [n, c, h, w], align_corners=False)        # [N, H, W, 2]
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=x.dtype, device=x.device)
    grid = grid + field.permute(0, 2, 3, 1) * scale                     # [N, H, W, (x, y)]
    out = F.grid_sample(flat, grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.reshape(*lead, c, h, w)


ELASTIC_SIGMA = 3.0   # the elastic field's smoothness in pixels, for Shifted and the configs


def augment_images(x: torch.Tensor, generator: torch.Generator | None, max_shift: int = 0,
                   max_rotate: float = 0.0, max_stroke: float = 0.0,
                   elastic: float = 0.0) -> torch.Tensor:
    """``x [..., C, H, W]`` with strokes changed, bent, rotated, then shifted (``Shifted``'s
    order; a step that is 0 draws nothing)."""
    x = stroke_images(x, max_stroke, generator)
    x = elastic_images(x, elastic, ELASTIC_SIGMA, generator)
    return shift_images(rotate_images(x, max_rotate, generator), max_shift, generator)


class Shifted:
    """A task family whose sampled images get their strokes changed (``stroke_images``),
    are bent (``elastic_images``), rotated (``rotate_images``), then translated
    (``shift_images``), in that order.

    Args:
        family: any image family with ``sample(n, generator)`` returning a ``TaskBatch``.
        max_shift: s >= 0 pixels.
        max_rotate: r in [0, 180] degrees.
        max_stroke: w in [0, 1], the stroke change in pixels (``stroke_images``).
        elastic: the RMS displacement in pixels of an elastic bend, >= 0 (field smoothness
            ``ELASTIC_SIGMA`` pixels). At least one of the four must be on.

    The TaskFamily attributes are the wrapped family's.

    Raises:
        ValueError: none of the four on, a value out of its range, or a family that does
            not give images.
    """

    def __init__(self, family, max_shift: int, max_rotate: float = 0.0,
                 max_stroke: float = 0.0, elastic: float = 0.0):
        z = torch.zeros(1, 1, 1)
        shape = getattr(family, "image_shape", None)      # a shift below the images' side
        g = torch.Generator().manual_seed(0)     # the checks draw: never torch's global RNG
        shift_images(z if shape is None else torch.zeros(1, *shape[-2:]), max_shift, g)
        rotate_images(z, max_rotate, g)
        stroke_images(z, max_stroke, g)
        elastic_images(z, elastic, generator=g)
        if not (max_shift or max_rotate or max_stroke or elastic):
            raise ValueError("Shifted needs max_shift, max_rotate, max_stroke or elastic on: "
                             "with all 0 it would change nothing")
        if getattr(family, "image_shape", None) is None:
            raise ValueError(f"Shifted needs an image family, not {type(family).__name__}")
        self.family, self.max_shift, self.max_rotate = family, max_shift, max_rotate
        self.max_stroke, self.elastic = max_stroke, elastic

    def _augment(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return augment_images(x, generator, self.max_shift, self.max_rotate,
                              self.max_stroke, self.elastic)

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
        return Shifted(self.family.with_shots(shots, queries), self.max_shift, self.max_rotate,
                       self.max_stroke, self.elastic)

    def sample_flat(self, n: int, generator: torch.Generator | None = None):
        """The wrapped family's flat examples, unaugmented."""
        return self.family.sample_flat(n, generator)

    def __repr__(self) -> str:
        extra = "".join(f", {k}={getattr(self, k)}" for k in ("max_stroke", "elastic")
                        if getattr(self, k))
        return (f"Shifted({self.family!r}, max_shift={self.max_shift}, "
                f"max_rotate={self.max_rotate}{extra})")
