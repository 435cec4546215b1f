"""Final-answer selection and metrics (method.md §7) on constructed trees with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest

from mars2.metrics import (
    avg_pass1,
    mean_ci,
    pass1_mcts,
    pass1_mcts_values,
    pass_at_1,
    pass_at_n,
    pass_at_n_of,
    avg_pass1_of,
    t_quantile_two_sided,
    tts_curve,
)
from mars2.sandbox.types import Evaluation, ExecResult, TestVerdict
from mars2.search.select import final_answer
from mars2.search.tree import Node, Tree


def ev(public: bool, hidden: bool) -> Evaluation:
    def res(ok: bool) -> ExecResult:
        return ExecResult([TestVerdict("passed" if ok else "wrong_answer")])
    return Evaluation(res(public), res(hidden))


def build(pid: str, spec: list[tuple[int, int, float, bool, bool]]) -> Tree:
    """spec rows: (parent_id, agent_id, score, public_pass, hidden_pass)."""
    t = Tree(pid)
    for parent, agent, score, pub, hid in spec:
        t.add(Node(id=-1, parent_id=parent, depth=0, agent_id=agent, agent_name=f"a{agent}",
                   score=score, evaluation=ev(pub, hid)))
    return t


# T1: 1 fails; 2 passes public only; 3 (refines 2) passes all.   final = 3 (newest of the best) → 1
# T2: nothing passes.                                              final = 2 → 0
# T3: 1 passes all; 2 passes public only.                          final = 2 (newest of ties) → 0
T1 = build("t1", [(0, 0, 0.0, False, False), (0, 1, 1.0, True, False), (2, 0, 1.0, True, True)])
T2 = build("t2", [(0, 0, 0.0, False, False), (1, 1, 0.0, False, False)])
T3 = build("t3", [(0, 0, 1.0, True, True), (0, 1, 1.0, True, False)])
TREES = [T1, T2, T3]


def test_final_answer_rule_and_reward_model():
    assert final_answer(T1).id == 3 and final_answer(T2).id == 2 and final_answer(T3).id == 2
    assert final_answer(T1, budget=2).id == 2 and final_answer(T3, budget=1).id == 1
    # tiebreak: only among best-public-score nodes, by R_θ
    assert final_answer(T3, rm_scores={1: 0.9, 2: 0.1}).id == 1
    assert final_answer(T1, rm_scores={1: 0.99, 2: 0.5, 3: 0.1}).id == 2  # node 1 (score 0) is no candidate
    # rerank: all nodes by R_θ
    assert final_answer(T1, rm_scores={1: 0.99, 2: 0.5, 3: 0.1}, mode="rerank").id == 1
    # rerank ties → public score, then newest; unscored nodes rank last
    assert final_answer(T1, rm_scores={1: 0.5, 2: 0.5}, mode="rerank").id == 2
    with pytest.raises(ValueError):
        final_answer(Tree("empty"))
    with pytest.raises(ValueError):
        final_answer(T1, mode="vote")


def test_pass_metrics():
    assert pass1_mcts_values(TREES) == [1.0, 0.0, 0.0]
    assert pass1_mcts(TREES) == pytest.approx(1 / 3)
    assert pass_at_n(TREES) == pytest.approx(2 / 3)
    # avg_pass1: T1 nodes with score 1: {2: F, 3: T} → 1/2; T2 none → 0; T3 {1: T, 2: F} → 1/2
    assert avg_pass1(TREES) == pytest.approx((0.5 + 0 + 0.5) / 3)
    assert pass1_mcts(TREES, rm_scores=[None, None, {1: 0.9, 2: 0.1}]) == pytest.approx(2 / 3)
    assert pass1_mcts([Tree("empty")]) == 0.0 and pass_at_n([Tree("empty")]) == 0.0
    assert pass_at_1([1, 0, 0, 1]) == 0.5 and pass_at_1([True, True]) == 1.0
    assert math.isnan(pass_at_1([]))


def test_tts_curve_from_prefixes():
    # b=1: T1→node1 F, T2→F, T3→node1 T = 1/3; b=2: T1→node2 F, T2 F, T3→node2 F = 0; b=3: as full = 1/3
    assert tts_curve(TREES, [1, 2, 3]) == pytest.approx([1 / 3, 0.0, 1 / 3])
    assert tts_curve(TREES, [60]) == pytest.approx([1 / 3])  # budget beyond the tree = whole tree
    assert pass_at_n(TREES, budget=1) == pytest.approx(1 / 3)


def test_mean_ci():
    # [1, 0, 0]: mean 1/3, s = sqrt(1/3), t_{.975, 2} = 4.302653 (table) → half = 4.302653·sqrt(1/3)/sqrt(3)
    m, lo, hi = mean_ci([1, 0, 0])
    assert m == pytest.approx(1 / 3) and hi - m == pytest.approx(4.302653 / 3, rel=1e-6)
    assert lo == pytest.approx(1 / 3 - 4.302653 / 3, rel=1e-6)
    assert mean_ci([0.4]) == (0.4, 0.4, 0.4)
    assert mean_ci([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5)
    assert all(math.isnan(x) for x in mean_ci([]))
    # t table: ν=1 12.7062, ν=9 2.2622, ν=30 2.0423, ν=1000 1.9623; 99 %: ν=5 4.0321
    for level, df, t in [(0.95, 1, 12.7062), (0.95, 9, 2.2622), (0.95, 30, 2.0423), (0.95, 1000, 1.9623),
                         (0.99, 5, 4.0321)]:
        assert t_quantile_two_sided(level, df) == pytest.approx(t, abs=1e-4)


def test_mean_ci_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 3, 7, 20, 150, 299, 301, 5000):
        assert t_quantile_two_sided(0.95, df) == pytest.approx(stats.t.ppf(0.975, df), rel=1e-9)


def _ev(pub: list[bool], hid: list[bool]) -> Evaluation:
    return Evaluation(ExecResult([TestVerdict("passed" if ok else "wrong_answer") for ok in pub]),
                      ExecResult([TestVerdict("passed" if ok else "wrong_answer") for ok in hid]))


def test_one_solved_rule():
    """Evaluation.solved is the one definition of correct: every test the problem has, public and hidden.
    all_pass (the RL reward's name) and Node.hidden_pass (the nodes, hence every pass metric) are it."""
    cases = [  # (public verdicts, hidden verdicts) → solved
        (([True, True], [True]), True),
        (([True, False], [True]), False),
        (([True], [True, False]), False),
        (([True], []), True),        # no hidden tests: solved on the public ones
        (([], [True, True]), True),  # no public tests: solved on the hidden ones
        (([], [False]), False),
        (([], []), False),           # no test at all: nothing to pass, never solved
    ]
    for (pub, hid), want in cases:
        e = _ev(pub, hid)
        assert e.solved is want and e.all_pass is want, (pub, hid)
        t = Tree("p")
        n = t.add(Node(id=-1, parent_id=0, depth=0, evaluation=e, score=1.0))
        assert n.hidden_pass is want and pass_at_n_of([n]) == float(want) and avg_pass1_of([n]) == float(want)
    assert Node(id=1, parent_id=0, depth=1).hidden_pass is False  # never evaluated
    # avg_pass1_of: share solved among public-score-1 nodes; 0 when none has score 1
    t = Tree("q")
    a = t.add(Node(id=-1, parent_id=0, depth=0, evaluation=_ev([True], [True]), score=1.0))
    b = t.add(Node(id=-1, parent_id=0, depth=0, evaluation=_ev([True], [False]), score=1.0))
    c = t.add(Node(id=-1, parent_id=0, depth=0, evaluation=_ev([False], [True]), score=0.0))
    assert avg_pass1_of([a, b, c]) == 0.5 and avg_pass1_of([c]) == 0.0 and pass_at_n_of([b, c]) == 0.0


def test_metrics_evaluation_and_tasks_import_no_framework():
    """design.md principle 1: the core (metrics incl. diversity, tasks incl. the split statistics, and the
    evaluation module the training callback calls) imports no Lightning, Hydra, wandb or MLflow."""
    import subprocess
    import sys
    from pathlib import Path

    code = ("import sys, mars2.metrics, mars2.metrics.diversity, mars2.evaluation, mars2.tasks.stats; "
            "print(sorted(m for m in ('lightning', 'hydra', 'wandb', 'mlflow', "
            "'pytorch_lightning') if m in sys.modules))")
    src = Path(__file__).resolve().parents[1] / "src"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       env={"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "[]"


def test_interval_summaries_clip_rates_only():
    from mars2.evaluation import is_rate, summarise

    assert is_rate("eval/pass1_mcts") and is_rate("eval/agent/a/div/semantic") and is_rate("eval/tts/8")
    assert not is_rate("eval/div/ec") and not is_rate("eval/b8/div/k") and not is_rate("eval/agent/a/nodes")
    m, lo, hi = summarise("eval/pass1_mcts", [1.0, 0.0])  # t-interval ±6.35 → clipped
    assert (m, lo, hi) == (0.5, 0.0, 1.0)
    m, lo, hi = summarise("eval/div/ec", [1.0, 3.0, float("nan")])  # NaN left out; a count: only >= 0
    assert (m, lo) == (2.0, 0.0) and hi == pytest.approx(2.0 + 12.706205, abs=1e-5)
    m, lo, hi = summarise("eval/div/ec", [5.0, 6.0, 7.0])  # ± 4.302653/√3 = 2.484138, inside the range
    assert lo == pytest.approx(6.0 - 2.484138, abs=1e-6) and hi == pytest.approx(6.0 + 2.484138, abs=1e-6)


# ---- paired comparisons (issue 17) ------------------------------------------------------------------------

def test_paired_bootstrap_constant_and_errors():
    from mars2.metrics.stats import paired_bootstrap_ci

    a = [[0.5, 1.0, 0.0], [1.0, 0.5, 0.5]]
    b = [[0.25, 0.75, -0.25], [0.75, 0.25, 0.25]]
    assert paired_bootstrap_ci(a, b) == (0.25, 0.25, 0.25)  # a constant difference: no uncertainty
    assert paired_bootstrap_ci([1, 0], [1, 0]) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="same seeds x problems"):
        paired_bootstrap_ci([[1, 0]], [[1, 0, 1]])
    with pytest.raises(ValueError, match="NaN"):
        paired_bootstrap_ci([1.0, float("nan")], [0.0, 0.0])
    with pytest.raises(ValueError, match="resample"):
        paired_bootstrap_ci([1, 0], [0, 0], resample="rows")


def test_paired_bootstrap_over_problems_is_binomial_by_hand():
    """One seed, 20 problems, a − b = 1 on 6 of them and 0 elsewhere: a bootstrap resample over problems
    has X ~ Binomial(20, 0.3) ones, mean X/20. P(X <= 1) = 0.0076 < 0.025 < P(X <= 2) = 0.0355 and
    P(X <= 9) = 0.952 < 0.975 < P(X <= 10) = 0.983, so the 95 % percentile interval is [2/20, 10/20]."""
    from mars2.metrics.stats import bootstrap_means, paired_bootstrap_ci

    b = [0.0, 1.0] * 10
    a = list(b)
    for i in (0, 2, 4, 6, 8, 10):  # six problems that b fails and a solves
        a[i] = 1.0
    m, lo, hi = paired_bootstrap_ci(a, b, n_boot=20_000, seed=1)
    assert m == pytest.approx(0.3) and lo == pytest.approx(0.1) and hi == pytest.approx(0.5)
    means = bootstrap_means([[x - y for x, y in zip(a, b)]], n_boot=20_000, seed=1)
    assert np.mean(means == 0.0) == pytest.approx(0.7 ** 20, abs=1e-3)  # no solved problem drawn
    assert np.mean(means) == pytest.approx(0.3, abs=0.005)
    # the per-row intervals of a and b overlap; the paired one excludes 0
    assert mean_ci(a)[1] < mean_ci(b)[2]


def test_paired_bootstrap_two_way_by_hand():
    """2 seeds x 1 problem, d = [0, 1]: resampling seeds gives mean 0, 1/2, 1 with probability 1/4, 1/2, 1/4;
    resampling the single problem changes nothing. Keeping seeds whole ('problems') gives exactly 1/2."""
    from mars2.metrics.stats import bootstrap_means, paired_bootstrap_ci

    d = [[0.0], [1.0]]
    means = bootstrap_means(d, n_boot=40_000, seed=3)
    for v, p in ((0.0, 0.25), (0.5, 0.5), (1.0, 0.25)):
        assert np.mean(np.isclose(means, v)) == pytest.approx(p, abs=0.01)
    assert np.allclose(bootstrap_means(d, n_boot=50, seed=3, resample="problems"), 0.5)
    assert paired_bootstrap_ci(d, [[0.0], [0.0]], n_boot=40_000, seed=3) == (0.5, 0.0, 1.0)
    # seeded: the same interval twice, another seed another draw
    assert np.array_equal(bootstrap_means(d, 100, seed=4), bootstrap_means(d, 100, seed=4))


def test_paired_t_and_summary_by_hand():
    from mars2.metrics.stats import paired_summary, paired_t_ci

    # per-seed mean differences 0.1, 0.2, 0.3: mean 0.2, s = 0.1, t_{0.975, 2} = 4.3027
    a = [[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]
    b = [[0.0, 0.0]] * 3
    m, lo, hi = paired_t_ci(a, b)
    assert m == pytest.approx(0.2) and hi - m == pytest.approx(4.302653 * 0.1 / math.sqrt(3), rel=1e-5)
    s = paired_summary(a, b, n_boot=2000)
    assert s["n_seeds"] == 3 and s["n_problems"] == 2 and s["p_better"] == 1.0
    assert s["mean"] == pytest.approx(0.2) and 0.1 - 1e-12 <= s["ci_low"] <= s["ci_high"] <= 0.3 + 1e-12
    assert s["seed_ci_low"] == pytest.approx(lo)


def test_evaluation_reports_extra_held_out_splits():
    """run_evaluation(extra_splits=...) adds fresh Pass@1 per agent on another split (test_iid), hand-computed
    with the FAKE backend/scorer: agent a passes q0 only, agent b passes nothing → a 1/2, b 0, team 1/4."""
    from fakes import FakeBackend, FakeScorer, fake_problem, response

    from mars2.agents.base import AgentSpec
    from mars2.evaluation import run_evaluation
    from mars2.search.factory import SearchConfig

    agents = [AgentSpec("a", "", "pol_a"), AgentSpec("b", "", "pol_b")]
    ok, bad = response([1, 1], [1, 1, 1]), response([1, 1], [0, 1, 1])

    def respond(req, _i):
        text = req.messages[-1]["content"]
        return ok if req.policy_id == "pol_a" and "problem q0" in text else bad

    r = run_evaluation(FakeBackend(respond), FakeScorer(), agents, [fake_problem("p0")], SearchConfig(mode="iid"), 2,
                       extra_splits={"test_iid": [fake_problem("q0"), fake_problem("q1")]}, diversity=False)
    m = r.metrics
    assert m["eval/test_iid/agent/a/pass1"] == 0.5 and m["eval/test_iid/agent/b/pass1"] == 0.0
    assert m["eval/test_iid/pass1"] == 0.25 and r.values["eval/test_iid/pass1"] == [0.5, 0.0]
    assert m["eval/pass1"] == 0.0  # the main split is unchanged (p0: both agents fail)
    with pytest.raises(ValueError, match="no problems"):
        run_evaluation(FakeBackend(respond), FakeScorer(), agents, [fake_problem("p0")], SearchConfig(mode="iid"), 2,
                       extra_splits={"test_iid": []}, diversity=False)
