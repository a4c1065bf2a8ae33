"""mean_ci lets non-finite values through, as its docstring says and evaluate relies on."""

from __future__ import annotations

import math

from metaloop import mean_ci
from metaloop.recipes.report import _finite


def test_a_nan_or_an_infinity_passes_through_the_mean_and_the_interval():
    m, ci = mean_ci([1.0, float("nan")])
    assert math.isnan(m) and math.isnan(ci)
    m, ci = mean_ci([1.0, float("inf")])
    assert m == float("inf") and math.isnan(ci)


def test_the_results_writer_turns_them_into_json_null():
    assert _finite({"mean": [mean_ci([1.0, float("nan")])[0]]}) == {"mean": [None]}
