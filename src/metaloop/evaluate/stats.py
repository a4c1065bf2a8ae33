"""Student's t quantile for 95% confidence intervals, and the interval of a mean bounded in a
range (an error rate or accuracy) that stays inside it, without scipy or torch (the records'
tools read them without loading torch)."""

from __future__ import annotations

import math

__all__ = ["Z_975", "beta_ppf", "betainc", "bounded_ci95", "ci95", "clopper_pearson", "t_975"]

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


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) (the Beta(a, b) CDF at ``x``) for
    real ``a, b > 0``: Lentz's continued fraction (Numerical Recipes 6.4), on the side of
    ``x`` where it converges fast."""
    if not (a > 0 and b > 0):
        raise ValueError(f"betainc needs a, b > 0, got {a!r}, {b!r}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - betainc(b, a, 1.0 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    f = d
    for m in range(1, 100_000):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            f *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * f / a


def beta_ppf(q: float, a: float, b: float) -> float:
    """The ``q`` quantile of Beta(a, b) (real ``a, b > 0``): bisection on :func:`betainc`
    to 1e-13."""
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"beta_ppf needs 0 <= q <= 1, got {q!r}")
    lo, hi = 0.0, 1.0
    while hi - lo > 1e-13:
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if betainc(a, b, mid) < q else (lo, mid)
    return 0.5 * (lo + hi)


def clopper_pearson(x: float, n: float) -> tuple[float, float]:
    """The exact (Clopper-Pearson) 95% interval of a proportion with ``x`` successes in ``n``
    trials, as a fraction; ``x`` and ``n`` may be real (an effective count, as
    :func:`bounded_ci95` uses): the Beta(x, n - x + 1) 2.5% and Beta(x + 1, n - x) 97.5%
    quantiles, 0 for ``x = 0`` and 1 for ``x = n``.

    Raises:
        ValueError: not ``0 <= x <= n`` with ``n > 0``.
    """
    if not (n > 0 and 0.0 <= x <= n):
        raise ValueError(f"clopper_pearson needs 0 <= x <= n and n > 0, got x={x!r}, n={n!r}")
    low = 0.0 if x <= 0 else beta_ppf(0.025, x, n - x + 1.0)
    high = 1.0 if x >= n else beta_ppf(0.975, x + 1.0, n - x)
    return low, high


def bounded_ci95(values, low: float = 0.0, high: float = 100.0, *,
                 trials: int | None = None) -> tuple[float, float] | None:
    """A 95% confidence interval of the mean of ``values`` that lie in ``[low, high]`` (each
    task's error rate or accuracy, in % by default), which, unlike the symmetric t interval
    ``mean ± ci95(values)``, never leaves that range: Korn & Graubard's (1998) interval, the
    one the US National Center for Health Statistics uses for proportions from clustered
    samples.

    The mean as a fraction ``p`` of the range, and its variance ``v = sd^2 / n`` over the n
    tasks, give the effective number of trials ``p (1 - p) / v`` (at most ``trials``, the
    tasks' trials pooled, where given); it is scaled by ``(t_975(trials - 1) / t_975(n - 1))^2``
    (``Z_975`` for the numerator without ``trials``) for the n - 1 degrees of freedom of the
    variance, and the exact Clopper-Pearson interval of ``p`` times it successes in it is
    mapped back to the range. Tasks are the sampling units: trials that share a task
    (its classes, its support set) err together, which a binomial interval on the pooled
    trials would ignore; where the tasks' values spread no more than independent trials'
    would, it is that interval. Away from the range's ends it is close to the t interval.
    With every value at an end (all 0 or all 100), the spread says nothing: the effective
    size is ``trials`` scaled for the degrees of freedom (e.g. 0 to 1.04% for no error in
    20 tasks of 20 trials), or, without ``trials``, the interval is the mean alone.

    Returns:
        ``(lower, upper)`` in the values' unit, or None for fewer than 2 values (no spread).

    Raises:
        ValueError: a value outside ``[low, high]``, ``low >= high`` or ``trials < 1``.
    """
    if not high > low:
        raise ValueError(f"bounded_ci95 needs low < high, got {low!r}, {high!r}")
    if trials is not None and (isinstance(trials, bool) or not isinstance(trials, int)
                               or trials < 1):
        raise ValueError(f"trials must be a positive int or None, got {trials!r}")
    n = len(values)
    if n < 2:
        return None
    width = high - low
    frac = [(v - low) / width for v in values]
    if any(not -1e-9 <= f <= 1.0 + 1e-9 for f in frac):
        raise ValueError(f"bounded_ci95 needs values in [{low}, {high}], got "
                         f"{min(values)!r} .. {max(values)!r}")
    p = min(1.0, max(0.0, math.fsum(frac) / n))
    var = math.fsum((f - p) ** 2 for f in frac) / (n - 1) / n
    if var > 0 and 0.0 < p < 1.0:
        n_eff = p * (1.0 - p) / var
        if trials is not None:
            n_eff = min(n_eff, float(trials))
    elif trials is not None:
        n_eff = float(trials)
    else:
        return low + p * width, low + p * width
    top = t_975(trials - 1) if trials is not None and trials > 1 else Z_975
    n_df = n_eff * (top / t_975(n - 1)) ** 2
    lo, hi = clopper_pearson(p * n_df, n_df)
    return low + lo * width, low + hi * width
