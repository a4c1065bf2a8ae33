"""Shared CLI output: tables, results.json, plots, the output directory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from metaloop.train.checkpoint import atomic_write_text  # noqa: E402


def prepare_out(path) -> Path:
    """Create the output directory, or fail before any work if it is not writable."""
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"cannot create output directory {out}: {e.strerror}") from e
    if not os.access(out, os.W_OK):
        raise ValueError(f"output directory {out} is not writable")
    return out


def write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def strip_per_task(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "per_task"}


def table(results: dict[str, dict], metric: str) -> str:
    """Methods x steps table of ``mean ± ci95`` for ``metric`` ("loss" or "accuracy")."""
    steps = next(iter(results.values()))["steps"]
    pct = metric == "accuracy"
    head = ["method"] + [f"{s} step{'s' if s != 1 else ''}" for s in steps]
    rows = [head]
    for name, r in results.items():
        cells = [name]
        for m, c in zip(r[metric]["mean"], r[metric]["ci95"]):
            cells.append(f"{100 * m:.2f} ± {100 * c:.2f}" if pct else f"{m:.3f} ± {c:.3f}")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def plot_curves(results: dict[str, dict], metric: str, path: Path, title: str) -> None:
    """``metric`` against adaptation steps per method, with 95% CI bands (MAML Fig. 2)."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, r in results.items():
        m, c = r[metric]["mean"], r[metric]["ci95"]
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
    fig.savefig(path, dpi=110)
    plt.close(fig)
