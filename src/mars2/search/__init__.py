"""Tree search (method.md §3, §6, §7): the shared tree, Thompson-sampling posteriors, multi-agent
AB-MCTS-A with the T+ GEN discount, iid/sequential baselines, final-answer selection and (de)serialisation.
The runner that grows many trees with a generation backend and the sandbox is ``mars2.rollout.runner``: the
search itself never sees a model or a sandbox.

Submodules are imported lazily here so that ``import mars2.search.tree`` stays cheap for the RL code."""
from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Node": "mars2.search.tree",
    "Tree": "mars2.search.tree",
    "ROOT_ID": "mars2.search.tree",
    "GaussianPosterior": "mars2.search.posteriors",
    "BetaPosterior": "mars2.search.posteriors",
    "make_posterior": "mars2.search.posteriors",
    "Expansion": "mars2.search.ab_mcts",
    "GenDiscount": "mars2.search.ab_mcts",
    "ThompsonState": "mars2.search.ab_mcts",
    "TreeSearch": "mars2.search.ab_mcts",
    "ABMCTSSearch": "mars2.search.ab_mcts",
    "IIDSearch": "mars2.search.baselines",
    "SequentialSearch": "mars2.search.baselines",
    "SearchConfig": "mars2.search.factory",
    "make_tree_search": "mars2.search.factory",
    "final_answer": "mars2.search.select",
    "tree_to_dict": "mars2.search.serialize",
    "tree_from_dict": "mars2.search.serialize",
    "search_to_dict": "mars2.search.serialize",
    "search_from_dict": "mars2.search.serialize",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'mars2.search' has no attribute {name!r}")
