"""Student's t quantile for 95% confidence intervals, and the interval of a mean bounded in a
range (an error rate or accuracy) that stays inside it, without scipy or torch (the records'
tools read them without loading torch)."""

from __future__ import annotations

import math
import struct
from fractions import Fraction

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


_LN_SQRT_2PI = 0.9189385332046727      # ln(sqrt(2 pi))
_CF_MAX_STEPS = 100_000
_cf_steps = 0                              # continued-fraction steps taken, all calls together
# Stirling's remainder del(x) = lgamma(x) - ((x - 0.5) ln x - x + ln sqrt(2 pi)) for x >= 8, as
# (c0 + c1/x^2 + ... + c5/x^10) / x (DiDonato & Morris 1992, TOMS 708's bcorr and algdiv)
_DEL_C = (0.833333333333333e-01, -0.277777777760991e-02, 0.793650666825390e-03,
          -0.595202931351870e-03, 0.837308034031215e-03, -0.165322962780713e-02)


def _stirling_del(x: float) -> float:
    """lgamma(x) minus its Stirling approximation, for x >= 8 (under 0.0105 there)."""
    t = 1.0 / (x * x)
    return (((((_DEL_C[5] * t + _DEL_C[4]) * t + _DEL_C[3]) * t + _DEL_C[2]) * t + _DEL_C[1])
            * t + _DEL_C[0]) / x


def _log1pmx(e: float) -> float:
    """ln(1 + e) - e for |e| <= 0.6, without the cancellation of computing it as written:
    with s = e / (2 + e), ln(1 + e) = 2 atanh(s) = 2 (s + s^3/3 + ...) and 2 s - e = -e s."""
    s = e / (2.0 + e)
    s2 = s * s
    term, total, k = s * s2, 0.0, 3
    while abs(term) > 1e-18 * abs(e * s):
        total += term / k
        term *= s2
        k += 2
    return -e * s + 2.0 * total


def _log_beta(a: float, b: float) -> float:
    """ln B(a, b) for real a, b > 0 without the cancellation of lgamma(a + b) - lgamma(b) when
    b is large (TOMS 708's betaln and algdiv, with Stirling's remainder): good to about 1e-15
    absolute for every a, b that a float holds."""
    a, b = min(a, b), max(a, b)
    if b < 8.0:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    if a < 8.0:
        # lgamma(b) - lgamma(a + b) by Stirling, (b - 0.5) ln b - (a + b - 0.5) ln(a + b)
        # rearranged so that nothing of size b ln b is left to cancel
        return (math.lgamma(a) - (a + b - 0.5) * math.log1p(a / b) - a * (math.log(b) - 1.0)
                + _stirling_del(b) - _stirling_del(a + b))
    # both >= 8: all three by Stirling, with h = a / b, c = h / (1 + h) = a / (a + b)
    h = a / b
    corr = _stirling_del(a) + _stirling_del(b) - _stirling_del(a + b)
    return (_LN_SQRT_2PI - 0.5 * math.log(b) + corr + (a - 0.5) * math.log(h / (1.0 + h))
            - b * math.log1p(h))


def _front(a: float, b: float, x: float, y: float, lam: float) -> float:
    """x^a y^b / B(a, b) (``y = 1 - x``, ``lam = (a + b) y - b``), to a relative 1e-14 or
    so even where a and b are huge (TOMS 708's brcomp: about the mode, a ln(x/x0) +
    b ln(y/y0) as a sum of ln(1+e) - e terms, which cancel nothing)."""
    if x == 0.0 or y == 0.0:
        return 0.0
    if min(a, b) >= 8.0:
        if a > b:
            h = b / a
            x0, y0 = 1.0 / (1.0 + h), h / (1.0 + h)
        else:
            h = a / b
            x0, y0 = h / (1.0 + h), 1.0 / (1.0 + h)
        e = -lam / a
        u = e - math.log(x / x0) if abs(e) > 0.6 else -_log1pmx(e)
        e = lam / b
        v = e - math.log(y / y0) if abs(e) > 0.6 else -_log1pmx(e)
        corr = _stirling_del(a) + _stirling_del(b) - _stirling_del(a + b)
        return math.exp(-(a * u + b * v) - corr) * math.sqrt(b * x0) / math.sqrt(2.0 * math.pi)
    lnx = math.log(x) if x <= 0.375 else math.log1p(-y)
    lny = math.log1p(-x) if x <= 0.375 else math.log(y)
    z = a * lnx + b * lny - _log_beta(a, b)
    return math.exp(z) if z < 709.0 else math.inf


def _basym(a: float, b: float, lam: float) -> float:
    """I_x(a, b) for a, b > 100 and 0 <= lam = (a + b)(1 - x) - b <= 0.03 min(a, b): Temme's
    uniform asymptotic expansion as DiDonato & Morris (1992, TOMS 708's basym) sum it."""
    e0, e1 = 2.0 / math.sqrt(math.pi), 2.0 ** -1.5
    if a < b:
        h = a / b
        r1 = (b - a) / b
        w0 = 1.0 / math.sqrt(a * (1.0 + h))
    else:
        h = b / a
        r1 = (b - a) / a
        w0 = 1.0 / math.sqrt(b * (1.0 + h))
    r0 = 1.0 / (1.0 + h)
    f = -a * _log1pmx(-lam / a) - b * _log1pmx(lam / b)
    t = math.exp(-f)
    if t == 0.0:
        return 0.0
    z0 = math.sqrt(f)
    z = 0.5 * (z0 / e1)
    z2 = f + f
    num = 20
    a0, b0, c, d = [0.0] * (num + 1), [0.0] * (num + 1), [0.0] * (num + 1), [0.0] * (num + 1)
    a0[0] = (2.0 / 3.0) * r1
    c[0] = -0.5 * a0[0]
    d[0] = -c[0]
    # t j0 = exp(-z0^2) (0.5/e0) erfcx(z0) = (0.5/e0) erfc(z0): every j carries the factor t
    j0 = (0.5 / e0) * math.erfc(z0)
    j1 = e1 * t
    total = j0 + d[0] * w0 * j1
    s, h2, hn, w, znm1, zn = 1.0, h * h, 1.0, w0, z * t, z2 * t
    for n in range(2, num + 1, 2):
        hn *= h2
        a0[n - 1] = 2.0 * r0 * (1.0 + h * hn) / (n + 2.0)
        s += hn
        a0[n] = 2.0 * r1 * s / (n + 3.0)
        for i in (n, n + 1):
            r = -0.5 * (i + 1.0)
            b0[0] = r * a0[0]
            for m in range(2, i + 1):
                bsum = math.fsum((j * r - (m - j)) * a0[j - 1] * b0[m - j - 1]
                                 for j in range(1, m))
                b0[m - 1] = r * a0[m - 1] + bsum / m
            c[i - 1] = b0[i - 1] / (i + 1.0)
            d[i - 1] = -(math.fsum(d[i - j - 1] * c[j - 1] for j in range(1, i)) + c[i - 1])
        j0 = e1 * znm1 + (n - 1.0) * j0
        j1 = e1 * zn + n * j1
        znm1 *= z2
        zn *= z2
        w *= w0
        t0 = d[n - 1] * w * j0
        w *= w0
        t1 = d[n] * w * j1
        total += t0 + t1
        if abs(t0) + abs(t1) <= 1e-15 * total:
            break
    corr = _stirling_del(a) + _stirling_del(b) - _stirling_del(a + b)
    return e0 * math.exp(-corr) * total


def _bfrac(a: float, b: float, x: float, y: float, lam: float) -> float:
    """The continued fraction of I_x(a, b) over its front factor, for ``lam = (a + b) y - b``
    >= 0 (x at or below the mean): DiDonato & Morris's (1992, TOMS 708's bfrac) form of the
    fraction, which takes ``y`` and ``lam`` as given and so keeps the digits that
    1 - (a + b) x / (a + 1) would lose where x is near 1.

    Raises:
        ArithmeticError: no convergence to 1e-15 in 100,000 steps.
    """
    global _cf_steps
    c = 1.0 + lam
    c0 = b / a
    c1 = 1.0 + 1.0 / a
    yp1 = y + 1.0
    p, s = 1.0, a + 1.0
    an, bn, anp1, bnp1 = 0.0, 1.0, 1.0, c / c1
    r = c1 / c
    for n in range(1, _CF_MAX_STEPS + 1):
        t = n / a
        w = n * (b - n) * x
        e = a / s
        alpha = (p * (p + c0) * e * e) * (w * x)
        e = (1.0 + t) / (c1 + t + t)
        beta = n + w / s + e * (c + n * yp1)
        p = 1.0 + t
        s += 2.0
        an, anp1 = anp1, alpha * an + beta * anp1
        bn, bnp1 = bnp1, alpha * bn + beta * bnp1
        r0, r = r, anp1 / bnp1
        if not abs(r - r0) > 1e-15 * r:
            _cf_steps += n
            return r
        an /= bnp1
        bn /= bnp1
        anp1, bnp1 = r, 1.0
    _cf_steps += _CF_MAX_STEPS
    raise ArithmeticError(f"betainc({a!r}, {b!r}, {x!r}): the continued fraction did not "
                          f"converge in {_CF_MAX_STEPS} steps")


def _bratio(a: float, b: float, x: float, y: float) -> tuple[float, float]:
    """(I_x(a, b), 1 - I_x(a, b)) for ``y = 1 - x`` given apart (so that either can be tiny),
    each to a relative 1e-13 or better where it is under 0.5: on the side of the mean where
    the function is the smaller tail (lam >= 0), Temme's expansion or the fraction."""
    if x <= 0.0:
        return 0.0, 1.0
    if y <= 0.0:
        return 1.0, 0.0
    lam = a - (a + b) * x if a <= b else (a + b) * y - b
    if abs(lam) < 0.5 * max(a, b) and math.isfinite(a + b):
        # near the mean the two products cancel: (a + b) x rounded alone would cost
        # sqrt(a) digits-in-1e16 of lam, so take it exactly (x, y and a, b are exact floats)
        fa, fb = Fraction(a), Fraction(b)
        lam = float(fa - (fa + fb) * Fraction(x) if a <= b else (fa + fb) * Fraction(y) - fb)
    if lam < 0.0:
        w1 = _lower_tail(b, a, y, x, -lam)
        return 1.0 - w1, w1
    w = _lower_tail(a, b, x, y, lam)
    return w, 1.0 - w


def _lower_tail(a: float, b: float, x: float, y: float, lam: float) -> float:
    """I_x(a, b) for x at or below the mean a / (a + b), ``lam = (a + b) y - b >= 0``."""
    if min(a, b) > 100.0 and lam <= 0.03 * min(a, b):
        return _basym(a, b, lam)
    front = _front(a, b, x, y, lam)
    return 0.0 if front == 0.0 else min(1.0, front * _bfrac(a, b, x, y, lam))


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b) (the Beta(a, b) CDF at ``x``) for
    real ``a, b > 0``, after DiDonato & Morris (1992, TOMS 708) on the tail below the mean
    (the other side is one minus its mirror): their form of the continued fraction, with
    its front factor x^a (1-x)^b / B(a, b) taken about the mode (no lgamma differences to
    cancel), and, for a, b > 100 within 3% of the mean, where the fraction would take
    ~sqrt(a) steps, Temme's uniform asymptotic expansion. Good to about 1e-14 relative from
    a, b near 0 to 1e15 and beyond.

    Raises:
        ValueError: not ``a, b > 0``.
        ArithmeticError: the continued fraction did not converge in 100,000 steps (a guard;
            never seen).
    """
    if not (a > 0 and b > 0):
        raise ValueError(f"betainc needs a, b > 0, got {a!r}, {b!r}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    return _bratio(a, b, x, 1.0 - x)[0]


def _bits(x: float) -> int:
    return struct.unpack("<q", struct.pack("<d", x))[0]


def _from_bits(i: int) -> float:
    return float(struct.unpack("<d", struct.pack("<q", i))[0])


def _rising_root(cdf, p: float, pc: float) -> float:
    """The least float t in (0, 0.5] with F(t) >= p, for a rising ``cdf(t) -> (F, 1 - F)``
    with F(0.5) >= p > 0 and ``pc = 1 - p`` (the one of the two under 0.5 is compared, on
    its own side, so that neither loses digits): bisection on the floats' bit patterns,
    whose order is the floats', so to adjacent floats at any scale, subnormals included."""
    lo, hi = 0, _bits(0.5)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        f, f1 = cdf(_from_bits(mid))
        below = f < p if p <= 0.5 else f1 > pc
        lo, hi = (mid, hi) if below else (lo, mid)
    return _from_bits(hi)


def beta_ppf(q: float, a: float, b: float) -> float:
    """The ``q`` quantile of Beta(a, b) (real ``a, b > 0``): bisection on :func:`betainc`,
    over x where the quantile is below 0.5 and over 1 - x where it is above, down to
    adjacent floats (a relative 1e-16 or so: small quantiles keep their digits).

    Raises:
        ValueError: ``q`` outside ``[0, 1]`` (or NaN), or not ``a, b > 0``.
        ArithmeticError: :func:`betainc`'s continued fraction did not converge (a guard;
            never seen).
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"beta_ppf needs 0 <= q <= 1, got {q!r}")
    if not (a > 0 and b > 0):
        raise ValueError(f"beta_ppf needs a, b > 0, got {a!r}, {b!r}")
    if q == 0.0 or q == 1.0:
        return q
    if q <= _bratio(a, b, 0.5, 0.5)[0]:
        return _rising_root(lambda t: _bratio(a, b, t, 1.0 - t), q, 1.0 - q)
    # above 0.5: 1 - x is the 1 - q quantile of Beta(b, a)
    return 1.0 - _rising_root(lambda t: _bratio(b, a, t, 1.0 - t), 1.0 - q, q)


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
    tasks, give the effective number of trials ``p (1 - p) / v``, at most ``trials`` (the
    tasks' trials pooled) where given: Korn & Graubard's truncation at the actual number of
    observations. Without ``trials`` that number is unknown and n_eff is not truncated (as
    the ``Z_975`` numerator below takes unbounded degrees of freedom), so a tiny spread
    gives a tiny interval about the mean, as the t interval would. It is scaled by
    ``(t_975(trials - 1) / t_975(n - 1))^2`` (``Z_975`` for the numerator without
    ``trials``) for the n - 1 degrees of freedom of the variance, and the exact
    Clopper-Pearson interval of ``p`` times it successes in it is
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
        # Korn & Graubard's n* = min(n, p (1 - p) / v), their n (the observations) being the
        # pooled trials; without them n is unknown and taken as unbounded, as the Z_975
        # numerator takes its degrees of freedom. 1e300 only keeps n_eff * (1 - p) finite:
        # at that many trials the interval is the mean to a float's precision.
        n_eff = min(p * (1.0 - p) / var, 1e300)
        if trials is not None:
            n_eff = min(n_eff, float(trials))
    elif trials is not None:
        n_eff = float(trials)
    else:
        return low + p * width, low + p * width
    top = t_975(trials - 1) if trials is not None and trials > 1 else Z_975
    n_df = n_eff * (top / t_975(n - 1)) ** 2
    lo, hi = clopper_pearson(p * n_df, n_df)
    # the interval holds p; at a huge n_df its ends are within rounding of it, so keep it so
    lo, hi = min(lo, p), max(hi, p)
    return low + lo * width, low + hi * width
