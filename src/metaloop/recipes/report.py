"""Reports shared by the recipes: results tables, curves with 95% CI bands, JSON files.

Plots are drawn on matplotlib's Agg canvas directly (no pyplot, no global backend state), so
importing metaloop does not load pyplot.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Collection
from contextlib import contextmanager
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from metaloop import runlock, runs_folder
from metaloop.evaluate.heldout import format_mean_ci, model_dtype
from metaloop.train.checkpoint import atomic_write_text, save_figure

__all__ = ["aligned", "output_dir", "plot_curves", "plot_fits", "prepare_out", "save_figure",
           "strip_per_task", "table", "write_json"]


def prepare_out(path) -> Path:
    """Create the output directory, or fail before any work if it is not writable.

    Raises:
        ValueError: naming the directory and why it cannot be used.
    """
    out = Path(path)
    runlock.check_links(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create output directory {out}: {e.strerror}") from e
    if not os.access(out, os.W_OK):
        raise ValueError(f"output directory {out} is not writable")
    return out


@contextmanager
def output_dir(path, *, command: str | None = None):
    """``prepare_out(path)`` for the body of a ``with`` (None: no folder, yields None),
    holding the folder's lock (``metaloop.runlock``) until the body ends: another process
    writing there is refused (``RunInUseError``) before anything is read or written.

    Args:
        path: the output folder (made with its parents if missing). A symbolic link to no
            folder in it is named (``runlock.check_links``) before anything is made.
        command: the metaloop command whose run goes there (``"compare"``, ``"eval"``...):
            a folder that holds another command's run (``metaloop.runs_folder.check``) is
            refused, under the lock, before anything is written. None: not checked (the
            caller checks it).

    If the body fails, the folders this call created are removed again while still empty,
    so bad input found after the folder was made (data errors) leaves nothing behind; a
    folder that already existed, or one that holds results, is never removed."""
    if path is None:
        yield None
        return
    with runlock.hold(path):            # (on failure: the folders it made, left empty)
        if command is not None:
            runs_folder.check(path, command)
        yield prepare_out(path)


def write_json(path: Path, obj) -> None:
    """Write ``obj`` as indented, key-sorted JSON, atomically (a crash leaves no partial
    file). JSON has no NaN or infinity: a non-finite float is written as ``null``, so every
    JSON reader can read the file (``json.dumps`` would write the non-standard ``NaN``)."""
    atomic_write_text(path, json.dumps(_finite(obj), indent=1, sort_keys=True,
                                       allow_nan=False) + "\n")


def _finite(obj):
    """``obj`` with every non-finite float (NaN, +-inf) replaced by ``None``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def strip_per_task(result: dict) -> dict:
    """An ``evaluate`` result without its per-task values."""
    return {k: v for k, v in result.items() if k != "per_task"}


def table(results: dict[str, dict], metric: str, trials: int | None = None) -> str:
    """Methods x steps table of ``mean ± ci95`` for ``metric`` ("loss" or "accuracy").

    An accuracy whose ``mean ± ci95`` would leave [0, 100]% (or, with ``trials`` — each
    task's queries, ``metaloop.evaluate.records.queries_per_task`` — every task at 0 or
    100%) is shown with the interval its record would carry, ``"99.00 (96.05 to 99.91)"``
    (``metaloop.evaluate.records.ci95_fields``), where the result keeps its per-task values.
    Every task at 0 or 100% without ``trials`` (or without per-task values) has no interval
    to show: ``"100.00 ± n/a"``, never the t interval's ``± 0.00``."""
    from metaloop.evaluate.records import at_an_end, ci95_fields

    steps = next(iter(results.values()))["steps"]
    pct = metric == "accuracy"
    head = ["method"] + [f"{s} step{'s' if s != 1 else ''}" for s in steps]
    rows = [head]
    for name, r in results.items():
        cells = [name]
        per_task = r.get("per_task", {}).get(metric) if pct else None
        for k, (m, c) in enumerate(zip(r[metric]["mean"], r[metric]["ci95"])):
            values = [100 * v for v in per_task[k]] if per_task else None
            ends = ci95_fields(values, trials=None if trials is None else
                               trials * len(values)) if values else {}
            if ends:
                cells.append(f"{100 * m:.2f} ({ends['ci95_low']:.2f} to "
                             f"{ends['ci95_high']:.2f})")
            elif pct and c == 0 and (at_an_end(values) if values else 100 * m in (0, 100)):
                cells.append(format_mean_ci(m, None, ".2f", 100))   # ± 0 is no interval
            else:
                cells.append(format_mean_ci(m, c, ".2f", 100) if pct else
                             format_mean_ci(m, c, ".3f"))
        rows.append(cells)
    return aligned(rows)


def aligned(rows: list[list[str]], right: Collection[int] = ()) -> str:
    """Rows of cells (the first the header) as text columns two spaces apart, each as wide
    as its widest cell, with a rule of dashes under the header; the columns ``right`` are
    right-aligned, the others left-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.rjust(w) if i in right else c.ljust(w)
                       for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def figure(figsize: tuple[float, float]) -> Figure:
    """A figure on its own Agg canvas (no pyplot: nothing global to close)."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def plot_curves(results: dict[str, dict], metric: str, path: Path, title: str) -> None:
    """``metric`` against adaptation steps per method, with 95% CI bands (MAML Fig. 2),
    written by ``save_figure``."""
    ax = (fig := figure((6, 4))).subplots()
    for name, r in results.items():
        m = r[metric]["mean"]
        c = [0.0 if x is None else x for x in r[metric]["ci95"]]     # one task: no band
        ax.plot(r["steps"], m, marker="o", label=name)
        ax.fill_between(r["steps"], [a - b for a, b in zip(m, c)], [a + b for a, b in zip(m, c)],
                        alpha=0.2)
    ax.set_xlabel("adaptation steps")
    ax.set_ylabel({"loss": "query loss (MSE)" if "MSE" in title else "query loss"}.get(
        metric, "query accuracy"))
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path, 110)


def plot_fits(learners: dict, family, seed: int, path, steps=(0, 1, 10)) -> None:
    """One panel per method: true curve, support points, predictions after ``steps``,
    written by ``save_figure``."""
    batch, amp, phase = family.sample_with_params(1, torch.Generator().manual_seed(seed))
    sx, sy = batch.support_x[0], batch.support_y[0]
    xs = torch.linspace(-5, 5, 200).unsqueeze(1)                          # [200, 1]
    fig = figure((3.2 * len(learners), 3))
    axes = fig.subplots(1, len(learners), sharey=True, squeeze=False)
    for ax, (name, learner) in zip(axes[0], learners.items()):
        ax.plot(xs, family.curve(float(amp[0]), float(phase[0]), xs), "k", lw=2, label="truth")
        dtype = model_dtype(learner.model) or xs.dtype           # a float64 run's own dtype
        path_ = list(learner.adapt_path(sx.to(dtype), sy.to(dtype), max(steps)))
        for s in steps:
            with torch.no_grad():
                ys = learner.predict(path_[min(s, len(path_) - 1)], xs.to(dtype)).float()
            ax.plot(xs, ys, "--", label=f"{s} step{'s' if s != 1 else ''}")
        ax.scatter(sx, sy, c="red", zorder=3, label="support")
        ax.set_title(name)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    save_figure(fig, path, 100)
