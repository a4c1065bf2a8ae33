"""``stats.bounded_ci95`` and the beta functions under it at the edges: a spread so small
that the effective number of trials reaches 1e14 to 1e22, huge Beta parameters, and
quantiles far below 1e-13. Reference numbers are hard-coded so that the tests run without
scipy: scipy 1.17.1's where it is right, and otherwise 40-digit mpmath values (the
Beta(a, a) upper tail by quadrature; the Clopper-Pearson ends at n ~ 1e14-1e22 from the
Cornish-Fisher expansion of the beta quantile, whose next term there is below 1e-20),
where scipy's own ``beta.ppf`` drifts or returns nan."""

from __future__ import annotations

import math
import random
import struct

import pytest

from metaloop.evaluate import stats

F32_80 = struct.unpack("<f", struct.pack("<f", 12 / 15))[0] * 100   # float32(0.8) * 100

# (values, lower, upper): mpmath, 40 digits (scipy 1.17.1: the first within 1e-12 relative,
# (49.999994146960084, 50.00000685309169); the others nan or off by 1e-10 absolute)
EDGES = [
    ([50.0, 50.000001], 49.999994146897436552, 50.000006853102560923),
    ([50.0, 50.0 + 1e-7], 49.99999941468975425, 50.000000685310246919),
    ([50.0, 50.0 + 1e-10], 49.999999999414679318, 50.000000000685322467),
    ([80.0, 80.0 + 1e-9], 79.999999994146876352, 80.000000006853127282),
    ([99.0, 99.0 + 1e-9], 98.999999994146876333, 99.000000006853127272),
    ([80.0] * 300 + [F32_80] * 300, 80.000000548217239157, 80.000000643875656286),
]


@pytest.mark.parametrize("values,low,high", EDGES)
def test_a_tiny_spread_gives_a_tiny_interval_about_the_mean(values, low, high):
    """The old code returned (49.9999927, 49.9999989) for [50, 50.000001], an interval that
    leaves out the mean, took 4.4 s for [50, 50 + 1e-7] and raised OverflowError for the
    rest."""
    got = stats.bounded_ci95(values)
    assert got is not None
    mean = math.fsum(values) / len(values)
    assert got[0] < mean < got[1]
    assert got == pytest.approx((low, high), rel=1e-8)
    # and to a few units in the last place of the values
    assert got == pytest.approx((low, high), abs=1e-12)


def test_the_scipy_case_within_1e_8():
    got = stats.bounded_ci95([50.0, 50.000001])
    assert got == pytest.approx((49.999994146960084, 50.00000685309169), rel=1e-8)   # scipy


def test_a_tiny_spread_takes_few_continued_fraction_steps():
    """[50, 50 + 1e-7] ran the continued fraction to its 100,000-step cap again and again
    (4.4 s); Temme's expansion needs none."""
    before = stats._cf_steps
    stats.bounded_ci95([50.0, 50.0 + 1e-7])
    assert stats._cf_steps - before < 2000


def test_the_closest_values_and_the_least_spreads_stay_finite():
    for values, low, high in [([50.0, math.nextafter(50.0, 100.0)], 0.0, 100.0),
                              ([0.5, math.nextafter(0.5, 1.0)] * 10, 0.0, 1.0),
                              ([1e-160, 2e-160], 0.0, 1.0),
                              ([1e-300, 3e-300, 0.0], 0.0, 1.0)]:
        lo, hi = stats.bounded_ci95(values, low, high)
        mean = math.fsum(values) / len(values)
        assert low <= lo <= mean <= hi <= high


@pytest.mark.parametrize("a,value,tail", [
    # I_x(a, a) at x = 0.5 + 0.5 / sqrt(a): scipy 1.17.1, and 1 - I by mpmath quadrature
    (1e6, 0.9213504224190758, 0.078649577580924675),
    (1e8, 0.9213503967342649, 0.078649603265723236),
    (1e10, 0.9213503964772971, 0.078649603521188417),
    (1e12, 0.9213503964557465, 0.078649603542191371),
    (1e14, 0.9213503965766123, 0.078649603403958428),
])
def test_betainc_for_huge_equal_parameters(a, value, tail):
    """The old code drifted from scipy by 2e-8 at a = 1e8, 3e-6 at 1e10, 3e-4 at 1e12 and
    5% at 1e14 (lgamma(2a) - 2 lgamma(a) cancelling)."""
    x = 0.5 + 0.5 / math.sqrt(a)
    assert stats.betainc(a, a, x) == pytest.approx(value, rel=1e-8)
    assert 1.0 - stats.betainc(a, a, x) == pytest.approx(tail, rel=1e-13)


@pytest.mark.parametrize("x,n,low,high", [
    # lower ends: scipy 1.17.1's beta.ppf; upper ends: ours, whose CDF mpmath puts at
    # 0.975 within 1e-16 (scipy's 5.571643429e-09 for (1, 1e9) has CDF 0.975 + 1.1e-9)
    (1, 1e6, 2.5317807663794178e-08, 5.571630655172241e-06),
    (1, 1e9, 2.531780798396938e-11, 5.57164337820311e-09),
    (3, 1e12, 6.186721228960288e-13, 8.767273069717049e-12),
])
def test_clopper_pearson_keeps_the_digits_of_small_ends(x, n, low, high):
    """The old bisection stopped at an absolute 1e-13: 1.9e-7 relative off at (1, 1e6),
    2.3e-4 at (1, 1e9), 3.5% at (3, 1e12)."""
    lo, hi = stats.clopper_pearson(x, n)
    assert lo == pytest.approx(low, rel=1e-12, abs=0)
    assert hi == pytest.approx(high, rel=1e-12, abs=0)


def test_quantiles_go_below_1e_13():
    """No lower end of the old code went below 2.84e-14."""
    # no success in n trials: 1 - 0.025^(1/n) (beta_ppf(0.975, 1, n)); x = 1: the 2.5%
    # quantile of Beta(1, n) is 1 - 0.975^(1/n)
    for n in (1e6, 1e12, 1e15):
        high = -math.expm1(math.log(0.025) / n)
        low = -math.expm1(math.log1p(-0.025) / n)
        assert stats.clopper_pearson(0, n)[1] == pytest.approx(high, rel=1e-12, abs=0)
        assert stats.clopper_pearson(1, n)[0] == pytest.approx(low, rel=1e-12, abs=0)
    # Beta(1, b)'s q quantile is 1 - (1 - q)^(1/b); Beta(a, 1)'s is q^(1/a)
    assert stats.beta_ppf(1e-3, 1.0, 1e20) == pytest.approx(
        -math.expm1(math.log1p(-1e-3) / 1e20), rel=1e-12, abs=0)
    assert stats.beta_ppf(0.5, 0.01, 1.0) == pytest.approx(0.5 ** 100, rel=1e-12, abs=0)


def test_the_continued_fraction_cap_raises(monkeypatch):
    monkeypatch.setattr(stats, "_CF_MAX_STEPS", 3)
    with pytest.raises(ArithmeticError, match="did not converge"):
        stats.betainc(50.0, 60.0, 0.3)


def test_against_scipy_over_a_wide_range():
    special = pytest.importorskip("scipy.special")
    sp = pytest.importorskip("scipy.stats")
    rng = random.Random(3)
    for _ in range(150):
        a, b = 10 ** rng.uniform(-2, 9), 10 ** rng.uniform(-2, 9)
        q = rng.choice([0.025, 0.975, rng.random()])
        x = float(sp.beta.ppf(q, a, b))
        if not 0.0 < x < 1.0:
            continue
        ref, ref_c = float(special.betainc(a, b, x)), float(special.betaincc(a, b, x))
        got = stats.betainc(a, b, x)
        if ref <= 0.5:
            assert got == pytest.approx(ref, rel=1e-9, abs=0), (a, b, x)
        else:
            assert 1.0 - got == pytest.approx(ref_c, rel=1e-9, abs=1e-15), (a, b, x)
        assert stats.beta_ppf(q, a, b) == pytest.approx(x, rel=1e-8, abs=0), (q, a, b)
