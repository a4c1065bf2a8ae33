"""Reading a user's own image folders for few-shot prediction (``metaloop predict``).

Preprocessing reproduces what the image families feed the network at training time:

1. decode with Pillow (any format it reads), apply the EXIF orientation, and convert to
   greyscale ``L`` (a transparent background counts as white); an image at least 16 times
   the output side is first shrunk by a whole factor (box filter) to no less than 8 times it,
   and steps 3 and 4 then give its pixels the weights of the full-size pixels they average
   (``_shrunk_input``);
2. scale to [0, 1] (16-bit greyscale by 65535: by the bit depth the file declares, not by
   its values; ``_depth_scale``) and fix the polarity: the families store **ink = 1 on a
   background of 0** (light strokes on black; Omniglot's PNGs are stored inverted, black ink
   on white, and are flipped when loaded). An image whose mean is above 0.5 is mostly
   light, so it is taken as dark ink on a light background and inverted (``invert="auto"``).
   Scans and drawings on paper are inverted this way; images already light-on-dark are kept;
3. pad a non-square image to a square, centred, with its own border colour (each channel's
   median over the outermost pixels: the background, black for ink on 0 and white for a
   photo on white), so the aspect ratio is kept and nothing is cropped (``pad_square``);
4. resize to the model's side with the same antialiased bilinear kernel the Omniglot loader
   uses (``F.interpolate(mode="bilinear", antialias=True)``).

Every function raises ``ValueError`` naming the offending path.
"""

from __future__ import annotations

import hashlib
import os
import struct
import threading
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

INVERT_MODES = ("auto", "always", "never")
# What counts as an image, by its suffix (any case), here and in the training folder's scan;
# other files (README.txt, Thumbs.db, desktop.ini) are left out and counted.
# JPEG's .jfif and .jpe (as browsers save downloads) and PNM's .pnm are Pillow's too.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".jfif", ".jpe", ".bmp", ".gif", ".webp", ".tif",
                    ".tiff", ".ppm", ".pgm", ".pbm", ".pnm")


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


def _hidden_entries(entries: list[Path]) -> list[Path]:
    """The hidden entries (``.names``) among ``entries``, sorted, as the training folder's
    scan counts them: metaloop's own cache folder is not one."""
    return sorted(p for p in entries if not _visible(p) and p.name != CACHE_DIRNAME)


CACHE_DIRNAME = ".metaloop-cache"
"""The folder cache's name (``metaloop.data.folder``), inside the image folder: no class."""
DIGEST_BYTES = 16
"""Bytes of each image's ``_pixel_digest`` (blake2b), kept in the folder cache beside the
file's size, mtime and ctime, and a 0 (the stats array: int64 ``[N, 4 + DIGEST_BYTES // 8]``)."""

CHANNELS = (1, 3)
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")   # 16-bit / 32-bit greyscale
# A large image is first shrunk by a whole factor (a box filter; a JPEG while it decodes) to no
# less than this many times the output side: a 24-megapixel photo then takes hundredths of a
# second and a few MB instead of seconds and a GB. The shrunk pixels are then resampled with
# the weights that the full-size resize of the padded square gives the pixels each of them
# averages (``_block_weights``), and padded with the median of the full image's outermost
# pixels: the geometry (odd sides, a partial last block, the padding, the EXIF turn) is the
# full image's, and what is left is the variation inside a block: about 0.1 grey level in 255
# from the full-size resize on average and under 1 at a sharp edge (drawings of 1801 x 1203
# to 4032 x 3024 pixels, 28 and 84 pixels out). A JPEG decoded at a reduced scale (``_draft``)
# is padded with its decoded border's median instead (each edge pixel the mean of a few
# full-size pixels inward): a non-square photo whose edge changes within those pixels is about
# 0.4 grey level off on average and up to 5 (937 x 513 to 1196 x 604 pixels, 28 out); with
# the full-size border it would be 0.03 and 1.5, but that needs the full-size decode.
_KEEP = 8
# EXIF orientation -> (swap the axes, reverse the new x, reverse the new y), as
# ``ImageOps.exif_transpose`` turns the image
_ORIENTATIONS = {2: (False, True, False), 3: (False, True, True), 4: (False, False, True),
                 5: (True, False, False), 6: (True, True, False), 7: (True, True, True),
                 8: (True, False, True)}


@dataclass(frozen=True)
class _Grid:
    """Where the pixels of a shrunk image lie in the full-size (upright) one.

    Attributes:
        ys: int64 ``[h + 1]``: shrunk row k is the mean of full-size rows ``ys[k]`` to
            ``ys[k + 1] - 1`` (a block at either end may be partial); ``ys[-1]`` is the
            full height.
        xs: int64 ``[w + 1]``: the same for columns.
        border: float32 ``[n, c]``: the outermost pixels of the full-size image (of the
            decoded one for a JPEG decoded at a reduced scale), in [0, 1].
    """

    ys: np.ndarray
    xs: np.ndarray
    border: np.ndarray


def _depth_scale(im: Image.Image) -> float:
    """What an integer greyscale image's values are divided by: the largest value of the
    bit depth its file declares (before the image is turned; 1 for other modes).

    16 bits (65535): Pillow's ``I;16`` modes, and mode ``I`` from a PNG or a PNM (a PGM of
    more than 8 bits, which Pillow spreads over 16). A TIFF in mode ``I``: its BitsPerSample
    and SampleFormat (2^32 - 1 unsigned 32-bit, 2^31 - 1 signed). Any other mode ``I``
    image (an int32 array): 32-bit signed, 2^31 - 1.
    """
    if im.mode.startswith("I;16"):
        return 65535.0
    if im.mode != "I":
        return 1.0
    if im.format in ("PNG", "PPM"):
        return 65535.0
    tags = getattr(im, "tag_v2", None) if im.format == "TIFF" else None
    if tags is not None:
        bits, fmt = tags.get(258, 32), tags.get(339, 1)
        bits = int(bits[0] if isinstance(bits, tuple) else bits)
        fmt = int(fmt[0] if isinstance(fmt, tuple) else fmt)
        return float(2 ** (bits - 1) - 1 if fmt == 2 else 2 ** bits - 1)
    return float(2 ** 31 - 1)


def _draft(im: Image.Image, image_size: int) -> int:
    """Let a JPEG decode at 1/8, 1/4 or 1/2 scale: the first of these that keeps the longer
    side at least ``_KEEP * image_size`` and whose divisor is no more than the shorter side
    (Pillow's draft divides by the scaled size). Before the image is loaded; other formats
    ignore it.

    Returns:
        The scale's divisor d (1: none): the decoded image is ``ceil(w / d) x ceil(h / d)``.
    """
    w, h = im.size
    most = max(w, h) // (_KEEP * image_size)
    factor = next((f for f in (8, 4, 2) if f <= most and f <= min(w, h)), 1)
    if factor < 2:
        return 1
    im.draft(None, (w // factor, h // factor))
    return next((f for f in (8, 4, 2) if im.size == (-(-w // f), -(-h // f))), 1)


def _prepared(im: Image.Image, channels: int, scale: float) -> Image.Image:
    """``im`` in a mode that is shrunk (``Image.reduce``) and read as it is: ``I`` or ``F``
    (greyscale 16 / 32-bit or float), ``RGBA`` (any transparency, premultiplied when
    reduced, so that shrinking and compositing on white commute), ``L`` or ``RGB``. An
    unsigned 32-bit image (``scale`` 2^32 - 1), which Pillow holds as signed (from 2^31 up
    negative), becomes ``F`` in [0, 1]."""
    if im.mode == "I" and scale == 2.0 ** 32 - 1:
        a = np.asarray(im).view(np.uint32).astype(np.float64) / scale             # [h, w]
        return Image.fromarray(a.astype(np.float32), "F")
    if im.mode in _WIDE_MODES:
        return im if im.mode in ("I", "F") else im.convert("I")   # reduce needs 32-bit
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:   # P, L, RGB with tRNS
        return im if im.mode == "RGBA" else im.convert("RGBA")
    if im.mode in ("L", "RGB"):
        return im                              # shrunk before a full-size conversion
    return im.convert("L" if channels == 1 else "RGB")      # P, 1, CMYK, ...


def _finish(im: Image.Image, channels: int, scale: float) -> np.ndarray:
    """float32 ``[h, w, channels]`` in [0, 1] from a ``_prepared`` image: ``I`` divided by
    ``scale``, ``F`` clipped, ``RGBA`` composited on white, RGB averaged to grey for
    ``channels = 1`` (Pillow's ``L`` weights)."""
    if im.mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float32) / np.float32(1.0 if im.mode == "F" else scale)
        a = np.clip(a, 0.0, 1.0)[..., None]                                   # [h, w, 1]
        return a if channels == 1 else np.repeat(a, 3, axis=-1)
    if im.mode == "RGBA":
        im = Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), im)
    a = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
    return a.reshape(*a.shape[:2], channels)                                  # [h, w, c]


def _check_finite(im: Image.Image) -> None:
    """ValueError counting a float image's NaN and infinite values (at full size)."""
    if im.mode == "F":
        bad = int((~np.isfinite(np.asarray(im, dtype=np.float32))).sum())
        if bad:
            raise ValueError(f"{bad} of its pixel values are NaN or infinite (a float "
                             f"image's missing data?); fill them first")


def _pixels(im: Image.Image, channels: int, scale: float | None = None) -> np.ndarray:
    """float32 ``[h, w, channels]`` in [0, 1] from any Pillow mode, at full size:
    transparency composited on white, palettes expanded, integer greyscale divided by
    ``scale`` (default: ``_depth_scale``), RGB averaged to grey for ``channels = 1``.

    Raises:
        ValueError: a float image with NaN or infinite values.
    """
    _check_finite(im)
    scale = _depth_scale(im) if scale is None else scale
    return _finish(_prepared(im, channels, scale), channels, scale)


def _read(im: Image.Image, channels: int, image_size: int, scale: float,
          full: tuple[int, int] | None = None, draft: int = 1
          ) -> tuple[np.ndarray, _Grid | None]:
    """An opened image turned upright (``_upright``) and read as ``_pixels``; one at least
    ``2 * _KEEP`` times ``image_size`` on its longer side is shrunk by a whole factor first.

    Args:
        im: the image, as decoded (``draft`` > 1: at that reduced scale, from a full size of
            ``full``, w x h as stored).
        scale: ``_depth_scale`` of the file.

    Returns:
        float32 ``[h, w, channels]``, and where they lie in the full image (None: they are
        the full image).
    """
    stored = im.size
    im, orientation = _upright(im)
    _check_finite(im)
    im = _prepared(im, channels, scale)
    factor = max(im.size) // (_KEEP * image_size)
    if factor < 2 and draft == 1:
        return _finish(im, channels, scale), None
    w, h = cast(tuple[int, int], full) if draft > 1 else stored
    xs = np.minimum(np.arange(stored[0] + 1) * draft, w)           # [stored w + 1]
    ys = np.minimum(np.arange(stored[1] + 1) * draft, h)           # [stored h + 1]
    swap, flip_x, flip_y = _ORIENTATIONS.get(orientation, (False, False, False))
    if swap:
        xs, ys = ys, xs
    xs, ys = (xs[-1] - xs[::-1] if flip_x else xs), (ys[-1] - ys[::-1] if flip_y else ys)
    w, h = im.size
    strips = [im.crop((0, 0, w, 1)), im.crop((0, h - 1, w, h)), im.crop((0, 0, 1, h)),
              im.crop((w - 1, 0, w, h))]          # pad_square's: top, bottom, left, right
    border = np.concatenate([_finish(s, channels, scale).reshape(-1, channels)
                             for s in strips])                                  # [n, c]
    if factor >= 2:
        im = im.reduce(factor)
        xs = xs[np.minimum(np.arange(im.size[0] + 1) * factor, w)]
        ys = ys[np.minimum(np.arange(im.size[1] + 1) * factor, h)]
    return _finish(im, channels, scale), _Grid(ys, xs, border)


def load_image(path: str | os.PathLike, image_size: int = 28, invert: str = "auto",
               channels: int = 1) -> torch.Tensor:
    """One image file as the network's input.

    Args:
        path: any file Pillow can decode (PNG, JPEG, BMP, GIF, TIFF, WebP, ...), in any mode
            (RGBA, palette, 16-bit) and size. An animated GIF gives its first frame.
        image_size: output side H = W.
        invert: ``"auto"`` (invert if the mean is above 0.5), ``"always"`` or ``"never"``.
        channels: 1 (greyscale) or 3 (RGB).

    Returns:
        float32 ``[channels, H, W]`` in [0, 1]; with inversion, ink = 1 and background = 0.

    Raises:
        ValueError: the file cannot be read as an image or is no regular file (naming it), a
            bad ``image_size``, ``invert`` or ``channels``.
    """
    check_image_settings(image_size, invert, channels)
    pix, grid = _read_file(Path(path), image_size, channels)                 # [h, w, c]
    return _to_input(pix, image_size, invert, grid)


# Pillow warns (DecompressionBombWarning, naming no file) of an image over
# PIL.Image.MAX_IMAGE_PIXELS and raises past twice that. The size check is made here instead,
# as Pillow makes it by default: an image up to twice the limit is read without a warning
# (a large photo: its JPEG is drafted down as it decodes), one past it is refused by name,
# whatever the warning filters. Pillow reads the limit while it opens a file, so the opening
# holds it at None under this lock (the header only: the decoding runs outside).
_OPENING = threading.Lock()


def _open_image(path: Path) -> Image.Image:
    """``Image.open(path)`` (the header only), with Pillow's pixel check made here: an image
    of more than twice ``PIL.Image.MAX_IMAGE_PIXELS`` raises ``DecompressionBombError``,
    naming its size, as Pillow's own check does; a smaller one opens without a warning."""
    with _OPENING:
        limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None
        try:
            im = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    pixels = im.size[0] * im.size[1]
    if limit is not None and pixels > 2 * limit:
        im.close()
        raise Image.DecompressionBombError(
            f"Image size ({pixels} pixels) exceeds limit of {2 * limit} pixels (twice "
            f"PIL.Image.MAX_IMAGE_PIXELS), as a decompression bomb would.")
    return im


def _read_file(path: Path, image_size: int, channels: int):
    """The pixels of one image file as ``load_image`` reads them before ``_to_input``
    (``_read``'s ``[h, w, c]`` array and grid).

    Raises:
        ValueError: the file cannot be read as an image or is no regular file (naming it).
    """
    if path.exists() and not path.is_file():          # opening a pipe would wait for ever
        raise ValueError(f"cannot read image {path}: it is not a regular file (a folder, a "
                         f"pipe, a socket or a device)")
    try:
        with _open_image(path) as im:
            im.seek(0)
            scale, full = _depth_scale(im), im.size
            draft = _draft(im, image_size)
            pix, grid = _read(im, channels, image_size, scale, full, draft)   # [h, w, c]
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # not OSErrors: they would escape
        raise ValueError(f"cannot read image {path}: {e} Shrink it first (or, in Python, "
                         f"raise PIL.Image.MAX_IMAGE_PIXELS if you trust the file)") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
            struct.error) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    if pix.size == 0:
        raise ValueError(f"cannot read image {path}: it has no pixels")
    return pix, grid


def _upright(im: Image.Image) -> tuple[Image.Image, int]:
    """``im`` turned by its EXIF orientation (``ImageOps.exif_transpose``), and that
    orientation (1: as stored); as stored when its EXIF block cannot be parsed (truncated,
    or not TIFF data), as Pillow reads a JPEG's and a photo viewer shows the pixels: the
    block is metadata, not the image."""
    im.load()                   # the pixels first: their errors are not the EXIF block's
    try:
        orientation = im.getexif().get(ExifTags.Base.Orientation, 1)   # Pillow keeps it
    except (SyntaxError, ValueError, struct.error, EOFError):
        return im, 1
    return ImageOps.exif_transpose(im), orientation


def image_to_input(im: Image.Image, image_size: int = 28, invert: str = "never",
                   channels: int = 1) -> torch.Tensor:
    """A Pillow image as the network's input, exactly as ``load_image`` converts a file;
    except a large JPEG that is opened but not yet loaded, which ``load_image`` decodes at a
    reduced scale (``_draft``) and this function at full size (a fraction of a grey level
    apart on average).

    Returns:
        float32 ``[channels, H, W]`` in [0, 1].
    """
    check_image_settings(image_size, invert, channels)
    pix, grid = _read(im, channels, image_size, _depth_scale(im))             # [h, w, c]
    if pix.size == 0:
        raise ValueError("image_to_input: the image has no pixels")
    return _to_input(pix, image_size, invert, grid)


def check_image_settings(image_size: int, invert: str, channels: int) -> None:
    """ValueError naming a bad ``image_size``, ``invert`` or ``channels``."""
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if invert not in INVERT_MODES:
        raise ValueError(f"invert must be one of {INVERT_MODES}, got {invert!r}")
    if channels not in CHANNELS:
        raise ValueError(f"channels must be 1 (greyscale) or 3 (RGB), got {channels!r}")


def _to_input(pix: np.ndarray, image_size: int, invert: str,
              grid: _Grid | None = None) -> torch.Tensor:
    """``[h, w, c]`` pixels in [0, 1] -> inverted, squared, resized ``[c, H, W]``; pixels
    of a shrunk image (``grid``) as the full-size image gives them (``_shrunk_input``)."""
    if grid is not None:
        return _shrunk_input(pix, image_size, invert, grid)
    channels = pix.shape[-1]
    x = torch.from_numpy(np.ascontiguousarray(pix)).permute(2, 0, 1)         # [c, h, w]
    if invert == "always" or (invert == "auto" and float(x.mean()) > 0.5):
        x = 1.0 - x
    x = pad_square(x).unsqueeze(0)                                            # [1, c, s, s]
    if x.shape[-1] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                          align_corners=False, antialias=True)                # [1, c, H, W]
    return x.reshape(channels, image_size, image_size).clamp_(0.0, 1.0)


def _shrunk_input(pix: np.ndarray, image_size: int, invert: str, grid: _Grid) -> torch.Tensor:
    """``_to_input`` of the full-size image, from its block means ``pix`` ``[h, w, c]``.

    Each shrunk pixel takes the sum of the resize's weights over the full-size pixels it
    averages, at their place in the padded square; the padding takes the median of the
    full image's outermost pixels (``grid.border``), and ``"auto"`` inversion compares the
    full image's mean (the blocks weighted by their areas). Exact but for the variation of
    the image inside a block.
    """
    h, w, c = pix.shape
    x = torch.from_numpy(np.ascontiguousarray(pix))                           # [h, w, c]
    rows = torch.from_numpy(np.diff(grid.ys).astype(np.float32))              # [h]
    cols = torch.from_numpy(np.diff(grid.xs).astype(np.float32))              # [w]
    mean = float(rows @ x.sum(-1) @ cols) / (float(rows.sum() * cols.sum()) * c)
    flip = invert == "always" or (invert == "auto" and mean > 0.5)
    full_h, full_w = int(grid.ys[-1]), int(grid.xs[-1])
    side = max(full_h, full_w)
    wy = _block_weights(grid.ys, (side - full_h) // 2, side, image_size)      # [H, h]
    wx = _block_weights(grid.xs, (side - full_w) // 2, side, image_size)      # [W, w]
    x = _banded(wy, x.reshape(h, w * c))                                      # [H, w * c]
    x = x.reshape(image_size, w, c).transpose(0, 1).reshape(w, image_size * c)
    x = _banded(wx, x).reshape(image_size, image_size, c).permute(2, 1, 0)    # [c, H, W]
    # the weight on the image (1 but for the padding); inverted, (1 - x) gives that less x
    inside = torch.from_numpy(np.outer(wy.sum(1), wx.sum(1))).float()         # [H, W]
    border = torch.from_numpy(grid.border).T                                  # [c, n]
    if flip:
        x, border = inside - x, 1.0 - border
    if full_h != full_w:
        fill = border.median(-1).values                                       # [c]
        x = x + fill[:, None, None] * (1.0 - inside)
    return x.clamp(0.0, 1.0)


def _banded(wt: np.ndarray, x: torch.Tensor) -> torch.Tensor:
    """``wt @ x`` for float64 ``wt`` ``[m, n]`` whose rows are non-zero on one run of
    columns each (a resize's), float32 ``x`` ``[n, k]`` -> ``[m, k]``, one run at a time."""
    nz = wt != 0
    lo = np.where(nz.any(1), nz.argmax(1), 0)
    hi = np.where(nz.any(1), wt.shape[1] - nz[:, ::-1].argmax(1), 0)
    w = torch.from_numpy(wt).float()
    return torch.stack([w[i, lo[i]:hi[i]] @ x[lo[i]:hi[i]] for i in range(len(wt))])


def _resize_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """The weights of ``F.interpolate(mode="bilinear", antialias=True,
    align_corners=False)`` along one axis, as PyTorch computes them: a triangle ``scale``
    input pixels wide each side when shrinking, each output's taps normalised.

    Returns:
        ``lo`` int64 ``[n_out]`` and float64 ``taps`` ``[n_out, k]``: output i is the sum
        over t of ``taps[i, t] * input[lo[i] + t]``.
    """
    scale = n_in / n_out
    support, inv = (scale, 1.0 / scale) if scale >= 1.0 else (1.0, 1.0)
    centre = scale * (np.arange(n_out) + 0.5)                                 # [n_out]
    lo = np.maximum((centre - support + 0.5).astype(np.int64), 0)             # [n_out]
    hi = np.minimum((centre + support + 0.5).astype(np.int64), n_in)          # [n_out]
    j = lo[:, None] + np.arange(int((hi - lo).max()))                         # [n_out, k]
    taps = np.clip(1.0 - np.abs((j - centre[:, None] + 0.5) * inv), 0.0, None)
    taps[j >= hi[:, None]] = 0.0
    return lo, taps / taps.sum(1, keepdims=True)


def _block_weights(edges: np.ndarray, offset: int, side: int, n_out: int) -> np.ndarray:
    """float64 ``[n_out, n]``: the resize's weights (``_resize_taps(side, n_out)``) summed
    over each block, full-size pixels ``edges[k]`` to ``edges[k + 1] - 1``, of an axis
    placed at ``offset`` in the square."""
    lo, taps = _resize_taps(side, n_out)
    total = np.concatenate([np.zeros((n_out, 1)), np.cumsum(taps, axis=1)], axis=1)
    at = np.clip(offset + edges[None, :] - lo[:, None], 0, taps.shape[1])     # [n_out, n + 1]
    total = np.take_along_axis(total, at, axis=1)                             # [n_out, n + 1]
    return total[:, 1:] - total[:, :-1]                                       # [n_out, n]


def pad_square(x: torch.Tensor) -> torch.Tensor:
    """A non-square image centred on a square of its own border colour; nothing is cropped.

    Args:
        x: float ``[..., C, h, w]``, one image or a batch.

    Returns:
        ``[..., C, s, s]`` with ``s = max(h, w)`` (``x`` itself when square). The added pixels
        of each image and channel take the median of that image's outermost pixels in that
        channel: its background (0 around ink on 0, white around a photo on white), so a
        colour image gains no black bars that the content never had.
    """
    h, w = x.shape[-2:]
    if h == w:
        return x
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    border = torch.cat([x[..., 0, :], x[..., -1, :], x[..., :, 0], x[..., :, -1]], -1)
    fill = border.median(-1).values                                   # [..., C]
    out = fill[..., None, None].expand(*x.shape[:-2], side, side).clone()   # [..., C, s, s]
    out[..., top:top + h, left:left + w] = x
    return out


def is_image_name(path: Path) -> bool:
    """Whether the file's suffix is an image format's (``IMAGE_EXTENSIONS``, any case)."""
    return path.name.lower().endswith(IMAGE_EXTENSIONS)


def image_files(folder: str | os.PathLike, recursive: bool = False,
                ignored: list[Path] | None = None,
                hidden: list[Path] | None = None) -> list[Path]:
    """The visible image files of a folder, sorted. Files whose suffix is not an image
    format's are skipped and appended to ``ignored`` if it is given; hidden entries
    (``.names``: ``.DS_Store``, ``.hidden.png``, a ``.git`` folder, which is not searched)
    are skipped and appended to ``hidden`` if it is given, as the training folder's scan
    counts them.

    With ``recursive``, sub-folders are searched too, symbolic links to folders included
    (as the training folder's scan follows them).

    Raises:
        ValueError: the folder does not exist or is not a directory, a folder that cannot be
            listed, a symbolic link back to a folder above it or to nothing (naming them).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"{folder} is not a folder" if folder.exists()
                         else f"folder {folder} does not exist")
    files = _walk_files(folder, recursive, frozenset(), hidden)
    if ignored is not None:
        ignored += sorted((f for f in files if not is_image_name(f)),
                          key=lambda p: p.relative_to(folder).as_posix())
    return sorted((f for f in files if is_image_name(f)),
                  key=lambda p: p.relative_to(folder).as_posix())


def _walk_files(folder: Path, recursive: bool, above: frozenset[str],
                hidden: list[Path] | None = None) -> list[Path]:
    """``image_files``' walk; ``above``: the real paths of the folders ``folder`` is in;
    the hidden entries met are appended to ``hidden`` if it is given."""
    here = os.path.realpath(folder)
    if here in above:
        raise ValueError(f"{folder} links back to {here}, a folder above it; remove the link "
                         f"or point it elsewhere")
    try:
        listed = list(folder.iterdir())
    except OSError as e:
        raise ValueError(f"cannot list folder {folder}: {e}") from e
    if hidden is not None:
        hidden += _hidden_entries(listed)
    files = []
    for p in (p for p in listed if _visible(p)):
        if p.is_dir():
            if recursive:
                files += _walk_files(p, recursive, above | {here}, hidden)
        elif p.exists():              # a pipe or a device too: decoding names it
            files.append(p)
        elif p.is_symlink():                             # would be left out without a word
            raise ValueError(f"{p} is a link to {os.readlink(p)}, which does not exist; "
                             f"remove the link or restore its target")
    return files


def load_support(folder: str | os.PathLike, image_size: int = 28, invert: str = "auto",
                 channels: int = 1, progress: Callable[[int], None] | None = None,
                 ignored: list[Path] | None = None, hidden: list[Path] | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor, list[str], list[Path]]:
    """A support set laid out as one sub-folder of images per class, or, for one-shot
    tasks, as one image per class.

    Classes are the sub-folder names in sorted order, in Unicode NFC (as training names a
    folder's classes); label k is the k-th name. Any number
    of classes (at least 2) and of images per class (at least 1, not necessarily equal). A
    folder that holds only image files and no sub-folder is the one-shot layout: each file
    is a class of one image, named by its file name without the suffix (the ``training``
    folder of one of Lake's Omniglot one-shot runs, ``class01.png`` ... ``class20.png``).
    ``progress``, if given, is called with 1 after each image is decoded. Files whose suffix
    is not an image format's are left out, and appended to ``ignored`` if it is given;
    hidden entries (``.names``) are left out, and appended to ``hidden`` if it is given
    (``image_files``).

    Returns:
        x: float32 ``[S, channels, H, W]``; y: int64 ``[S]`` labels; class names; the files
        in order.

    Raises:
        ValueError: naming the path: missing folder, a file beside class folders, an empty
            class folder, fewer than 2 classes, two files of one name (``a.png`` and
            ``a.jpg``) in the one-shot layout, two class names that differ only in their
            Unicode form (NFC and NFD twins), the same image (equal decoded pixels) in two
            classes (naming both files), a symbolic link to nothing, an unreadable image, or
            one that decodes blank (``blank_problem``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"support folder {folder} does not exist" if not folder.exists()
                         else f"support {folder} is not a folder")
    try:
        # in the order of the names in NFC: the labels do not depend on the disk's form
        listed = list(folder.iterdir())
    except OSError as e:
        raise ValueError(f"cannot list support folder {folder}: {e}") from e
    entries = sorted((p for p in listed if _visible(p)),
                     key=lambda p: (unicodedata.normalize("NFC", p.name), p.name))
    if hidden is not None:
        hidden += _hidden_entries(listed)
    lost = next((p for p in entries if p.is_symlink() and not p.exists()), None)
    if lost is not None:                # a class folder's link: not a file to leave out
        raise ValueError(f"{lost} is a link to {os.readlink(lost)}, which does not exist; "
                         f"remove the link or restore its target")
    classes = [p for p in entries if p.is_dir()]
    other = [p for p in entries if not p.is_dir() and not is_image_name(p)]
    if ignored is not None:
        ignored += other
    stray = [p for p in entries if not p.is_dir() and is_image_name(p)]
    if stray and not classes:                     # one image per class: the one-shot layout
        return _one_image_per_class(folder, stray, image_size, invert, channels, progress)
    if stray:
        raise ValueError(f"support folder {folder} must hold one sub-folder per class (or, "
                         f"one-shot, only images, one per class), but {stray[0]} is a file "
                         f"beside the class folders; move each image into its class's folder")
    if len(classes) < 2:
        raise ValueError(f"support folder {folder} has {len(classes)} class folder(s); "
                         f"few-shot classification needs at least 2")
    names = _class_names(folder, [c.name for c in classes], "class folders")
    xs, ys, files, digests = [], [], [], []
    for label, cdir in enumerate(classes):
        skipped: list[Path] = []
        cfiles = image_files(cdir, recursive=True, ignored=skipped, hidden=hidden)
        if ignored is not None:
            ignored += skipped
        if not cfiles:
            raise ValueError(f"class folder {cdir} holds no images" + _named(skipped))
        for f in cfiles:
            x, digest = _load_hashed(f, image_size, invert, channels, progress)
            xs.append(x)
            ys.append(label)
            files.append(f)
            digests.append(digest)
    _check_one_class_each(folder, files, ys, names, digests)
    return (torch.stack(xs), torch.tensor(ys, dtype=torch.int64),       # [S, c, H, W], [S]
            names, files)


def _class_names(folder: Path, names: list[str], what: str) -> list[str]:
    """The support classes' names in Unicode NFC, as training names a folder's classes (a
    macOS folder ``cafe\\u0301`` is the class ``caf\\xe9``).

    Raises:
        ValueError: two ``names`` that differ only in their Unicode form (NFC and NFD
            twins), which would be two classes printed alike.
    """
    from metaloop.tasks.splits import check_one_spelling, nfc

    check_one_spelling(f"support folder {folder}: the {what}", names)
    return [nfc(n) for n in names]


def _pixel_digest(pix: np.ndarray, grid: _Grid | None) -> bytes:
    """``DIGEST_BYTES`` of blake2b over a decoded image before it is padded and resized:
    its shape and float32 pixels ``[h, w, c]`` (upright, in the channels read; for an image
    at least 16 times the output side, the whole-factor shrink's pixels and where they lie).
    Equal digests: equal network inputs, whatever the files' formats and metadata."""
    h = hashlib.blake2b(f"{pix.shape} {pix.dtype}".encode(), digest_size=DIGEST_BYTES)
    h.update(np.ascontiguousarray(pix).tobytes())
    if grid is not None:
        for a in (grid.ys, grid.xs, grid.border):
            h.update(np.ascontiguousarray(a).tobytes())
    return h.digest()


BLANK_WORDS = "decodes to a blank image"
"""What the message of an image refused by ``blank_problem`` says (``metaloop.data.folder``
counts them by it)."""
BLANK_ADVICE = ("flatten such images onto a dark background first (Pillow: "
                "Image.alpha_composite(Image.new('RGBA', im.size, (0, 0, 0, 255)), "
                "im.convert('RGBA')).convert('RGB'); ImageMagick: mogrify -background black "
                "-flatten FILES), then read them with invert=\"never\"")
"""What to do about images that ``blank_problem`` refuses: metaloop has no setting of the
background that transparency is composited on (white)."""


def _uniform(pix: np.ndarray) -> bool:
    """Whether every pixel of ``[h, w, c]`` is the same (all its channels)."""
    flat = pix.reshape(-1, pix.shape[-1])                                     # [h * w, c]
    return bool((flat == flat[:1]).all())


def _has_transparency(path: Path) -> bool:
    """Whether the image file has a transparent colour, or an alpha channel that is not
    opaque everywhere (False where it cannot be read again)."""
    try:
        with _open_image(path) as im:
            if "transparency" in im.info:
                return True
            if "A" not in im.getbands():
                return False
            im.seek(0)
            return im.getchannel("A").getextrema()[0] < 255
    except Exception:                                     # it decoded once: say nothing more
        return False


def _level(pix: np.ndarray) -> str:
    """The one value of a uniform ``[h, w, c]`` image in words: ``255 (white)``,
    ``(12, 200, 7)``."""
    v = [int(round(float(x) * 255)) for x in pix.reshape(-1, pix.shape[-1])[0]]
    words = {0: " (black)", 255: " (white)"}
    return (f"{v[0]}{words.get(v[0], '')}" if len(set(v)) == 1
            else f"({', '.join(map(str, v))})")


def blank_problem(path: Path, pix: np.ndarray) -> str | None:
    """Why an image file that decodes to a single value (every pixel the same, ``pix``
    ``[h, w, c]`` as ``_read_file`` gives it) and has transparency is refused, naming it;
    None for any other image. Such a drawing (white, or one light colour, on a
    transparent background, as icons are saved) is read composited on white and nothing of
    it is left: two of them are the same image, in two classes or one. A plain picture of
    one value without transparency is read as it is (a copy of another is one)."""
    if not _uniform(pix) or not _has_transparency(path):
        return None
    return (f"{path} {BLANK_WORDS} (every pixel {_level(pix)}): it is drawn in white or one "
            f"light colour on a transparent background, and transparency is read "
            f"composited on white, which leaves nothing of the drawing")


def _load_hashed(path: Path, image_size: int, invert: str, channels: int,
                 progress: Callable[[int], None] | None) -> tuple[torch.Tensor, bytes]:
    """``load_image`` and the image's hash as decoded (the training folder's
    ``_pixel_digest``: equal for equal pixels, whatever the files' names and formats), then
    ``progress(1)``.

    Raises:
        ValueError: as ``load_image``; an image that decodes blank (``blank_problem``)."""
    check_image_settings(image_size, invert, channels)
    pix, grid = _read_file(path, image_size, channels)                       # [h, w, c]
    blank = blank_problem(path, pix)
    if blank is not None:
        raise ValueError(f"{blank}; {BLANK_ADVICE}")
    digest = _pixel_digest(pix, grid)             # first: the input may be a view of pix
    x = _to_input(pix, image_size, invert, grid)                              # [c, H, W]
    if progress is not None:
        progress(1)
    return x, digest


def _check_one_class_each(folder: Path, files: list[Path], labels: list[int],
                          names: list[str], digests: list[bytes]) -> None:
    """Refuse the same image (equal decoded pixels) in two support classes, as training
    refuses it in two class folders: every query it resembles would go to the first.

    Raises:
        ValueError: naming both files (relative to ``folder``) and their classes, and how
            many more such pairs there are.
    """
    first: dict[bytes, int] = {}
    clashes = []
    for i, d in enumerate(digests):
        j = first.setdefault(d, i)
        if labels[j] != labels[i]:
            clashes.append((j, i))
    if clashes:
        j, i = clashes[0]
        more = f" (and {len(clashes) - 1} more such pair(s))" if len(clashes) > 1 else ""
        a, b = (files[k].relative_to(folder).as_posix() for k in (j, i))
        raise ValueError(f"support folder {folder}: {a} (class {names[labels[j]]!r}) and {b} "
                         f"(class {names[labels[i]]!r}) are the same image{more}; an image "
                         f"belongs to one class: remove it from the class it does not belong "
                         f"to")


def _load_counted(path: Path, image_size: int, invert: str, channels: int,
                  progress: Callable[[int], None] | None) -> torch.Tensor:
    """``load_image``, then ``progress(1)``."""
    x = load_image(path, image_size, invert, channels)
    if progress is not None:
        progress(1)
    return x


def _one_image_per_class(folder: Path, files: list[Path], image_size: int, invert: str,
                         channels: int, progress: Callable[[int], None] | None = None):
    """``load_support``'s one-shot layout: each file of ``folder`` is a class (its stem)."""
    if len(files) < 2:
        raise ValueError(f"support folder {folder} has {len(files)} image(s) and no class "
                         f"folder; few-shot classification needs at least 2 classes")
    names = [f.stem for f in files]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        same = ", ".join(f.name for f in files if f.stem == twice[0])
        raise ValueError(f"support folder {folder} holds one image per class, but class "
                         f"{twice[0]!r} has several files ({same}); put a class's images in "
                         f"a sub-folder of its name")
    names = _class_names(folder, names, "images (one per class, named by their files)")
    loaded = [_load_hashed(f, image_size, invert, channels, progress) for f in files]
    _check_one_class_each(folder, list(files), list(range(len(files))), names,
                          [d for _, d in loaded])
    return (torch.stack([x for x, _ in loaded]),                             # [S, c, H, W]
            torch.arange(len(files), dtype=torch.int64), names, list(files))


def load_query(folder: str | os.PathLike, image_size: int = 28, invert: str = "auto",
               channels: int = 1, progress: Callable[[int], None] | None = None,
               ignored: list[Path] | None = None, hidden: list[Path] | None = None,
               ) -> tuple[torch.Tensor, list[str]]:
    """Every image under ``folder`` (sub-folders included), in sorted path order;
    ``progress``, if given, is called with 1 after each image is decoded. Files whose suffix
    is not an image format's are left out, and appended to ``ignored`` if it is given;
    hidden entries (``.names``) are left out, and appended to ``hidden`` if it is given
    (``image_files``).

    Returns:
        x: float32 ``[Q, channels, H, W]``; names: each file's path relative to ``folder`` (posix).

    Raises:
        ValueError: naming the path: missing folder, no images, or unreadable images (every
            one read first; up to 10 named, then how many more).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"query folder {folder} does not exist" if not folder.exists()
                         else f"query {folder} is not a folder")
    skipped: list[Path] = []
    files = image_files(folder, recursive=True, ignored=skipped, hidden=hidden)
    if ignored is not None:
        ignored += skipped
    if not files:
        raise ValueError(f"query folder {folder} holds no images" + _named(skipped))
    check_image_settings(image_size, invert, channels)      # once, not once per file
    loaded, bad = [], []
    for f in files:              # every file read: the unreadable ones named together
        try:
            loaded.append(_load_counted(f, image_size, invert, channels, progress))
        except ValueError as e:
            bad.append(str(e))
    if bad:
        raise ValueError(_unreadable_queries(folder, bad, len(files)))
    return torch.stack(loaded), [f.relative_to(folder).as_posix() for f in files]  # [Q, c, H, W]


def _unreadable_queries(folder, errors: list[str], total: int, shown: int = 10) -> str:
    """The message naming the query images of ``folder`` that cannot be read (``errors``:
    one ``load_image`` message each, of ``total`` images): the first ``shown``, then how
    many more."""
    more = f"\n  ... and {len(errors) - shown} more" if len(errors) > shown else ""
    return (f"{len(errors)} of the {total} query images in {folder} cannot be read (fix or "
            f"remove them; nothing was classified):\n  "
            + "\n  ".join(errors[:shown]) + more)


def _named(skipped: list[Path]) -> str:
    """What an empty folder's message adds about the files it left out."""
    if not skipped:
        return ""
    return (f" ({len(skipped)} other file(s) left out, e.g. {skipped[0].name}: an image's "
            f"name ends in one of {', '.join(IMAGE_EXTENSIONS)})")
