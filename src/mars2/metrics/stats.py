"""Confidence intervals (method.md §7: "means with 95 % confidence intervals over problems and over seeds").

Plain Python + numpy: the Student-t quantile is computed here (closed-form t CDF for integer degrees of
freedom, inverted by bisection; a Cornish–Fisher expansion for large ν) so the metrics need no scipy.
"""
from __future__ import annotations

import math
from statistics import NormalDist
from typing import Iterable

import numpy as np


def t_abs_cdf(t: float, df: int) -> float:
    """P(|T| ≤ t) for Student's t with integer ``df`` ≥ 1 (Abramowitz & Stegun 26.7.3–26.7.4)."""
    if t <= 0:
        return 0.0
    theta = math.atan(t / math.sqrt(df))
    s, c = math.sin(theta), math.cos(theta)
    c2 = c * c
    if df % 2 == 1:
        if df == 1:
            return 2.0 * theta / math.pi
        # θ + sinθ (cosθ + 2/3 cos³θ + … + (2·4…(ν−3))/(1·3…(ν−2)) cos^{ν−2}θ)
        term, total = c, c
        for k in range(2, df - 1, 2):  # powers 3, 5, …, ν−2
            term *= c2 * k / (k + 1)
            total += term
        return 2.0 / math.pi * (theta + s * total)
    # sinθ (1 + 1/2 cos²θ + 1·3/(2·4) cos⁴θ + … + (1·3…(ν−3))/(2·4…(ν−2)) cos^{ν−2}θ)
    term, total = 1.0, 1.0
    for k in range(1, df - 2, 2):  # powers 2, 4, …, ν−2
        term *= c2 * k / (k + 1)
        total += term
    return s * total


def t_quantile_two_sided(level: float, df: int) -> float:
    """t such that P(|T| ≤ t) = ``level`` (e.g. 0.95 → 12.706 for df=1, 2.262 for df=9)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if df < 1:
        raise ValueError(f"df must be >= 1, got {df}")
    if df > 300:
        # Cornish–Fisher expansion of the t quantile around the normal one (error < 1e-9 here)
        z = NormalDist().inv_cdf(0.5 + level / 2.0)
        n = float(df)
        return (z + (z**3 + z) / (4 * n) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * n**2)
                + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * n**3)
                + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * n**4))
    lo, hi = 0.0, 1.0
    while t_abs_cdf(hi, df) < level:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_abs_cdf(mid, df) < level:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


def mean_ci(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): the t-interval mean ± t_{ν=n−1} · s/√n with the unbiased std s.

    One value → a degenerate interval (mean, mean, mean); no values → (nan, nan, nan)."""
    arr = np.asarray(list(values), dtype=float)
    n = arr.size
    if n == 0:
        return (math.nan, math.nan, math.nan)
    mean = float(arr.mean())
    if n == 1:
        return (mean, mean, mean)
    s = float(arr.std(ddof=1))
    half = t_quantile_two_sided(level, n - 1) * s / math.sqrt(n)
    return (mean, mean - half, mean + half)
