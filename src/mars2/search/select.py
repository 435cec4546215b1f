"""The final answer of a search (method.md §7, §6.3).

Rule (no reward model): the node with the best public score; ties go to the newest node (highest
``expand_idx``) — the newest of equally good nodes has seen the most refinement.
With reward-model scores ``rm_scores`` (node id → R_θ in [0, 1]):
- ``mode="tiebreak"``: among the best-public-score nodes, the highest R_θ (then the newest);
- ``mode="rerank"``: over all candidates, the highest R_θ, then the best public score, then the newest.
Nodes without an entry in ``rm_scores`` rank below every scored node (our choice).
"""
from __future__ import annotations

from typing import Mapping

from mars2.search.tree import Node, Tree

RM_MODES = ("tiebreak", "rerank")


def candidates(tree: Tree, budget: int | None = None) -> list[Node]:
    """The first ``budget`` real nodes in expand order (all of them when ``budget`` is None)."""
    nodes = tree.nodes[1:]
    return nodes if budget is None else nodes[: max(0, int(budget))]


def final_answer(
    tree: Tree,
    rm_scores: Mapping[int, float] | None = None,
    mode: str = "tiebreak",
    budget: int | None = None,
) -> Node:
    """The chosen node among the first ``budget`` nodes. Raises ``ValueError`` on an empty tree."""
    if mode not in RM_MODES:
        raise ValueError(f"final_answer mode must be one of {RM_MODES}, got {mode!r}")
    nodes = candidates(tree, budget)
    if not nodes:
        raise ValueError(f"tree {tree.problem_id!r} has no nodes to choose from")
    if rm_scores is None:
        return max(nodes, key=lambda n: (n.score, n.id))
    neg = float("-inf")

    def rm(n: Node) -> float:
        return float(rm_scores.get(n.id, neg))

    if mode == "rerank":
        return max(nodes, key=lambda n: (rm(n), n.score, n.id))
    best = max(n.score for n in nodes)
    return max((n for n in nodes if n.score == best), key=lambda n: (rm(n), n.id))
