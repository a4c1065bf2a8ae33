"""Reading a user's own image folders for few-shot prediction (``metaloop predict``).

Preprocessing reproduces what the image families feed the network at training time:

1. decode with Pillow (any format it reads), apply the EXIF orientation, and convert to
   greyscale ``L`` (a transparent background counts as white); an image more than 16 times
   the output side is first shrunk by a whole factor (box filter) to no less than 8 times it;
2. scale to [0, 1] and fix the polarity: the families store **ink = 1 on a background of 0**
   (light strokes on black; Omniglot's PNGs are stored inverted, black ink on white, and are
   flipped when loaded). An image whose mean is above 0.5 is mostly light, so it is taken as
   dark ink on a light background and inverted (``invert="auto"``). Scans and drawings on
   paper are inverted this way; images already light-on-dark are kept;
3. pad a non-square image to a square, centred, with its own border colour (each channel's
   median over the outermost pixels: the background, black for ink on 0 and white for a
   photo on white), so the aspect ratio is kept and nothing is cropped (``pad_square``);
4. resize to the model's side with the same antialiased bilinear kernel the Omniglot loader
   uses (``F.interpolate(mode="bilinear", antialias=True)``).

Every function raises ``ValueError`` naming the offending path.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

INVERT_MODES = ("auto", "always", "never")
# What counts as an image, by its suffix (any case), here and in the training folder's scan;
# other files (README.txt, Thumbs.db, desktop.ini) are left out and counted.
# JPEG's .jfif and .jpe (as browsers save downloads) and PNM's .pnm are Pillow's too.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".jfif", ".jpe", ".bmp", ".gif", ".webp", ".tif",
                    ".tiff", ".ppm", ".pgm", ".pbm", ".pnm")


def _visible(path: Path) -> bool:
    return not path.name.startswith(".")


CHANNELS = (1, 3)
_WIDE_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")   # 16-bit / 32-bit greyscale
# A large image is first shrunk by a whole factor (a box filter; a JPEG while it decodes) to no
# less than this many times the output side: a 24-megapixel photo then takes hundredths of a
# second and a few MB instead of seconds and a GB. Where the factor divides the sides and the
# padding (``_factor``: most photos, 4032 x 3024 or 6000 x 4000), the result differs from
# resizing the full image by under one grey level in 255 on average (a few at most); where
# none does (odd sides: the last blocks are partial), by one to three on average and up to
# about 25 at a sharp edge; more where the padding's colour, the median of a dithered
# border, changes.
_KEEP = 8


def _exact(size: tuple[int, int], factor: int) -> bool:
    """Whether ``factor`` divides both sides of ``size`` (w, h) and the padding to a square
    (``pad_square``), so the shrunk image pads to exactly the full one's geometry."""
    w, h = size
    pads = ((max(w, h) - w) // 2, (max(w, h) - h) // 2)
    return all(v % factor == 0 for v in (w, h, *pads))


def _factor(size: tuple[int, int], image_size: int, factors) -> int:
    """The shrink factor of an image of ``size`` (w, h): of ``factors`` (descending) that keep
    its longer side at least ``_KEEP * image_size``, the largest that is ``_exact``; the
    largest when none is; 1 when none keeps enough."""
    fits = [f for f in factors if 2 <= f <= max(size) // (_KEEP * image_size)]
    exact = [f for f in fits if _exact(size, f)]
    return (exact or fits or [1])[0]


def _shrink_factor(size: tuple[int, int], image_size: int) -> int:
    """``_shrink``'s factor: ``_factor`` from half the largest allowed up."""
    most = max(size) // (_KEEP * image_size)
    return _factor(size, image_size, range(most, most // 2, -1))


def _draft(im: Image.Image, image_size: int) -> None:
    """Let a JPEG decode at 1/2, 1/4 or 1/8 scale; other formats ignore it. Before the image
    is loaded. The scale: the largest ``_exact`` one after which ``_shrink`` is exact too (or
    not needed), else ``_factor``'s; no more than the shorter side (Pillow's draft divides by
    the scaled size)."""
    w, h = im.size
    factors = [f for f in (8, 4, 2) if f <= min(w, h)]

    def stays_exact(f: int) -> bool:
        rest = _shrink_factor((w // f, h // f), image_size)
        return rest < 2 or _exact((w // f, h // f), rest)

    whole = [f for f in factors if f == _factor((w, h), image_size, [f])
             and _exact((w, h), f) and stays_exact(f)]
    factor = whole[0] if whole else _factor((w, h), image_size, factors)
    if factor >= 2:
        im.draft(None, (w // factor, h // factor))


def _shrink(im: Image.Image, image_size: int | None) -> Image.Image:
    """``im`` reduced by a whole factor (box filter, ``_shrink_factor``); ``im`` itself when
    that is 1 or ``image_size`` is None."""
    if image_size is None:
        return im
    factor = _shrink_factor(im.size, image_size)
    return im.reduce(factor) if factor >= 2 else im


def _pixels(im: Image.Image, channels: int, image_size: int | None = None) -> np.ndarray:
    """float32 ``[h, w, channels]`` in [0, 1] from any Pillow mode: transparency is composited
    on white, palettes expanded, 16-bit greyscale scaled by 65535 (by 255 where its values
    fit 8 bits), RGB averaged to grey for ``channels = 1`` (Pillow's ``L`` weights). With
    ``image_size``, a large image is shrunk first (``_shrink``).

    Raises:
        ValueError: a float image with NaN or infinite values.
    """
    if im.mode in _WIDE_MODES:
        if im.mode not in ("I", "F"):
            im = im.convert("I")                           # 16-bit: reduce needs 32-bit
        scale = 1.0 if im.mode == "F" else 65535.0 if im.getextrema()[1] > 255 else 255.0
        a = np.asarray(_shrink(im, image_size), dtype=np.float32) / scale     # [h, w]
        if not np.isfinite(a).all():                       # counted at full size
            bad = int((~np.isfinite(np.asarray(im, dtype=np.float32))).sum())
            raise ValueError(f"{bad} of its pixel values are NaN or infinite (a float "
                             f"image's missing data?); fill them first")
        a = np.clip(a, 0.0, 1.0)[..., None]                                   # [h, w, 1]
        return a if channels == 1 else np.repeat(a, 3, axis=-1)
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:   # P, L, RGB with tRNS
        # shrunk with premultiplied alpha (Pillow's reduce), then composited: as compositing
        # first, without a full-size copy
        rgba = _shrink(im if im.mode == "RGBA" else im.convert("RGBA"), image_size)
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    elif im.mode in ("L", "RGB"):
        im = _shrink(im, image_size)                       # before a full-size conversion
    else:                                                  # P, 1, CMYK, ...: converted first
        im = _shrink(im.convert("L" if channels == 1 else "RGB"), image_size)
    a = np.asarray(im.convert("L" if channels == 1 else "RGB"), dtype=np.float32) / 255.0
    return a.reshape(*a.shape[:2], channels)                                  # [h, w, c]


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
    path = Path(path)
    if path.exists() and not path.is_file():          # opening a pipe would wait for ever
        raise ValueError(f"cannot read image {path}: it is not a regular file (a folder, a "
                         f"pipe, a socket or a device)")
    try:
        with Image.open(path) as im:
            im.seek(0)
            _draft(im, image_size)
            pix = _pixels(_upright(im), channels, image_size)                 # [h, w, c]
    except Image.DecompressionBombError as e:           # not an OSError: would escape
        raise ValueError(f"cannot read image {path}: {e} Shrink it first (or raise "
                         f"PIL.Image.MAX_IMAGE_PIXELS if you trust the file)") from e
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
            struct.error) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    if pix.size == 0:
        raise ValueError(f"cannot read image {path}: it has no pixels")
    return _to_input(pix, image_size, invert)


def _upright(im: Image.Image) -> Image.Image:
    """``im`` turned by its EXIF orientation (``ImageOps.exif_transpose``); as stored when
    its EXIF block cannot be parsed (truncated, or not TIFF data), as Pillow reads a JPEG's
    and a photo viewer shows the pixels: the block is metadata, not the image."""
    im.load()                   # the pixels first: their errors are not the EXIF block's
    try:
        im.getexif()                                   # parsed once; Pillow keeps the result
    except (SyntaxError, ValueError, struct.error, EOFError):
        return im
    return ImageOps.exif_transpose(im)


def image_to_input(im: Image.Image, image_size: int = 28, invert: str = "never",
                   channels: int = 1) -> torch.Tensor:
    """A Pillow image as the network's input, exactly as ``load_image`` converts a file;
    except a large JPEG that is opened but not yet loaded, which ``load_image`` decodes at a
    reduced scale (``_draft``) and this function at full size (about a grey level apart).

    Returns:
        float32 ``[channels, H, W]`` in [0, 1].
    """
    check_image_settings(image_size, invert, channels)
    pix = _pixels(_upright(im), channels, image_size)                         # [h, w, c]
    if pix.size == 0:
        raise ValueError("image_to_input: the image has no pixels")
    return _to_input(pix, image_size, invert)


def check_image_settings(image_size: int, invert: str, channels: int) -> None:
    """ValueError naming a bad ``image_size``, ``invert`` or ``channels``."""
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    if invert not in INVERT_MODES:
        raise ValueError(f"invert must be one of {INVERT_MODES}, got {invert!r}")
    if channels not in CHANNELS:
        raise ValueError(f"channels must be 1 (greyscale) or 3 (RGB), got {channels!r}")


def _to_input(pix: np.ndarray, image_size: int, invert: str) -> torch.Tensor:
    """``[h, w, c]`` pixels in [0, 1] -> inverted, squared, resized ``[c, H, W]``."""
    channels = pix.shape[-1]
    x = torch.from_numpy(np.ascontiguousarray(pix)).permute(2, 0, 1)         # [c, h, w]
    if invert == "always" or (invert == "auto" and float(x.mean()) > 0.5):
        x = 1.0 - x
    x = pad_square(x).unsqueeze(0)                                            # [1, c, s, s]
    if x.shape[-1] != image_size:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear",
                          align_corners=False, antialias=True)                # [1, c, H, W]
    return x.reshape(channels, image_size, image_size).clamp_(0.0, 1.0)


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
                ignored: list[Path] | None = None) -> list[Path]:
    """The visible image files of a folder, sorted (hidden ``.names`` are skipped, and so
    are files whose suffix is not an image format's: they are appended to ``ignored``
    if it is given).

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
    files = _walk_files(folder, recursive, frozenset())
    if ignored is not None:
        ignored += sorted((f for f in files if not is_image_name(f)),
                          key=lambda p: p.relative_to(folder).as_posix())
    return sorted((f for f in files if is_image_name(f)),
                  key=lambda p: p.relative_to(folder).as_posix())


def _walk_files(folder: Path, recursive: bool, above: frozenset[str]) -> list[Path]:
    """``image_files``' walk; ``above``: the real paths of the folders ``folder`` is in."""
    here = os.path.realpath(folder)
    if here in above:
        raise ValueError(f"{folder} links back to {here}, a folder above it; remove the link "
                         f"or point it elsewhere")
    try:
        entries = [p for p in folder.iterdir() if _visible(p)]
    except OSError as e:
        raise ValueError(f"cannot list folder {folder}: {e}") from e
    files = []
    for p in entries:
        if p.is_dir():
            if recursive:
                files += _walk_files(p, recursive, above | {here})
        elif p.exists():              # a pipe or a device too: decoding names it
            files.append(p)
        elif p.is_symlink():                             # would be left out without a word
            raise ValueError(f"{p} is a link to {os.readlink(p)}, which does not exist; "
                             f"remove the link or restore its target")
    return files


def load_support(folder: str | os.PathLike, image_size: int = 28, invert: str = "auto",
                 channels: int = 1, progress: Callable[[int], None] | None = None,
                 ignored: list[Path] | None = None,
                 ) -> tuple[torch.Tensor, torch.Tensor, list[str], list[Path]]:
    """A support set laid out as one sub-folder of images per class, or, for one-shot
    tasks, as one image per class.

    Classes are the sub-folder names in sorted order; label k is the k-th name. Any number
    of classes (at least 2) and of images per class (at least 1, not necessarily equal). A
    folder that holds only image files and no sub-folder is the one-shot layout: each file
    is a class of one image, named by its file name without the suffix (the ``training``
    folder of one of Lake's Omniglot one-shot runs, ``class01.png`` ... ``class20.png``).
    ``progress``, if given, is called with 1 after each image is decoded. Files whose suffix
    is not an image format's are left out, and appended to ``ignored`` if it is given.

    Returns:
        x: float32 ``[S, channels, H, W]``; y: int64 ``[S]`` labels; class names; the files
        in order.

    Raises:
        ValueError: naming the path: missing folder, a file beside class folders, an empty
            class folder, fewer than 2 classes, two files of one name (``a.png`` and
            ``a.jpg``) in the one-shot layout, a symbolic link to nothing, or an unreadable
            image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"support folder {folder} does not exist" if not folder.exists()
                         else f"support {folder} is not a folder")
    try:
        entries = sorted((p for p in folder.iterdir() if _visible(p)), key=lambda p: p.name)
    except OSError as e:
        raise ValueError(f"cannot list support folder {folder}: {e}") from e
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
    xs, ys, files = [], [], []
    for label, cdir in enumerate(classes):
        skipped: list[Path] = []
        cfiles = image_files(cdir, recursive=True, ignored=skipped)
        if ignored is not None:
            ignored += skipped
        if not cfiles:
            raise ValueError(f"class folder {cdir} holds no images" + _named(skipped))
        for f in cfiles:
            xs.append(_load_counted(f, image_size, invert, channels, progress))
            ys.append(label)
            files.append(f)
    return (torch.stack(xs), torch.tensor(ys, dtype=torch.int64),       # [S, c, H, W], [S]
            [c.name for c in classes], files)


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
    xs = [_load_counted(f, image_size, invert, channels, progress) for f in files]
    return (torch.stack(xs), torch.arange(len(files), dtype=torch.int64),   # [S, c, H, W]
            names, list(files))


def load_query(folder: str | os.PathLike, image_size: int = 28, invert: str = "auto",
               channels: int = 1, progress: Callable[[int], None] | None = None,
               ignored: list[Path] | None = None) -> tuple[torch.Tensor, list[str]]:
    """Every image under ``folder`` (sub-folders included), in sorted path order;
    ``progress``, if given, is called with 1 after each image is decoded. Files whose suffix
    is not an image format's are left out, and appended to ``ignored`` if it is given.

    Returns:
        x: float32 ``[Q, channels, H, W]``; names: each file's path relative to ``folder`` (posix).

    Raises:
        ValueError: naming the path: missing folder, no images, or an unreadable image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"query folder {folder} does not exist" if not folder.exists()
                         else f"query {folder} is not a folder")
    skipped: list[Path] = []
    files = image_files(folder, recursive=True, ignored=skipped)
    if ignored is not None:
        ignored += skipped
    if not files:
        raise ValueError(f"query folder {folder} holds no images" + _named(skipped))
    x = torch.stack([_load_counted(f, image_size, invert, channels, progress)
                     for f in files])                                      # [Q, c, H, W]
    return x, [f.relative_to(folder).as_posix() for f in files]


def _named(skipped: list[Path]) -> str:
    """What an empty folder's message adds about the files it left out."""
    if not skipped:
        return ""
    return (f" ({len(skipped)} other file(s) left out, e.g. {skipped[0].name}: an image's "
            f"name ends in one of {', '.join(IMAGE_EXTENSIONS)})")
