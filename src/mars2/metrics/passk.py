"""Pass metrics of searches (method.md §7) — the only implementation (``mars2.evaluation`` calls these). A node
is correct when it is *solved*: it passes every public and hidden test of its problem (``Evaluation.solved``,
``Node.hidden_pass``; the one definition, in ``mars2.sandbox.types``). Every metric is a mean over problems
(one tree per problem); the ``*_values`` variants return the per-problem numbers, for confidence intervals
over problems; ``pass_at_n_of`` / ``avg_pass1_of`` are the per-problem value of one list of nodes (e.g. one
agent's nodes in a shared tree).

- Pass@1: hidden pass rate of single fresh samples.
- Pass@1(MCTS) = BoN(MCTS): hidden result of the final answer (``search.select.final_answer``).
- Pass@N: some node passes (oracle).
- avg_pass1: hidden pass rate among the nodes whose public score is 1 — per problem, 0 when no node
  passes the public tests (our choice: it is then the expected result of picking a random
  public-passing node, comparable with Pass@1(MCTS)).
- TTS curve: Pass@1(MCTS) when the search is cut after the first b nodes, from one search per problem
  (prefixes of the node order), for each budget b.
"""
from __future__ import annotations

import math
from typing import Iterable, Mapping, Sequence

from mars2.search.select import candidates, final_answer
from mars2.search.tree import Node, Tree

RmScores = Sequence[Mapping[int, float] | None] | None


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def pass_at_1(fresh_hidden_passes: Iterable[float | bool]) -> float:
    """Mean of per-sample (or per-problem averaged) hidden passes of fresh solutions."""
    return _mean([float(v) for v in fresh_hidden_passes])


def pass1_mcts_values(
    trees: Sequence[Tree], budget: int | None = None, rm_scores: RmScores = None, mode: str = "tiebreak"
) -> list[float]:
    out = []
    for i, tree in enumerate(trees):
        if not candidates(tree, budget):
            out.append(0.0)  # nothing generated → nothing correct
            continue
        rm = rm_scores[i] if rm_scores is not None else None
        out.append(float(final_answer(tree, rm, mode=mode, budget=budget).hidden_pass))
    return out


def pass1_mcts(
    trees: Sequence[Tree], budget: int | None = None, rm_scores: RmScores = None, mode: str = "tiebreak"
) -> float:
    """Pass@1(MCTS): mean over trees of the hidden pass of the final answer among the first ``budget`` nodes.
    ``rm_scores[i]`` (node id → R_θ) for tree i switches on reward-model selection (§6.3)."""
    return _mean(pass1_mcts_values(trees, budget, rm_scores, mode))


def pass_at_n_of(nodes: Iterable[Node]) -> float:
    """1.0 when some node of ``nodes`` is solved (oracle), else 0.0."""
    return float(any(n.hidden_pass for n in nodes))


def avg_pass1_of(nodes: Iterable[Node]) -> float:
    """Share of solved nodes among those with public score 1; 0.0 when none has public score 1."""
    ok = [n for n in nodes if n.score >= 1.0]
    return sum(n.hidden_pass for n in ok) / len(ok) if ok else 0.0


def pass_at_n_values(trees: Sequence[Tree], budget: int | None = None) -> list[float]:
    return [pass_at_n_of(candidates(t, budget)) for t in trees]


def pass_at_n(trees: Sequence[Tree], budget: int | None = None) -> float:
    """Pass@N: fraction of trees where some node (of the first ``budget``) passes the hidden tests."""
    return _mean(pass_at_n_values(trees, budget))


def avg_pass1_values(trees: Sequence[Tree], budget: int | None = None) -> list[float]:
    return [avg_pass1_of(candidates(t, budget)) for t in trees]


def avg_pass1(trees: Sequence[Tree], budget: int | None = None) -> float:
    """avg_pass1: per tree, the hidden pass rate among nodes with public score 1 (0 if none); mean over trees."""
    return _mean(avg_pass1_values(trees, budget))


def tts_curve(
    trees: Sequence[Tree], budgets: Sequence[int], rm_scores: RmScores = None, mode: str = "tiebreak"
) -> list[float]:
    """Pass@1(MCTS) at each node budget, from prefixes of the node order of the same searches."""
    return [pass1_mcts(trees, int(b), rm_scores, mode) for b in budgets]
