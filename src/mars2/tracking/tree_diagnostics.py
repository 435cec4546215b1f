"""Search diagnostics of a run's saved trees (issue 18): where a claim of the paper does not hold, do the
searches refine at all, and does refinement repair?

:func:`summarize` reads ``<run dir>/trees/*.json`` (``{"<searcher>": [tree, ...]}``: ``"team"`` in system mode,
one key per agent in agent mode; a tree is ``{"problem_id", "nodes": [{"id", "parent_id", "depth",
"agent_name", "policy_id", "score", "hidden_pass", ...}]}`` with the virtual root at ``parent_id`` null) and
returns a small JSON-able dict (what the study ledger keeps as ``diagnostics.json``):

- ``depth``: per depth bucket ``"1"``, ``"2"``, ``"3"``, ``"4+"``: ``nodes``, ``score_mean`` (public-test
  score), ``hidden_pass`` (share of nodes that pass every test), and for depth ≥ 2 the refinement rates below;
- refinement (every node of depth ≥ 2, i.e. written from a parent program): ``improved`` = share whose public
  score beats its parent's; ``fixed`` = share that pass where the parent failed, among the ``failing_parent``
  nodes whose parent failed; ``broken`` = share that fail where the parent passed, among ``passing_parent``;
- ``gen`` / ``cont``: expansions that were a fresh generation (a child of the root, depth 1) or a continuation
  of an existing program (deeper), and their shares ``gen_share`` / ``cont_share``;
- ``agents``: the same counts and shares per agent (``agent_name``);
- ``searchers``: the whole summary per searcher key when a file has more than one (agent mode);
- ``initial``: for a training run dir (``eval_round<NNNN>.json`` files), the same for its first evaluation;
  the top level is then its last evaluation (after RL) and ``round`` says which.

Every rate comes with its denominator, so summaries of several seeds can be pooled exactly
(:func:`pool`). Plain JSON reading; no dependency on the search code.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

FORMAT = "mars2.tree_diagnostics/1"
BUCKETS = ("1", "2", "3", "4+")
_ROUND = re.compile(r"eval_round(\d+)\.json$")


def bucket(depth: int) -> str:
    return str(depth) if depth < 4 else "4+"


class _Acc:
    """Counts of one group of nodes (all, one depth bucket, one agent)."""

    __slots__ = ("nodes", "score_sum", "passed", "gen", "cont", "improved", "failing_parent", "fixed",
                 "passing_parent", "broken")

    def __init__(self) -> None:
        for k in self.__slots__:
            setattr(self, k, 0 if k != "score_sum" else 0.0)

    def add(self, score: float, passed: bool, parent: Mapping[str, Any] | None) -> None:
        self.nodes += 1
        self.score_sum += score
        self.passed += int(passed)
        if parent is None:  # a child of the root: a fresh generation
            self.gen += 1
            return
        self.cont += 1
        self.improved += int(score > float(parent.get("score") or 0.0))
        if bool(parent.get("hidden_pass")):
            self.passing_parent += 1
            self.broken += int(not passed)
        else:
            self.failing_parent += 1
            self.fixed += int(passed)

    def out(self, depth_rates: bool = True) -> dict[str, Any]:
        def rate(a: int | float, b: int) -> float | None:
            return round(a / b, 6) if b else None

        d: dict[str, Any] = {"nodes": self.nodes, "score_mean": rate(self.score_sum, self.nodes),
                             "hidden_pass": rate(self.passed, self.nodes)}
        if depth_rates:
            d.update({"gen": self.gen, "cont": self.cont, "gen_share": rate(self.gen, self.nodes),
                      "cont_share": rate(self.cont, self.nodes)})
        d.update({"improved": rate(self.improved, self.cont), "failing_parent": self.failing_parent,
                  "fixed": rate(self.fixed, self.failing_parent), "passing_parent": self.passing_parent,
                  "broken": rate(self.broken, self.passing_parent)})
        return d


def _summary(trees: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    total = _Acc()
    depth = {b: _Acc() for b in BUCKETS}
    agents: dict[str, _Acc] = {}
    n_trees = 0
    problems: set[str] = set()
    for tree in trees:
        n_trees += 1
        problems.add(str(tree.get("problem_id", n_trees)))
        nodes = tree.get("nodes") or []
        by_id = {n.get("id"): n for n in nodes}
        for n in nodes:
            pid = n.get("parent_id")
            if pid is None:  # the virtual root
                continue
            parent = by_id.get(pid)
            is_root_child = parent is None or parent.get("parent_id") is None
            d = n.get("depth")
            if not isinstance(d, int):  # older files: count the parents
                d, p = 1, parent
                while p is not None and p.get("parent_id") is not None:
                    d, p = d + 1, by_id.get(p.get("parent_id"))
            score, passed = float(n.get("score") or 0.0), bool(n.get("hidden_pass"))
            par = None if is_root_child else parent
            total.add(score, passed, par)
            depth[bucket(max(1, d))].add(score, passed, par)
            agents.setdefault(str(n.get("agent_name") or "?"), _Acc()).add(score, passed, par)
    out = {"trees": n_trees, "problems": len(problems), **total.out()}
    out["depth"] = {b: depth[b].out(depth_rates=False) for b in BUCKETS}
    out["agents"] = {a: acc.out() for a, acc in sorted(agents.items())}
    return out


def summarize_files(files: Sequence[Path]) -> dict[str, Any]:
    """The summary of the trees of ``files`` (all searchers pooled, plus ``searchers`` when there are several)."""
    by_searcher: dict[str, list[Mapping[str, Any]]] = {}
    for f in files:
        data = json.loads(Path(f).read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{f}: expected {{searcher: [tree, ...]}}")
        for key, trees in data.items():
            by_searcher.setdefault(str(key), []).extend(t for t in trees or [] if isinstance(t, dict))
    out = {"format": FORMAT, "files": [Path(f).name for f in files],
           **_summary(t for ts in by_searcher.values() for t in ts)}
    if len(by_searcher) > 1:
        out["searchers"] = {k: _summary(ts) for k, ts in sorted(by_searcher.items())}
    return out


def summarize(run_dir: Path) -> dict[str, Any] | None:
    """Diagnostics of the trees saved in ``run_dir/trees/`` (module docstring), or None when there are none.
    Evaluation run dirs (``seed<N>.json``): all seeds pooled. Training run dirs (``eval_round<NNNN>.json``):
    the last evaluation, with the first one as ``initial``."""
    files = sorted(Path(run_dir).glob("trees/*.json"))
    if not files:
        return None
    rounds = sorted((int(m.group(1)), f) for f in files if (m := _ROUND.search(f.name)))
    if rounds:
        out = summarize_files([rounds[-1][1]])
        out["round"] = rounds[-1][0]
        if len(rounds) > 1:
            first = summarize_files([rounds[0][1]])
            first["round"] = rounds[0][0]
            first.pop("format", None)
            out["initial"] = first
        return out
    return summarize_files(files)


# -- pooling summaries (e.g. the seeds of one row) ---------------------------------------------------------------
_RATES = {"score_mean": "nodes", "hidden_pass": "nodes", "gen_share": "nodes", "cont_share": "nodes",
          "improved": "cont", "fixed": "failing_parent", "broken": "passing_parent"}
_COUNTS = ("nodes", "gen", "cont", "failing_parent", "passing_parent", "trees", "problems")


def _pool_flat(parts: Sequence[Mapping[str, Any]], cont_key: str = "cont") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in _COUNTS:
        if any(k in p for p in parts):
            out[k] = sum(int(p.get(k) or 0) for p in parts)
    for k, w in _RATES.items():
        w = cont_key if w == "cont" else w
        num = den = 0.0
        for p in parts:
            v, n = p.get(k), p.get(w)
            if isinstance(v, (int, float)) and isinstance(n, (int, float)) and n:
                num += float(v) * n
                den += n
        if any(k in p for p in parts):
            out[k] = num / den if den else None
    return out


def pool(summaries: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Several summaries (of :func:`summarize`) pooled into one: counts added, rates re-weighted by their
    denominators (exact). None when there are none; summaries holding an ``error`` are skipped."""
    parts = [s for s in summaries if isinstance(s, Mapping) and "error" not in s and s.get("nodes") is not None]
    if not parts:
        return None
    out = _pool_flat(parts)
    out["n"] = len(parts)
    # depth buckets: every node of depth >= 2 is a continuation, so "improved" is over the bucket's nodes
    out["depth"] = {b: _pool_flat([p.get("depth", {}).get(b, {}) for p in parts], cont_key="nodes")
                    for b in BUCKETS}
    names = sorted({a for p in parts for a in (p.get("agents") or {})})
    out["agents"] = {a: _pool_flat([p["agents"][a] for p in parts if a in (p.get("agents") or {})])
                     for a in names}
    return out
