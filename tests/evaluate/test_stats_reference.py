"""Every reported 95% CI against scipy.stats: Student's t interval of the mean (sd with
n - 1), and the paired interval of two records' task-by-task differences."""

import numpy as np
import pytest

from metaloop.evaluate import records
from metaloop.evaluate.heldout import mean_ci
from metaloop.evaluate.stats import ci95

stats = pytest.importorskip("scipy.stats")


def _scipy_half_width(values) -> float:
    """Half the width of scipy's two-sided 95% t interval of the mean."""
    v = np.asarray(values, dtype=np.float64)
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    return (hi - lo) / 2


@pytest.mark.parametrize("n", [2, 3, 5, 20, 31, 199, 200, 201, 600])
def test_mean_ci_is_scipys_t_interval(n):
    v = np.random.default_rng(n).normal(0.6, 0.2, n).tolist()
    mean, half = mean_ci(v)
    assert mean == pytest.approx(float(np.mean(v)), rel=1e-12)
    assert half == pytest.approx(_scipy_half_width(v), rel=1e-9)
    assert ci95(v) == half


def test_paired_ci_is_the_t_interval_of_the_differences_not_of_each_record():
    rng = np.random.default_rng(0)
    task = rng.normal(0.5, 0.2, 40)              # shared task difficulty: pairing removes it
    a, b = task + rng.normal(0.05, 0.01, 40), task + rng.normal(0.0, 0.01, 40)
    rec = {"n": 40, "split": "test", "seed": 7}
    d = records.paired_difference({**rec, "per_task": a.tolist()},
                                  {**rec, "per_task": b.tolist()})
    assert d["n"] == 40
    assert d["mean"] == pytest.approx(float(np.mean(a - b)), rel=1e-12)
    # (scipy 1.10's t quantile differs from later versions' by ~4e-9 relative)
    assert d["ci95"] == pytest.approx(_scipy_half_width(a - b), rel=1e-8)
    # the unpaired interval is many times wider here: the pairing is what the CI measures
    assert d["ci95"] < _scipy_half_width(a) / 5
