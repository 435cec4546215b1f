"""Baseline search modes with the same propose/commit interface as AB-MCTS-A (method.md §3 "Other search
modes").

- ``iid``: every expansion is a fresh solution under the root (N independent samples = the vanilla GRPO
  rollout group and best-of-N).
- ``sequential``: one refinement chain; the first node is fresh, every later node refines the newest node.

Agent assignment is round-robin over the expansion index (agent ``k mod n_agents`` writes the k-th node) —
our choice: method.md only says these modes exist; round-robin gives every agent an equal share of a
budget deterministically (no random draw is consumed), which is what a fair baseline needs.
"""
from __future__ import annotations

from mars2.search.ab_mcts import Expansion, TreeSearch
from mars2.search.tree import ROOT_ID


class IIDSearch(TreeSearch):
    """N independent fresh solutions under the root; agents round-robin."""

    mode = "iid"

    def _select(self) -> Expansion:
        k = len(self.tree) + self.pending
        return Expansion(ROOT_ID, k % self.n_agents)


class SequentialSearch(TreeSearch):
    """A single chain: node k+1 refines node k; the first node is fresh; agents round-robin.

    The chain needs the newest node before the next expansion can be proposed, so at most one expansion
    may be pending at a time."""

    mode = "sequential"
    max_pending = 1

    def _select(self) -> Expansion:
        if self.pending:
            raise RuntimeError("sequential search: commit the pending expansion before proposing the next one")
        k = len(self.tree)
        parent = ROOT_ID if k == 0 else self.tree.nodes[-1].id
        return Expansion(parent, k % self.n_agents)
