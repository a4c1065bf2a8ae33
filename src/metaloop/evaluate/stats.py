"""Student's t quantile for 95% confidence intervals, without scipy or torch (the records'
tools read it without loading torch)."""

from __future__ import annotations

import math

__all__ = ["Z_975", "ci95", "t_975"]

Z_975 = 1.959963984540054     # the standard normal's 97.5% quantile


def _t_two_sided(t: float, df: int) -> float:
    """P(|T| < t) for Student's t with an integer ``df`` >= 1, in closed form (Abramowitz &
    Stegun 26.7.3 and 26.7.4, a finite series in cos(atan(t / sqrt(df))))."""
    theta = math.atan(t / math.sqrt(df))
    s, c2 = math.sin(theta), math.cos(theta) ** 2
    term, total = 1.0, 1.0
    if df % 2 == 0:                       # sin(theta) (1 + 1/2 c^2 + 1*3/(2*4) c^4 + ...)
        for k in range(2, df - 1, 2):
            term *= c2 * (k - 1) / k
            total += term
        return s * total
    if df == 1:
        return 2.0 * theta / math.pi
    for k in range(3, df - 1, 2):         # 2/pi (theta + s c (1 + 2/3 c^2 + 2*4/(3*5) c^4 ...))
        term *= c2 * (k - 1) / k
        total += term
    return 2.0 / math.pi * (theta + s * math.cos(theta) * total)


def t_975(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom: the factor of a
    two-sided 95% confidence interval of a mean over ``df + 1`` values (12.706 for 2 values,
    4.303 for 3, 2.093 for 20, 1.962 for 1000; the normal's 1.960 in the limit).

    Exact (bisection on the closed-form CDF, to 1e-12) up to 200 degrees of freedom; beyond,
    the Cornish-Fisher expansion in 1/df (A&S 26.7.5), good to 1e-9 there.

    Raises:
        ValueError: ``df`` not an int >= 1.
    """
    if not isinstance(df, int) or isinstance(df, bool) or df < 1:
        raise ValueError(f"t_975 needs an int df >= 1, got {df!r}")
    if df > 200:
        z = Z_975
        g = ((z ** 3 + z) / 4,
             (5 * z ** 5 + 16 * z ** 3 + 3 * z) / 96,
             (3 * z ** 7 + 19 * z ** 5 + 17 * z ** 3 - 15 * z) / 384,
             (79 * z ** 9 + 776 * z ** 7 + 1482 * z ** 5 - 1920 * z ** 3 - 945 * z) / 92160)
        return z + sum(gk / df ** (k + 1) for k, gk in enumerate(g))
    lo, hi = Z_975, 16.0
    while _t_two_sided(hi, df) < 0.95:
        hi *= 2.0
    while hi - lo > 1e-12:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _t_two_sided(mid, df) < 0.95 else (lo, mid)
    return 0.5 * (lo + hi)


def ci95(values) -> float | None:
    """The 95% confidence half-width of the mean of ``values``: Student's
    ``t_975(n - 1) * sd / sqrt(n)`` (sd with n - 1), or None for one value (no spread)."""
    n = len(values)
    if n < 2:
        return None
    mean = math.fsum(values) / n
    return t_975(n - 1) * math.sqrt(math.fsum((x - mean) ** 2 for x in values) / (n - 1) / n)
