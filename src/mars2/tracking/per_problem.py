"""Per-problem outcomes of every evaluation of a run, for paired comparisons (issue 17.5: same seeds, same
problems → paired bootstrap over problems × seeds, ``mars2.metrics.stats.paired_summary``).

``<run dir>/eval_per_problem.json``, written by the training callback after each periodic evaluation and by
evaluate.py after each evaluation seed::

    {"format": "mars2.eval_per_problem/1",
     "evals": [{"round": 0, "seed": 0,                       # the run's seed (train.py) / eval seed (evaluate.py)
                "problems": {"eval": [ids...], "eval/test_iid": [ids...]},
                "values": {"eval/pass1": [0.0, 1.0, ...], "eval/test_iid/pass1": [...], ...}}, ...]}

``values[key][i]`` is problem ``i`` of the longest ``problems`` prefix of ``key`` (``eval/test_iid/pass1`` →
``eval/test_iid``, every other key → ``eval``); NaN (a metric undefined for a problem) is stored as null. One
entry per (round, seed): a round redone after a resume replaces its entry. Run dirs written before this file
existed have none: comparisons of them fall back to unpaired numbers.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

FILE = "eval_per_problem.json"
FORMAT = "mars2.eval_per_problem/1"


def _clean(v: Any) -> Any:
    x = float(v)
    return None if math.isnan(x) else x


def record(run_dir: str | Path, result: Any, round_idx: int, seed: int) -> Path:
    """Add (or replace) the entry of evaluation ``result`` (an ``EvalResult``: ``values``, ``problem_ids``) at
    ``(round_idx, seed)`` in ``run_dir``'s file; written atomically (temp file + rename)."""
    path = Path(run_dir) / FILE
    data = read(run_dir) or {"format": FORMAT, "evals": []}
    entry = {"round": int(round_idx), "seed": int(seed), "problems": {k: list(v) for k, v in result.problem_ids.items()},
             "values": {k: [_clean(x) for x in v] for k, v in result.values.items()}}
    evals = [e for e in data["evals"] if (e.get("round"), e.get("seed")) != (entry["round"], entry["seed"])]
    evals.append(entry)
    evals.sort(key=lambda e: (e.get("round", 0), e.get("seed", 0)))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"format": FORMAT, "evals": evals}, separators=(",", ":")))
    os.replace(tmp, path)
    return path


def read(run_dir: str | Path) -> dict[str, Any] | None:
    """The file's content, or None when the run dir has none (or it is unreadable)."""
    try:
        data = json.loads((Path(run_dir) / FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not isinstance(data.get("evals"), list):
        return None
    return data


def key_problems(key: str, problems: Mapping[str, Sequence[str]]) -> Sequence[str] | None:
    """The problem ids of metric ``key``: those of its longest prefix in ``problems``."""
    best = None
    for prefix in problems:
        if (key == prefix or key.startswith(prefix + "/")) and (best is None or len(prefix) > len(best)):
            best = prefix
    return problems[best] if best is not None else None


def outcomes(entries: Sequence[Mapping[str, Any]], key: str, when: str = "final") -> dict[int, dict[str, float]]:
    """seed → {problem id → value} of metric ``key`` at the ``final`` (last round) or ``initial`` (first round)
    evaluation of each seed among ``entries`` (of one or several run dirs). Problems whose value is null are
    left out."""
    by_seed: dict[int, list[Mapping[str, Any]]] = {}
    for e in entries:
        if key in (e.get("values") or {}):
            by_seed.setdefault(int(e.get("seed", 0)), []).append(e)
    out: dict[int, dict[str, float]] = {}
    for seed, es in by_seed.items():
        pick = max if when == "final" else min
        e = pick(es, key=lambda x: x.get("round", 0))
        ids = key_problems(key, e.get("problems") or {})
        vals = e["values"][key]
        if ids is None or len(ids) != len(vals):
            continue
        out[seed] = {pid: float(v) for pid, v in zip(ids, vals) if v is not None}
    return out


def paired_grid(a: Mapping[int, Mapping[str, float]], b: Mapping[int, Mapping[str, float]]
                ) -> tuple[list[list[float]], list[list[float]], list[int], list[str]] | str:
    """The (seeds × problems) grids of two rows on their common seeds and the problems every one of those
    seeds has in both rows (in the first row's order), or a one-line reason why they cannot be paired."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return f"no common seeds (seeds {sorted(a)} vs {sorted(b)})"
    first = a[seeds[0]]
    common = [p for p in first if all(p in a[s] and p in b[s] for s in seeds)]
    if not common:
        return "no common problems"
    return [[a[s][p] for p in common] for s in seeds], [[b[s][p] for p in common] for s in seeds], seeds, common


def paired(a_entries: Sequence[Mapping[str, Any]], b_entries: Sequence[Mapping[str, Any]], key: str,
           a_when: str = "final", b_when: str = "final", n_boot: int = 10_000) -> dict[str, Any]:
    """Paired difference a − b of metric ``key`` (``mars2.metrics.stats.paired_summary``: mean, 95 % bootstrap
    CI over seeds × problems, ``p_better``, the t-interval over seeds, counts), or ``{"reason": ...}`` when the
    rows cannot be paired."""
    from mars2.metrics.stats import paired_summary

    grid = paired_grid(outcomes(a_entries, key, a_when), outcomes(b_entries, key, b_when))
    if isinstance(grid, str):
        return {"reason": grid}
    ga, gb, seeds, problems = grid
    out = paired_summary(ga, gb, n_boot=n_boot)
    out["seeds"] = seeds
    return out
