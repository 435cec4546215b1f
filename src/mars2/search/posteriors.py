"""Thompson-sampling posteriors of AB-MCTS-A (method.md §3, "Posteriors").

Two conjugate families, each a tiny class with ``update(x)`` / ``sample(rng)`` / ``params()`` (treequest
style):

- :class:`GaussianPosterior` — Normal-inverse-χ² (TreeQuest's default), prior m=0, κ=1, ν=1, τ²=0.1.
  With n observations of mean x̄ and n·Var = Σ(x−x̄)²:
  κ'=κ+n, ν'=ν+n, m'=(κm+n x̄)/κ', τ²'=(ντ²+n·Var+nκ(m−x̄)²/(κ+n))/ν'.
  A draw: σ² ~ Inv-Gamma(ν'/2, ν'τ²'/2), then μ ~ N(m', σ²/κ'); μ is the sample.
- :class:`BetaPosterior` — Beta(0.5, 0.5) (Jeffreys); observation r ∈ [0, 1]: a += r, b += 1 − r.

The Gaussian keeps Welford sufficient statistics (n, x̄, n·Var) instead of the observation list: updates
are O(1) and the parameters equal TreeQuest's (which recomputes mean/var over all observations each time)
up to float rounding. All randomness comes from a passed ``np.random.Generator``; nothing touches numpy's
global state.
"""
from __future__ import annotations

import math
from typing import Any, Protocol

import numpy as np

GAUSSIAN_PRIOR = {"m": 0.0, "kappa": 1.0, "nu": 1.0, "tau2": 0.1}
BETA_PRIOR = {"a": 0.5, "b": 0.5}


class Posterior(Protocol):
    """What the search needs from a posterior."""

    n: int

    def update(self, x: float) -> None: ...

    def sample(self, rng: np.random.Generator) -> float: ...

    def params(self) -> tuple[float, ...]: ...

    def copy(self) -> "Posterior": ...

    def to_dict(self) -> dict[str, Any]: ...


class GaussianPosterior:
    """Normal-inverse-χ² posterior over the mean score of an option (method.md §3)."""

    __slots__ = ("m", "kappa", "nu", "tau2", "n", "mean", "m2", "_post")

    def __init__(self, m: float = 0.0, kappa: float = 1.0, nu: float = 1.0, tau2: float = 0.1) -> None:
        if kappa <= 0 or nu <= 0 or tau2 <= 0:
            raise ValueError(f"GaussianPosterior needs kappa, nu, tau2 > 0, got {kappa}, {nu}, {tau2}")
        self.m, self.kappa, self.nu, self.tau2 = float(m), float(kappa), float(nu), float(tau2)
        self.n = 0
        self.mean = 0.0  # x̄ of the observations
        self.m2 = 0.0  # Σ(x − x̄)² = n·Var (Welford)
        # cached (m', κ', ν', τ²'): sampling happens far more often than updating
        self._post = (self.m, self.kappa, self.nu, self.tau2)

    def update(self, x: float) -> None:
        x = float(x)
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)
        n, xbar = self.n, self.mean
        kappa_n = self.kappa + n
        nu_n = self.nu + n
        m_n = (self.kappa * self.m + n * xbar) / kappa_n
        tau2_n = (self.nu * self.tau2 + self.m2 + n * self.kappa * (self.m - xbar) ** 2 / kappa_n) / nu_n
        self._post = (m_n, kappa_n, nu_n, tau2_n)

    def params(self) -> tuple[float, float, float, float]:
        """(m', κ', ν', τ²') after the observations so far (the prior when there are none)."""
        return self._post

    def sample(self, rng: np.random.Generator) -> float:
        m_n, kappa_n, nu_n, tau2_n = self._post
        # Inv-Gamma(α, β) = β / Gamma(α, scale 1)
        sigma2 = (nu_n * tau2_n / 2.0) / rng.gamma(nu_n / 2.0)
        return float(rng.normal(m_n, math.sqrt(sigma2 / kappa_n)))

    def copy(self) -> "GaussianPosterior":
        c = GaussianPosterior.__new__(GaussianPosterior)
        c.m, c.kappa, c.nu, c.tau2 = self.m, self.kappa, self.nu, self.tau2
        c.n, c.mean, c.m2, c._post = self.n, self.mean, self.m2, self._post
        return c

    def to_dict(self) -> dict[str, Any]:
        m_n, kappa_n, nu_n, tau2_n = self._post
        return {"kind": "gaussian", "n": self.n, "m": m_n, "kappa": kappa_n, "nu": nu_n, "tau2": tau2_n}

    def __repr__(self) -> str:
        m_n, kappa_n, nu_n, tau2_n = self._post
        return f"GaussianPosterior(n={self.n}, m'={m_n:.4g}, κ'={kappa_n:g}, ν'={nu_n:g}, τ²'={tau2_n:.4g})"


class BetaPosterior:
    """Beta posterior over the success rate of an option (method.md §3; Jeffreys prior by default)."""

    __slots__ = ("a0", "b0", "a", "b", "n")

    def __init__(self, a: float = 0.5, b: float = 0.5) -> None:
        if a <= 0 or b <= 0:
            raise ValueError(f"BetaPosterior needs a, b > 0, got {a}, {b}")
        self.a0, self.b0 = float(a), float(b)
        self.a, self.b = float(a), float(b)
        self.n = 0

    def update(self, x: float) -> None:
        x = float(x)
        if not 0.0 <= x <= 1.0:
            raise ValueError(f"BetaPosterior observations must lie in [0, 1], got {x}")
        self.a += x
        self.b += 1.0 - x
        self.n += 1

    def params(self) -> tuple[float, float]:
        return (self.a, self.b)

    def sample(self, rng: np.random.Generator) -> float:
        return float(rng.beta(self.a, self.b))

    def copy(self) -> "BetaPosterior":
        c = BetaPosterior.__new__(BetaPosterior)
        c.a0, c.b0, c.a, c.b, c.n = self.a0, self.b0, self.a, self.b, self.n
        return c

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "beta", "n": self.n, "a": self.a, "b": self.b}

    def __repr__(self) -> str:
        return f"BetaPosterior(n={self.n}, a={self.a:.4g}, b={self.b:.4g})"


POSTERIOR_KINDS = ("gaussian", "beta")


def make_posterior(kind: str, prior_mean: float | None = None) -> GaussianPosterior | BetaPosterior:
    """A fresh posterior with the default prior of ``kind``; ``prior_mean`` overrides the prior mean the way
    TreeQuest's ``reward_average_prior`` does: Gaussian m = prior_mean; Beta a = prior_mean, b = 1 − prior_mean
    (the prior keeps Jeffreys' total pseudo-count a + b = 1)."""
    if kind == "gaussian":
        if prior_mean is None:
            return GaussianPosterior()
        return GaussianPosterior(m=float(prior_mean))
    if kind == "beta":
        if prior_mean is None:
            return BetaPosterior()
        if not 0.0 < prior_mean < 1.0:
            raise ValueError(f"beta prior_mean must lie in (0, 1), got {prior_mean}")
        return BetaPosterior(a=float(prior_mean), b=1.0 - float(prior_mean))
    raise ValueError(f"posterior kind must be one of {POSTERIOR_KINDS}, got {kind!r}")
