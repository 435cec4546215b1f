"""Search overhead per node: our multi-agent AB-MCTS-A vs TreeQuest's ABMCTSA (issue 7: goal ≤ 0.5× its time).

Generation and scoring are scripted (a node's score is a fixed function of its agent and its parent's
score, so both implementations see the same problem), so the time measured is the search alone: selection
(Thompson draws), agent choice, tree insertion and backpropagation. TreeQuest runs its default
(``multiarm_bandit_thompson``, Gaussian or Beta) with ``step(..., inplace=True)`` (no deep copy).

Also measured: the full ``SearchRunner`` overhead per node (prompt building, program extraction, node
construction, feedback formatting, commits) with a backend and a scorer that return prebuilt results.

Results go to benchmarks/results/search.json.

    PYTHONPATH=src python benchmarks/bench_search.py [--trees 40] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402

from mars2.agents.base import AgentSpec  # noqa: E402
from mars2.rollout.backend import Generation  # noqa: E402
from mars2.sandbox.types import Evaluation, ExecResult, TestVerdict  # noqa: E402
from mars2.search.ab_mcts import ABMCTSSearch, Expansion  # noqa: E402
from mars2.search.factory import SearchConfig  # noqa: E402
from mars2.rollout.runner import SearchRunner  # noqa: E402
from mars2.search.tree import Node, Tree  # noqa: E402
from mars2.tasks.problem import Problem, TestCase  # noqa: E402


def scripted_score(agent: int, parent_score: float | None) -> float:
    if parent_score is None:
        return (0.3, 0.5, 0.2, 0.4)[agent % 4]
    if agent % 2 == 0:
        return min(1.0, parent_score + 0.25)
    return 0.5 * parent_score + 0.1


def time_ours(n_trees: int, budget: int, n_agents: int, posterior: str) -> float:
    t0 = time.perf_counter()
    for seed in range(n_trees):
        s = ABMCTSSearch(Tree("bench"), n_agents, np.random.default_rng(seed), posterior=posterior, budget=budget)
        nodes = s.tree.nodes

        def gen(e: Expansion) -> Node:
            ps = None if e.parent_id == 0 else nodes[e.parent_id].score
            return Node(id=-1, parent_id=e.parent_id, depth=0, score=scripted_score(e.agent_id, ps))

        while not s.done:
            s.step(gen)
    return time.perf_counter() - t0


def time_treequest(n_trees: int, budget: int, n_agents: int, posterior: str) -> float:
    from treequest import ABMCTSA

    def make(a: int):
        def f(parent_state):
            sc = scripted_score(a, None if parent_state is None else parent_state[0])
            return (sc,), sc
        return f

    fns = {f"a{a}": make(a) for a in range(n_agents)}
    t0 = time.perf_counter()
    for seed in range(n_trees):
        np.random.seed(seed)
        algo = ABMCTSA(dist_type=posterior)
        st = algo.init_tree()
        for _ in range(budget):
            st = algo.step(st, fns, inplace=True)
    return time.perf_counter() - t0


class NullBackend:
    """Returns one prebuilt Generation per request (scripted: the text holds a small program)."""

    def __init__(self) -> None:
        text = "```python\ndef f(xs):\n    return sorted(xs)\n```"
        self.gen = Generation(text=text, prompt_ids=list(range(64)), response_ids=list(range(24)),
                              logprobs=[-0.1] * 24)

    def generate(self, requests):
        return [self.gen for _ in requests]


class NullScorer:
    """Returns a scripted Evaluation: public passes with probability 0.3, hidden as public."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def evaluate_many(self, items):
        out = []
        for _ in items:
            ok = bool(self.rng.random() < 0.3)
            v = [TestVerdict("passed" if ok else "wrong_answer", input="[3, 1, 2]", expected="[1, 2, 3]",
                             actual="[1, 2, 3]" if ok else "[3, 1, 2]") for _ in range(3)]
            out.append(Evaluation(ExecResult(v), ExecResult(list(v) * 3)))
        return out


def time_runner(n_trees: int, budget: int, n_agents: int, mode: str) -> dict[str, float]:
    problems = [Problem(id=f"p{i}", statement="Sort the list xs in ascending order.", mode="functional",
                        public_tests=(TestCase([[3, 1, 2]], [1, 2, 3]),) * 3,
                        hidden_tests=(TestCase([[2, 1]], [1, 2]),) * 9, entry_point="f",
                        starter_code="def f(xs):") for i in range(n_trees)]
    agents = [AgentSpec(f"agent{a}", f"You are agent {a}.", f"pol{a % 2}") for a in range(n_agents)]
    runner = SearchRunner(NullBackend(), NullScorer(), agents, SearchConfig(mode=mode, budget=budget))
    runner.run(problems, seed=0)
    st = runner.stats
    return {"overhead_us_per_node": 1e6 * st["overhead_s"] / st["nodes"],
            "wall_us_per_node": 1e6 * st["wall_s"] / st["nodes"], "nodes": st["nodes"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trees", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "search.json"))
    args = ap.parse_args()
    import treequest

    load_before = os.getloadavg()
    rows = []
    for posterior in ("gaussian", "beta"):
        for budget, n_agents in ((8, 2), (60, 1), (60, 2), (60, 3)):
            ours = [time_ours(args.trees, budget, n_agents, posterior) for _ in range(args.repeats)]
            theirs = [time_treequest(args.trees, budget, n_agents, posterior) for _ in range(args.repeats)]
            nodes = args.trees * budget
            o, t = statistics.median(ours) / nodes * 1e6, statistics.median(theirs) / nodes * 1e6
            rows.append({"posterior": posterior, "budget": budget, "n_agents": n_agents, "trees": args.trees,
                         "ours_us_per_node": round(o, 2), "treequest_us_per_node": round(t, 2),
                         "ratio_ours_over_treequest": round(o / t, 4)})
            print(f"{posterior:8s} budget={budget:3d} agents={n_agents}: ours {o:8.1f} µs/node   "
                  f"treequest {t:8.1f} µs/node   ratio {o / t:.3f}")
    runner_rows = []
    for mode in ("ab_mcts", "t_plus", "iid"):
        r = min((time_runner(args.trees, 60, 2, mode) for _ in range(args.repeats)),
                key=lambda d: d["overhead_us_per_node"])
        runner_rows.append({"mode": mode, "budget": 60, "n_agents": 2, "trees": args.trees,
                            **{k: round(v, 2) for k, v in r.items()}})
        print(f"runner {mode:8s}: overhead {r['overhead_us_per_node']:.1f} µs/node (generation and scoring scripted)")
    out = {
        "benchmark": "search overhead per node, generation and scoring scripted",
        "algorithm": rows,
        "runner": runner_rows,
        "goal": "ours <= 0.5x treequest ABMCTSA time per node",
        "max_ratio": max(r["ratio_ours_over_treequest"] for r in rows),
        "env": {"python": platform.python_version(), "numpy": np.__version__,
                "treequest": getattr(treequest, "__version__", "0.3.3"), "cpus": os.cpu_count(),
                "machine": platform.machine(), "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
                "repeats": args.repeats, "statistic": "median over repeats"},
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
