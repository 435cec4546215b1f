"""Tables of sampled tree nodes for the trackers (design.md "Experiment management": problem, agent, depth,
score, code), read from the evaluation trees a run saves as ``<run dir>/trees/eval_round<NNNN>.json``.

Plain JSON reading: no dependency on the search code, so a tracker or compare.py can show trees of any run."""
from __future__ import annotations

import json
import random
import re
from pathlib import Path
from typing import Any

TREE_TABLE_COLUMNS = (
    "round", "search", "problem", "node", "parent", "depth", "agent", "policy", "score", "reward",
    "hidden_pass", "code",
)
MAX_CODE_CHARS = 2000


def tree_files(trees_dir: str | Path) -> list[tuple[int, Path]]:
    """(round, file) of every saved evaluation tree file, by round."""
    out = []
    for f in Path(trees_dir).glob("eval_round*.json"):
        m = re.search(r"eval_round(\d+)\.json$", f.name)
        if m:
            out.append((int(m.group(1)), f))
    return sorted(out)


def tree_node_rows(path: str | Path, round_idx: int) -> list[dict[str, Any]]:
    """One row per real node (the virtual root, id 0, is skipped) of every tree in one file."""
    data = json.loads(Path(path).read_text())
    rows = []
    for search_key, trees in data.items():
        for tree in trees:
            for n in tree.get("nodes", []):
                if n.get("parent_id") is None:  # the virtual root
                    continue
                code = n.get("program") if n.get("program") is not None else n.get("text", "")
                rows.append({
                    "round": round_idx,
                    "search": search_key,
                    "problem": tree.get("problem_id", ""),
                    "node": int(n["id"]),
                    "parent": int(n["parent_id"]),
                    "depth": int(n.get("depth", 0)),
                    "agent": n.get("agent_name", ""),
                    "policy": n.get("policy_id", ""),
                    "score": float(n.get("score", 0.0)),
                    "reward": float(n.get("reward", 0.0)),
                    "hidden_pass": bool(n.get("hidden_pass", False)),
                    "code": (code or "")[:MAX_CODE_CHARS],
                })
    return rows


def sample_tree_nodes(trees_dir: str | Path, n: int, seed: int = 0, rounds: str = "first_last") -> list[dict[str, Any]]:
    """Up to ``n`` node rows sampled (seeded, without replacement) from the first and last evaluation's trees
    (``rounds="all"``: from every evaluation), ordered by (round, search, problem, node) for reading."""
    files = tree_files(trees_dir)
    if not files or n <= 0:
        return []
    if rounds == "first_last":
        files = [files[0]] if len(files) == 1 else [files[0], files[-1]]
    rows: list[dict[str, Any]] = []
    for r, f in files:
        try:
            rows.extend(tree_node_rows(f, r))
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # a truncated file of a killed run: skip it, the table is a convenience
    if len(rows) > n:
        rows = random.Random(seed).sample(rows, n)
    return sorted(rows, key=lambda x: (x["round"], x["search"], x["problem"], x["node"]))
