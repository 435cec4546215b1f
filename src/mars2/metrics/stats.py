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


# ---------------------------------------------------------------------------------------------------------
# Paired comparisons (issue 17: "statistics with power")
# ---------------------------------------------------------------------------------------------------------
#
# Two rows of a study evaluated on the same problems with the same seeds and the same sampling budget give
# per-(seed, problem) values a[s, p] and b[s, p]. Their difference d = a − b removes what the two rows share
# (a problem's difficulty, a seed's luck), so its interval is much narrower than the two per-row intervals
# side by side. The bootstrap resamples the *units* of the experiment: seeds and problems independently
# (a two-way resample of the seed × problem grid), each with replacement, and takes the mean of d over the
# resampled grid; the interval is the percentile interval of those means.


def _as_grid(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty (seeds x problems) array, got shape {arr.shape}")
    return arr


def paired_differences(a, b) -> np.ndarray:
    """``a − b`` as a (seeds × problems) grid; 1-D inputs are one seed. Raises on different shapes (a paired
    comparison needs the same seeds and problems in both rows) and on NaN (a missing value breaks pairing)."""
    a, b = _as_grid(a, "a"), _as_grid(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired comparison needs the same seeds x problems in both rows, got {a.shape} and {b.shape}")
    d = a - b
    if np.isnan(d).any():
        raise ValueError("paired comparison: NaN values (every seed must have every problem in both rows)")
    return d


def bootstrap_means(d, n_boot: int = 10_000, seed: int = 0, resample: str = "both") -> np.ndarray:
    """``n_boot`` bootstrap means of the (seeds × problems) grid ``d``. ``resample``: ``both`` (seeds and
    problems, independently, each with replacement), ``problems`` or ``seeds`` (the other axis kept whole).
    Seeded (``numpy.random.default_rng(seed)``), so an interval is reproducible."""
    d = _as_grid(d, "d")
    if resample not in ("both", "problems", "seeds"):
        raise ValueError(f"resample must be 'both', 'problems' or 'seeds', got {resample!r}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    n_s, n_p = d.shape
    rng = np.random.default_rng(seed)
    out = np.empty(n_boot)
    # Mean over a resampled grid = mean over (seed draws) of the mean over (problem draws) of d[s, p]; with
    # counts c_s, c_p of each index: Σ c_s c_p d[s, p] / (n_s n_p). Done with count vectors, in chunks.
    chunk = max(1, min(n_boot, 2_000_000 // max(1, n_s * n_p)))
    for start in range(0, n_boot, chunk):
        k = min(chunk, n_boot - start)
        cs = (rng.multinomial(n_s, np.full(n_s, 1.0 / n_s), size=k) if resample != "problems"
              else np.ones((k, n_s)))
        cp = (rng.multinomial(n_p, np.full(n_p, 1.0 / n_p), size=k) if resample != "seeds"
              else np.ones((k, n_p)))
        out[start:start + k] = np.einsum("ks,sp,kp->k", cs, d, cp) / (n_s * n_p)
    return out


def paired_bootstrap_ci(a, b, level: float = 0.95, n_boot: int = 10_000, seed: int = 0,
                        resample: str = "both") -> tuple[float, float, float]:
    """(mean difference, lo, hi): the mean of ``a − b`` over seeds × problems and its percentile bootstrap
    interval (:func:`bootstrap_means`). ``a``/``b``: per-(seed, problem) values of two rows, arrays of shape
    (seeds, problems), or 1-D for one seed. A constant difference gives a degenerate interval at that value."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    d = paired_differences(a, b)
    means = bootstrap_means(d, n_boot, seed, resample)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    mean = float(d.mean())
    # the percentile interval of a constant is that constant (guard float noise of the einsum)
    if np.all(d == d.flat[0]):
        return mean, mean, mean
    return mean, float(lo), float(hi)


def paired_t_ci(a, b, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): the t-interval over seeds of the per-seed mean differences (the classical paired test
    with seeds as units; one seed → degenerate interval). A cross-check of :func:`paired_bootstrap_ci`."""
    d = paired_differences(a, b)
    return mean_ci(d.mean(axis=1), level)


def paired_summary(a, b, level: float = 0.95, n_boot: int = 10_000, seed: int = 0) -> dict[str, float]:
    """Everything a results table prints for one paired comparison: ``mean`` (a − b), ``ci_low``/``ci_high``
    (paired bootstrap over seeds × problems), ``p_better`` (share of bootstrap means > 0), ``seed_ci_low``/
    ``seed_ci_high`` (t over seeds), ``n_seeds``, ``n_problems``."""
    d = paired_differences(a, b)
    m, lo, hi = paired_bootstrap_ci(a, b, level, n_boot, seed)
    means = bootstrap_means(d, n_boot, seed)
    _, slo, shi = paired_t_ci(a, b, level)
    return {"mean": m, "ci_low": lo, "ci_high": hi, "p_better": float(np.mean(means > 0)),
            "seed_ci_low": slo, "seed_ci_high": shi, "n_seeds": int(d.shape[0]), "n_problems": int(d.shape[1])}
