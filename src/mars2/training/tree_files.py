"""The search trees a run keeps on disk (docs/sweeps.md "Browsing the search trees"): every held-out
evaluation's trees as ``<run dir>/trees/eval_round<NNNN>.json``, ``{searcher: [tree_to_dict, ...]}`` with
searcher ``team`` (system mode) or an agent name (agent mode). ``python -m mars2.trees view`` reads them."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping, Sequence

from mars2.search.serialize import tree_to_dict
from mars2.search.tree import Tree


def eval_trees_path(output_dir: Path, round_idx: int) -> Path:
    return Path(output_dir) / "trees" / f"eval_round{round_idx:04d}.json"


def save_eval_trees(output_dir: Path, trees: Mapping[str, Sequence[Tree]], round_idx: int) -> Path:
    """Write the trees of the evaluation after ``round_idx`` rounds; returns the file."""
    path = eval_trees_path(output_dir, round_idx)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({k: [tree_to_dict(t) for t in ts] for k, ts in trees.items()}))
    return path
