"""PNG pictures: sample grids, reconstructions, interpolations, class rows, the latent sweep.

Figures are drawn on matplotlib's Agg canvas directly (no pyplot, no global backend state).
Grey images (one channel, 1 = ink) are drawn dark on white and saved as 8-bit grey PNGs;
colour images (three channels, RGB in [0, 1]) are drawn as they are and saved as RGB PNGs.
Text of your own (class names, a data folder's name) is written as it is (``figure_text``).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from metaloop.train.checkpoint import WriteError

# matplotlib's font of last resort, which draws every character as an empty box
_BOXES = "Last Resort"


@functools.cache
def _font_chars(path: str) -> frozenset[int]:
    """The code points the font file ``path`` has glyphs for (none for an unreadable one)."""
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


@functools.cache
def _installed_fonts() -> tuple[tuple[str, str], ...]:
    """(family, file) of the fonts matplotlib knows, in name order, but the boxes font."""
    from matplotlib import font_manager

    return tuple(sorted({(f.name, f.fname) for f in font_manager.fontManager.ttflist
                         if not f.name.startswith(_BOXES)}))


def figure_text(texts: Sequence[str]) -> tuple[list[str], list[str]]:
    """``texts`` of your own (class names, a data folder's name) as a figure writes them,
    and the font families to write them in.

    - A ``$`` is a dollar sign, not the start of matplotlib's mathtext: a class folder
      named ``$5 and $10`` lost its dollars to italics, and one named ``a $x^$`` stopped
      the run at its first picture, after training.
    - A character the default font lacks (a class folder named in Japanese, say) is drawn
      from an installed font that has it; one that no installed font has is written as its
      code point (``\\u65e5``), not as an empty box with a warning.

    Returns:
        The texts to draw, and the ``fontfamily`` list to draw them with.
    """
    from matplotlib import font_manager, rcParams

    texts = [str(t) for t in texts]
    default = _font_chars(font_manager.findfont(font_manager.FontProperties()))
    missing = {c for t in texts for c in t if ord(c) not in default and not c.isspace()}
    families, found = list(rcParams["font.family"]), set[str]()
    for name, path in _installed_fonts() if missing else ():
        have = {c for c in missing - found if ord(c) in _font_chars(path)}
        if have:
            families.append(name)
            found |= have
        if found == missing:
            break

    def written(t: str) -> str:
        t = "".join(c.encode("unicode_escape").decode() if c in missing and c not in found
                    else c for c in t)
        return t.replace("$", r"\$")

    return [written(t) for t in texts], families


def tile(images: torch.Tensor, ncol: int | None = None, pad: int = 1) -> np.ndarray:
    """Tile images into one array, row-major, ``pad`` pixels of white between them.

    Args:
        images: ``[N, C, H, W]`` (a flat list, ``ncol`` per row) or ``[R, K, C, H, W]`` (R rows
            of K) with values in [0, 1]; C = 1 (grey, 1 = ink) or 3 (RGB).
        ncol: images per row for the flat form (default: about sqrt(N)).
        pad: gap in pixels.

    Returns:
        float ``[R * (H + pad) - pad, K * (W + pad) - pad]`` array for grey images, 1 = ink
        (shown dark by ``show``), or ``[..., ..., 3]`` RGB for colour images.
    """
    x = images.detach().float().cpu()
    given = list(x.shape)
    if x.dim() == 4:
        n = len(x)
        ncol = ncol or max(1, int(np.ceil(np.sqrt(n))))
        nrow = -(-n // ncol)
        blank = float(x.shape[1] == 3)                    # empty cells: white, as the gaps
        x = torch.cat([x, torch.full((nrow * ncol - n, *x.shape[1:]), blank)]).reshape(
            nrow, ncol, *x.shape[1:])
    if x.dim() != 5 or x.shape[2] not in (1, 3):
        raise ValueError(f"tile expects [N, C, H, W] or [R, K, C, H, W] with C = 1 or 3, got "
                         f"{given}")
    r, k, c, h, w = x.shape
    # white gaps: 0 for grey (no ink), 1 for colour
    out = np.full((r * (h + pad) - pad, k * (w + pad) - pad, c), float(c == 3),
                  dtype=np.float32)
    for i in range(r):
        for j in range(k):
            out[i * (h + pad):i * (h + pad) + h, j * (w + pad):j * (w + pad) + w] = \
                x[i, j].permute(1, 2, 0).numpy()
    return out[..., 0] if c == 1 else out


def show(ax, arr: np.ndarray) -> None:
    """Draw ``tile``'s array on ``ax``: grey ink dark on white, colour as it is."""
    if arr.ndim == 2:
        ax.imshow(arr, cmap="Greys", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(np.clip(arr, 0.0, 1.0), interpolation="nearest")


def _save(fig: Figure, path: str | os.PathLike, colour: bool = False) -> None:
    """Render with Agg and write an 8-bit PNG: grey for grey pictures, about a quarter of
    the size of matplotlib's RGBA output, or RGB (``colour``). The PNG is written to a
    temporary file beside ``path`` and renamed over it: a write stopped halfway leaves
    ``path`` as it was, never a truncated picture.

    Raises:
        metaloop.train.checkpoint.WriteError: ``path`` could not be written (a full disk, a
            folder made read-only), naming it and why; ``path`` is as it was.
    """
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    image = Image.frombuffer("RGBA", canvas.get_width_height(), canvas.buffer_rgba()).convert(
        "RGB" if colour else "L")
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    try:
        image.save(tmp, format="PNG", optimize=True)
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise WriteError(f"cannot write {path}: {e.strerror or e}") from e
        raise


def save_grid(images: torch.Tensor, path: str | os.PathLike, *, title: str | None = None,
              ncol: int | None = None, row_labels: Sequence[str] | None = None,
              scale: float = 0.45) -> None:
    """Save a grid of images (see ``tile`` for the shapes) as a PNG, grey ink dark on white
    or colour as it is.

    Args:
        images: ``[N, C, H, W]`` or ``[R, K, C, H, W]`` in [0, 1], C = 1 or 3.
        path: output file.
        title: optional title.
        ncol: images per row for the flat form.
        row_labels: optional label per row (written to the left).
        scale: inches per 28 pixels.
    """
    arr = tile(images, ncol)
    h, w = arr.shape[:2]
    left = 1.2 if row_labels else 0.1
    top = 0.2 + 0.18 * (title.count("\n") + 1) if title else 0.1
    fig = Figure(figsize=(max(w / 28 * scale, 3.6) + left + 0.1, h / 28 * scale + top + 0.05),
                 dpi=100)
    ax = fig.add_axes((left / fig.get_figwidth(), 0.05 / fig.get_figheight(),
                       1 - (left + 0.1) / fig.get_figwidth(),
                       1 - (top + 0.05) / fig.get_figheight()))
    show(ax, arr)
    ax.set_xticks([])
    ax.set_yticks([])
    texts, family = figure_text([*(row_labels or ()), title or ""])
    if row_labels:
        hh = images.shape[-2] + 1
        ax.set_yticks([i * hh + hh / 2 - 1 for i in range(len(row_labels))], texts[:-1],
                      fontsize=8, fontfamily=family)
        ax.tick_params(length=0)
    if title:
        ax.set_title(texts[-1], fontsize=9, fontfamily=family)
    _save(fig, path, colour=arr.ndim == 3)


def save_sweep(panels: dict[int, dict[str, torch.Tensor]], scores: dict[int, dict[str, dict]],
               path: str | os.PathLike, *, ncol: int = 8, score_key: str = "recognisable",
               score_label: str = "recognisable", dpi: int = 80) -> None:
    """The lecture's picture: one row per latent size, one column per generator.

    Args:
        panels: ``{latent: {column name: [N, C, H, W] samples}}``, the same columns per row.
        scores: ``{latent: {column name: quality dict}}``; ``score_key`` of each is printed
            under its panel.
        path: output PNG.
        ncol: images per panel row.
        score_key: which quality number to print.
        score_label: how to name it.
        dpi: resolution.
    """
    latents = sorted(panels)
    cols = list(panels[latents[0]])
    rows = -(-len(panels[latents[0]][cols[0]]) // ncol)
    fig = Figure(figsize=(3.0 * len(cols) + 0.6, (3.0 * rows / ncol + 0.55) * len(latents) + 0.3),
                 dpi=dpi)
    for i, latent in enumerate(latents):
        for j, col in enumerate(cols):
            ax = fig.add_subplot(len(latents), len(cols), i * len(cols) + j + 1)
            show(ax, tile(panels[latent][col], ncol))
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(col, fontsize=10)
            if j == 0:
                ax.set_ylabel(f"latent {latent}", fontsize=10)
            s = scores.get(latent, {}).get(col)
            if s is not None:
                ax.set_xlabel(f"{score_label} {100 * s[score_key]:.0f}%   "
                              f"FD {s['frechet']:.0f}", fontsize=8)
    fig.tight_layout()
    _save(fig, path, colour=panels[latents[0]][cols[0]].shape[-3] == 3)
