"""Posteriors of AB-MCTS-A (method.md §3): hand-computed updates, sampling sanity, agreement with TreeQuest."""
from __future__ import annotations

import numpy as np
import pytest

from mars2.search.posteriors import BetaPosterior, GaussianPosterior, make_posterior


def gauss(obs, **prior):
    p = GaussianPosterior(**prior)
    for x in obs:
        p.update(x)
    return p


# ---- hand-computed Normal-inverse-χ² updates (prior m=0, κ=1, ν=1, τ²=0.1) --------------------------------
# obs [1]: n=1, x̄=1, nVar=0: κ'=2, ν'=2, m'=1/2, τ²'=(0.1 + 0 + 1·1·1/2)/2 = 0.3
# obs [0.5]: m'=0.25, τ²'=(0.1 + 0.25/2)/2 = 0.1125
# obs [1,0,1]: n=3, x̄=2/3, nVar=2/9+2/9+... = (1/3)²+(2/3)²+(1/3)² = 2/3; κ'=4, ν'=4, m'=2/4=0.5,
#   τ²'=(0.1 + 2/3 + 3·(2/3)²/4)/4 = (0.1 + 2/3 + 1/3)/4 = 0.275
# obs [0.6, 1.0]: n=2, x̄=0.8, nVar=0.08: κ'=3, ν'=3, m'=1.6/3, τ²'=(0.1+0.08+2·0.64/3)/3 = 0.6066667/3
@pytest.mark.parametrize(
    "obs, expected",
    [
        ([], (0.0, 1.0, 1.0, 0.1)),
        ([1.0], (0.5, 2.0, 2.0, 0.3)),
        ([0.5], (0.25, 2.0, 2.0, 0.1125)),
        ([1.0, 0.0, 1.0], (0.5, 4.0, 4.0, 0.275)),
        ([0.6, 1.0], (0.5333333333333333, 3.0, 3.0, 0.20222222222222222)),
    ],
)
def test_gaussian_hand_computed(obs, expected):
    assert gauss(obs).params() == pytest.approx(expected, rel=1e-12, abs=1e-15)


def test_gaussian_prior_mean_override():
    # m=0.5, obs [1, 0]: n=2, x̄=0.5, nVar=0.5: κ'=3, ν'=3, m'=(0.5+1)/3=0.5, τ²'=(0.1+0.5+0)/3=0.2
    p = make_posterior("gaussian", 0.5)
    p.update(1.0)
    p.update(0.0)
    assert p.params() == pytest.approx((0.5, 3.0, 3.0, 0.2), rel=1e-12)


def test_beta_updates_and_prior_mean():
    p = BetaPosterior()
    for x in (1.0, 0.0, 0.25):
        p.update(x)
    assert p.params() == pytest.approx((1.75, 2.25))  # a = .5+1+0+.25, b = .5+0+1+.75
    q = make_posterior("beta", 0.3)  # TreeQuest's reward_average_prior: a = 0.3, b = 0.7
    q.update(1.0)
    assert q.params() == pytest.approx((1.3, 0.7))
    with pytest.raises(ValueError):
        p.update(1.5)
    with pytest.raises(ValueError):
        make_posterior("beta", 1.0)
    with pytest.raises(ValueError):
        make_posterior("normal", None)


def test_gaussian_sample_distribution():
    # After [1,0,1]: μ = m' + sqrt(τ²'/κ')·T with T ~ Student-t(ν'=4) (the marginal of the NIX² draw).
    p = gauss([1.0, 0.0, 1.0])
    rng = np.random.default_rng(0)
    draws = np.array([p.sample(rng) for _ in range(100_000)])
    assert draws.mean() == pytest.approx(0.5, abs=0.006)  # se ≈ 0.0012
    t = (draws - 0.5) / np.sqrt(0.275 / 4)
    # P(|T| ≤ 1) for ν=4: θ=atan(1/2), sinθ(1 + cos²θ/2) = 0.4472136·1.4 = 0.6260990
    assert np.mean(np.abs(t) <= 1.0) == pytest.approx(0.6260990, abs=0.006)
    # P(|T| ≤ 2.776445) = 0.95 (t table, ν=4)
    assert np.mean(np.abs(t) <= 2.776445) == pytest.approx(0.95, abs=0.004)


def test_beta_sample_mean_and_determinism():
    p = BetaPosterior(2.0, 6.0)
    draws = [p.sample(np.random.default_rng(1)) for _ in range(3)]
    assert draws[0] == draws[1] == draws[2]  # same generator state → same draw
    rng = np.random.default_rng(2)
    xs = np.array([p.sample(rng) for _ in range(50_000)])
    assert xs.mean() == pytest.approx(0.25, abs=0.004)


def test_copy_is_independent():
    p = gauss([1.0])
    q = p.copy()
    q.update(0.0)
    assert p.params() == pytest.approx((0.5, 2.0, 2.0, 0.3)) and q.n == 2 and p.n == 1


# ---- agreement with TreeQuest's internal parameters -----------------------------------------------------------
tq = pytest.importorskip("treequest.algos.ab_mcts_a.prob_state")


def _sequences():
    rng = np.random.default_rng(123)
    seqs = [[1.0], [0.0, 0.0, 0.0], [1.0, 0.0] * 5]
    seqs += [list(rng.random(n)) for n in (1, 2, 7, 40)]
    seqs += [list(rng.integers(0, 2, n).astype(float)) for n in (3, 25)]
    return seqs


@pytest.mark.parametrize("seq", _sequences())
@pytest.mark.parametrize("prior_mean", [None, 0.3])
def test_gaussian_matches_treequest(seq, prior_mean):
    cfg = tq.PriorConfig(dist_type="gaussian")
    if prior_mean is not None:
        cfg.set_reward_average_prior(prior_mean)
    theirs = tq.ProbabilisticDist(cfg)
    ours = make_posterior("gaussian", prior_mean)
    for x in seq:
        theirs.tell_observation(x)
        ours.update(x)
        t = theirs.params
        assert ours.params() == pytest.approx((t["m"], t["kappa"], t["nu"], t["tau_square"]), rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("seq", _sequences())
@pytest.mark.parametrize("prior_mean", [None, 0.3])
def test_beta_matches_treequest(seq, prior_mean):
    cfg = tq.PriorConfig(dist_type="beta")
    if prior_mean is not None:
        cfg.set_reward_average_prior(prior_mean)
    theirs = tq.ProbabilisticDist(cfg)
    ours = make_posterior("beta", prior_mean)
    for x in seq:
        theirs.tell_observation(x)
        ours.update(x)
        assert ours.params() == pytest.approx((theirs.params["a"], theirs.params["b"]), rel=1e-12)


def test_gaussian_sampling_matches_treequest_distribution():
    """Same posterior, our numpy-Generator draw vs TreeQuest's scipy/np.random draw: same distribution
    (compared by quantiles of 20k draws each)."""
    seq = [1.0, 0.0, 0.5, 1.0]
    theirs = tq.ProbabilisticDist(tq.PriorConfig(dist_type="gaussian"))
    for x in seq:
        theirs.tell_observation(x)
    ours = gauss(seq)
    np.random.seed(7)
    a = np.array([theirs.draw_sample() for _ in range(20_000)])
    rng = np.random.default_rng(7)
    b = np.array([ours.sample(rng) for _ in range(20_000)])
    qs = [0.05, 0.25, 0.5, 0.75, 0.95]
    assert np.quantile(a, qs) == pytest.approx(np.quantile(b, qs), abs=0.02)
