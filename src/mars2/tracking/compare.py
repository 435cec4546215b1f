"""Comparison of runs from their `results.json` files (design.md "Experiment management").

Groups runs by (paradigm, n_agents, search, model) and reports each metric as a mean with a 95 % CI over
seeds, at the start (before RL) and at the end of training."""
from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from mars2.metrics import mean_ci

DEFAULT_METRICS = ("eval/pass1", "eval/pass1_mcts", "eval/pass_at_n")
GROUP_KEYS = ("paradigm", "n_agents", "search", "model")


def find_results(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    runs = []
    for p in paths:
        p = Path(p)
        files = [p] if p.is_file() else sorted(p.rglob("results.json"))
        for f in files:
            try:
                data = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if data.get("status") == "completed" and data.get("final"):
                data["_path"] = str(f.parent)
                runs.append(data)
    return runs


def compare_table(runs: Sequence[dict[str, Any]], metrics: Sequence[str] = DEFAULT_METRICS) -> list[dict[str, Any]]:
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[tuple(r["config"].get(k) for k in GROUP_KEYS)].append(r)
    rows = []
    for key, rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        row: dict[str, Any] = dict(zip(GROUP_KEYS, key))
        row["seeds"] = len(rs)
        for m in metrics:
            for when in ("initial", "final"):
                vals = [r[when][m] for r in rs if r.get(when) and m in r[when]]
                if vals:
                    row[f"{m}@{when}"] = mean_ci(vals)
        rows.append(row)
    return rows


def print_table(rows: Sequence[dict[str, Any]], metrics: Sequence[str] = DEFAULT_METRICS) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mars2 runs (mean [95% CI] over seeds; start → end of training)")
    for k in (*GROUP_KEYS, "seeds"):
        table.add_column(k)
    for m in metrics:
        table.add_column(m.replace("eval/", ""), justify="right")

    def fmt(v):
        return "" if v is None else f"{v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}]"

    for row in rows:
        cells = [str(row[k]) for k in (*GROUP_KEYS, "seeds")]
        for m in metrics:
            a, b = row.get(f"{m}@initial"), row.get(f"{m}@final")
            cells.append(f"{fmt(a)} → {fmt(b)}" if a is not None else fmt(b))
        table.add_row(*cells)
    Console().print(table)
