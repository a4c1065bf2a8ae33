"""Held-out evaluation with 95% confidence intervals; results tables."""

from metaloop.evaluate.heldout import evaluate, format_mean_ci, heldout_tasks, mean_ci

__all__ = ["evaluate", "format_mean_ci", "heldout_tasks", "mean_ci"]

from metaloop._callable import make_callable  # noqa: E402

make_callable(__name__, evaluate)
