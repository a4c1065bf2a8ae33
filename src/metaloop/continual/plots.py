"""Plots of forgetting: accuracy on an old experience against fine-tuning steps, and the
accuracy matrix as heatmaps. Matplotlib's object API only (no pyplot, no backend change)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure

from metaloop.evaluate.heldout import mean_ci
from metaloop.train.checkpoint import save_figure


def mean_curve(curves: Sequence[Sequence[dict]], name: str) -> tuple[list, list, list]:
    """Mean and 95% CI over seeds of experience ``name``'s accuracy at each step.

    Args:
        curves: per seed, the evaluation points ``{"step", "accuracy": {name: acc}}``.
        name: the experience.

    Returns:
        ``(steps, means, ci95)`` over the steps at which any seed measured ``name``, one
        value per seed and step; a step that one seed measured has no CI (None). Where an
        experience ends, the next one's first evaluation is at the same global step; the
        later point counts, as it measures the parameters the stream goes on from (with
        early stopping, the best ones rather than the last).
    """
    at: dict[int, list[float]] = {}
    for curve in curves:
        mine = {point["step"]: point["accuracy"][name] for point in curve
                if name in point["accuracy"]}                  # a later point overwrites
        for step, acc in mine.items():
            at.setdefault(step, []).append(acc)
    steps = sorted(at)
    stats = [mean_ci(at[s]) for s in steps]
    return steps, [m for m, _ in stats], [c for _, c in stats]


def band(means: Sequence[float], ci95: Sequence[float | None]) -> tuple[list, list]:
    """The CI band drawn around a mean curve, in %: ``mean ± ci95`` clipped to [0, 100].

    An accuracy lies in [0, 1], but a Student-t interval over a few seeds near 0 or 1 can
    reach past it (seeds at 0.99 and 0.95: 0.97 ± 0.25); the band shows the possible
    part. A step that one seed measured (``ci95`` None) has no band (zero width).
    """
    c = [0.0 if h is None else h for h in ci95]
    return ([100 * max(0.0, m - h) for m, h in zip(means, c)],
            [100 * min(1.0, m + h) for m, h in zip(means, c)])


def shared_boundaries(runs: Mapping[str, Sequence[dict]]) -> list[int]:
    """The global steps at which experience 2, 3, ... starts in every run (the dotted lines).

    Without early stopping every run has the same ones; with it, a run that stopped early
    starts its next experience sooner, so only the steps all runs share are returned.
    """
    starts = [set(r["boundaries"][1:]) for rs in runs.values() for r in rs]
    return sorted(set.intersection(*starts)) if starts else []


def old_accuracy_curves(runs: Mapping[str, Sequence[dict]], name: str, path: Path,
                        title: str) -> None:
    """Accuracy on experience ``name`` against fine-tuning steps, one line per strategy.

    Args:
        runs: strategy -> per-seed runs, each with ``curve`` and ``boundaries``.
        name: the old experience to follow.
        path: the PNG to write. title: its title.
    """
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.add_subplot()
    for strategy, rs in runs.items():
        steps, m, c = mean_curve([r["curve"] for r in rs], name)
        ax.plot(steps, [100 * v for v in m], label=strategy)
        ax.fill_between(steps, *band(m, c), alpha=0.2)
    for b in shared_boundaries(runs):
        ax.axvline(b, color="grey", lw=0.8, ls=":")
    ax.set_xlabel("fine-tuning steps (dotted: next experience)")
    ax.set_ylabel(f"test accuracy on {name} (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, 100)                 # whole or not at all


def matrix_heatmaps(strategies: Mapping[str, dict], names: Sequence[str], path: Path,
                    title: str) -> None:
    """One heatmap per strategy of the mean accuracy matrix ``R[i, j]`` (row: after training
    on experience i; column: tested on j), annotated in %.

    Args:
        strategies: strategy -> ``{"matrix": {"mean": [T][T]}}``.
        names: experience names, in order. path: the PNG. title: the figure title.
    """
    n, t = len(strategies), len(names)
    cols = min(n, 3)
    rows = -(-n // cols)
    side = 1.2 + 0.45 * t
    fig = Figure(figsize=(cols * side + 1.2, rows * side + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    image = None
    for k, (ax, (strategy, r)) in enumerate(zip(axes.flat, strategies.items())):
        m = r["matrix"]["mean"]
        image = ax.imshow(m, vmin=0, vmax=1, cmap="viridis")
        for i in range(t):
            for j in range(t):
                ax.text(j, i, f"{100 * m[i][j]:.0f}", ha="center", va="center", fontsize=7,
                        color="white" if m[i][j] < 0.6 else "black")
        ax.set_title(strategy, fontsize=9)
        ax.set_xticks(range(t), [str(j) for j in range(t)], fontsize=7)
        ax.set_yticks(range(t), [str(i) for i in range(t)], fontsize=7)
        ax.set_xlabel("tested on experience j", fontsize=7)
        if k % cols == 0:
            ax.set_ylabel("after experience i", fontsize=7)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    fig.suptitle(f"{title}: accuracy matrix R[i, j] (%)", fontsize=10)
    assert image is not None                    # strategies is not empty (cols above)
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8)
    save_figure(fig, path, 100)                 # whole or not at all
