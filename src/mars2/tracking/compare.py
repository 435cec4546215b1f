"""Comparison of runs (design.md "Experiment management"): group runs that differ only by seed, report each
metric as the mean with a 95 % t-interval over seeds (start → end of training), and order the groups the way
the paper's scaling law reads: vanilla GRPO → RS² → homogeneous → heterogeneous (more agents later).

Runs come from :mod:`mars2.tracking.readers` (run dirs, MLflow, wandb); plots from :mod:`mars2.tracking.plots`.

Paired differences (:func:`paired_table`, ``compare.py --paired-against <row>``): two rows evaluated with the same
seeds on the same problems differ per (seed, problem); the mean of those differences with a paired bootstrap
95 % interval over seeds × problems (``mars2.metrics.stats.paired_summary``) removes what the rows share (a
problem's difficulty, a seed's luck) and is much narrower than two per-row intervals side by side. It needs
the per-problem outcomes of ``eval_per_problem.json`` (:mod:`mars2.tracking.per_problem`); rows without them
(older run dirs, MLflow / wandb) get the difference of the means, marked unpaired, and one line saying so.
"""
from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Sequence

from mars2.metrics import mean_ci
from mars2.tracking import per_problem
from mars2.tracking.readers import read_run_dirs

DEFAULT_METRICS = ("eval/pass1", "eval/pass1_mcts", "eval/pass_at_n")
# Keys that never define a group: the seed is what we average over; the name follows from the rest.
NOT_GROUPING = ("seed", "name")
PARADIGM_ORDER = {"single": 0, "homogeneous": 1, "heterogeneous": 2}


# -- loading ------------------------------------------------------------------------------------------------------
def find_results(paths: Iterable[str | Path], statuses: Sequence[str] | None = ("completed",)) -> list[dict[str, Any]]:
    """Runs of the run dirs under ``paths`` (status filter: None keeps every run)."""
    return [r for r in read_run_dirs(paths) if statuses is None or r["status"] in statuses]


# -- grouping -----------------------------------------------------------------------------------------------------
def group_key(run: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    cfg = run.get("config") or {}
    return tuple(sorted((k, v) for k, v in cfg.items() if k not in NOT_GROUPING and not isinstance(v, (list, dict))))


def label(cfg: dict[str, Any]) -> str:
    """The paper's name for a configuration: GRPO (single + iid), RS² (single + tree), homo×N, hetero×N."""
    paradigm, search, n = cfg.get("paradigm"), cfg.get("search"), cfg.get("n_agents")
    if paradigm == "single":
        return "GRPO" if search == "iid" else ("RS²" if search in ("ab_mcts", None) else f"single/{search}")
    if paradigm in ("homogeneous", "heterogeneous"):
        base = f"{'homo' if paradigm == 'homogeneous' else 'hetero'}×{n}"
        return base if search in ("ab_mcts", None) else f"{base}/{search}"
    return str(cfg.get("name") or "run")


def scaling_order(cfg: dict[str, Any]) -> tuple:
    """single+iid < single+tree < homogeneous < heterogeneous; then team size; then the rest by name."""
    paradigm = cfg.get("paradigm")
    tree = 0 if cfg.get("search") == "iid" else 1
    return (PARADIGM_ORDER.get(paradigm, 9), tree, cfg.get("n_agents") or 0, str(cfg.get("model")),
            cfg.get("train_budget") or 0, str(sorted((k, str(v)) for k, v in cfg.items())))


def group_runs(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Groups of runs differing only by seed, in scaling-law order, each with a unique display label."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in runs:
        groups[group_key(r)].append(r)
    out = []
    for key, rs in groups.items():
        cfg = dict(key)
        out.append({"config": cfg, "runs": rs, "seeds": sorted({r["config"].get("seed") for r in rs}, key=str)})
    out.sort(key=lambda g: scaling_order(g["config"]))
    # labels: the paper's name, plus the keys that vary among groups sharing that name
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for g in out:
        by_label[label(g["config"])].append(g)
    for name, gs in by_label.items():
        varying = sorted({k for g in gs for k in g["config"] if len({str(h["config"].get(k)) for h in gs}) > 1})
        for g in gs:
            extra = ",".join(f"{k}={g['config'].get(k)}" for k in varying)
            g["label"] = f"{name} ({extra})" if extra else name
    return out


def metric_values(runs: Sequence[dict[str, Any]], metric: str, when: str = "final") -> list[float]:
    vals = []
    for r in runs:
        ev = r.get(when) or {}
        v = ev.get(metric)
        if isinstance(v, (int, float)) and math.isfinite(v):
            vals.append(float(v))
    return vals


def compare_table(runs: Sequence[dict[str, Any]], metrics: Sequence[str] = DEFAULT_METRICS) -> list[dict[str, Any]]:
    """One row per group: the label, the grouping config, the number of seeds and for each metric
    ``<metric>@initial`` / ``<metric>@final`` = (mean, lo, hi) of the 95 % CI over seeds."""
    rows = []
    for g in group_runs(runs):
        row: dict[str, Any] = {"label": g["label"], **g["config"], "seeds": len(g["runs"])}
        for m in metrics:
            for when in ("initial", "final"):
                vals = metric_values(g["runs"], m, when)
                if vals:
                    row[f"{m}@{when}"] = mean_ci(vals)
        rows.append(row)
    return rows


def _fmt(v: tuple[float, float, float] | None) -> str:
    if v is None:
        return ""
    mean, lo, hi = v
    half = (hi - lo) / 2
    return f"{mean:.3f} ± {half:.3f}" if half > 1e-9 else f"{mean:.3f}"  # one seed / no spread: no interval


def table_cells(row: dict[str, Any], metrics: Sequence[str]) -> list[str]:
    cells = []
    for m in metrics:
        a, b = row.get(f"{m}@initial"), row.get(f"{m}@final")
        cells.append(f"{_fmt(a)} → {_fmt(b)}" if a is not None and b is not None and a != b else _fmt(b))
    return cells


def print_table(rows: Sequence[dict[str, Any]], metrics: Sequence[str] = DEFAULT_METRICS, file: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mars2 runs: mean ± 95% CI half-width over seeds (start → end of training)")
    table.add_column("run")
    table.add_column("seeds", justify="right")
    for m in metrics:
        table.add_column(short_name(m), justify="right")
    for row in rows:
        table.add_row(row["label"], str(row["seeds"]), *table_cells(row, metrics))
    Console(file=file, width=max(120, 30 + 28 * len(metrics))).print(table)


def markdown_table(rows: Sequence[dict[str, Any]], metrics: Sequence[str] = DEFAULT_METRICS) -> str:
    head = ["run", "seeds", *[short_name(m) for m in metrics]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join([row["label"], str(row["seeds"]), *table_cells(row, metrics)]) + " |")
    return "\n".join(lines) + "\n"


def write_tables(rows: Sequence[dict[str, Any]], metrics: Sequence[str], out_dir: str | Path) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "comparison.md"
    md.write_text(markdown_table(rows, metrics))
    js = out / "comparison.json"
    js.write_text(json.dumps([{k: (list(v) if isinstance(v, tuple) else v) for k, v in r.items()} for r in rows], indent=2))
    return [md, js]


# Team-level diversity metrics (method.md §7) as the evaluation names them: ``eval/div/<name>`` (EC@K,
# structural, semantic, DA@K), also accepted as ``eval/diversity/<name>``. ``…/k`` (candidates per problem)
# is a count, not a diversity measure.
DIVERSITY_PREFIXES = ("eval/diversity/", "eval/div/")


def diversity_metrics(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Team-level diversity metrics present in the runs' final evaluations."""
    keys = {k for r in runs for k in (r.get("final") or {}) if k.startswith(DIVERSITY_PREFIXES)}
    return sorted(k for k in keys if not k.endswith(("_lo", "_hi", "/k")))


def short_name(metric: str) -> str:
    for prefix in (*DIVERSITY_PREFIXES, "eval/"):
        if metric.startswith(prefix):
            return metric[len(prefix):]
    return metric


def tts_budgets(runs: Sequence[dict[str, Any]], prefix: str = "eval/tts/") -> list[int]:
    keys = {k[len(prefix):] for r in runs for k in (r.get("final") or {}) if k.startswith(prefix)}
    return sorted(int(k) for k in keys if k.isdigit())


def extra_split_metrics(runs: Sequence[dict[str, Any]]) -> list[str]:
    """Team Pass@1 of the extra held-out splits (``eval/<split>/pass1``, e.g. ``eval/test_iid/pass1``) present in
    the runs' final evaluations."""
    keys = {k for r in runs for k in (r.get("final") or {})}
    return sorted(k for k in keys if k.startswith("eval/") and k.endswith("/pass1") and k.count("/") == 2)


# -- paired differences ------------------------------------------------------------------------------------------
def find_row(groups: Sequence[dict[str, Any]], name: str) -> dict[str, Any]:
    """The group whose label is ``name``, else the only one whose label contains it (case-insensitive)."""
    for g in groups:
        if g["label"] == name:
            return g
    hits = [g for g in groups if name.lower() in g["label"].lower()]
    if len(hits) == 1:
        return hits[0]
    labels = ", ".join(repr(g["label"]) for g in groups)
    what = "matches several rows" if hits else "matches no row"
    raise ValueError(f"--paired-against {name!r} {what}; rows: {labels}")


def group_entries(group: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-problem entries of all runs of a group (empty: none of its run dirs has them)."""
    return [e for r in group["runs"] for e in (r.get("per_problem") or [])]


def paired_table(runs: Sequence[dict[str, Any]], against: str, metrics: Sequence[str] = DEFAULT_METRICS,
                 when: str = "final", n_boot: int = 10_000) -> tuple[dict[str, Any], list[dict[str, Any]], list[str]]:
    """(baseline group, one row per other group, notes). Each row: ``label`` and per metric either the paired
    summary of row − baseline (``mean``, ``ci_low``, ``ci_high``, ``p_better``, ``n_seeds``, ``n_problems``,
    ``seeds``) or ``{"unpaired": difference of the means over seeds, "reason": why not paired}``. Notes: one
    line per row that has no per-problem outcomes."""
    groups = group_runs(runs)
    base = find_row(groups, against)
    base_entries = group_entries(base)
    rows, notes = [], []
    if not base_entries:
        notes.append(f"{base['label']}: no per-problem outcomes ({per_problem.FILE}) in its run dirs; "
                     "differences are unpaired (difference of the means, no interval)")
    for g in groups:
        if g is base:
            continue
        entries = group_entries(g)
        if not entries and base_entries:
            notes.append(f"{g['label']}: no per-problem outcomes ({per_problem.FILE}) in its run dirs; "
                         "its differences are unpaired (difference of the means, no interval)")
        row: dict[str, Any] = {"label": g["label"], "seeds": len(g["runs"])}
        for m in metrics:
            cell: dict[str, Any] = {}
            if entries and base_entries:
                cell = per_problem.paired(entries, base_entries, m, when, when, n_boot=n_boot)
            if not cell or "reason" in cell:
                a, b = metric_values(g["runs"], m, when), metric_values(base["runs"], m, when)
                if a and b:
                    cell = {"unpaired": sum(a) / len(a) - sum(b) / len(b),
                            "reason": cell.get("reason", "no per-problem outcomes")}
                else:
                    cell = {}
            row[m] = cell
        rows.append(row)
    return base, rows, notes


def paired_cell(cell: dict[str, Any] | None, scale: float = 1.0, digits: int = 3) -> str:
    """``+0.031 [-0.010, +0.072]`` (paired), ``+0.031 (unpaired)``, or empty."""
    if not cell:
        return ""
    if "mean" in cell:
        m, lo, hi = (scale * cell[k] for k in ("mean", "ci_low", "ci_high"))
        return f"{m:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"
    if "unpaired" in cell:
        return f"{scale * cell['unpaired']:+.{digits}f} (unpaired)"
    return ""


def paired_units(row: dict[str, Any], metrics: Sequence[str]) -> str:
    """``seeds×problems`` of the row's first paired metric (e.g. ``3×64``), else ``–``."""
    for m in metrics:
        c = row.get(m) or {}
        if "mean" in c:
            return f"{c['n_seeds']}×{c['n_problems']}"
    return "–"


def paired_title(base_label: str, when: str) -> str:
    return (f"paired differences: row − {base_label} ({when} evaluation); mean [95% CI], paired bootstrap over "
            "seeds × problems")


def print_paired(base: dict[str, Any], rows: Sequence[dict[str, Any]], metrics: Sequence[str], when: str = "final",
                 file: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=paired_title(base["label"], when))
    table.add_column("run")
    table.add_column("seeds×problems", justify="right")
    for m in metrics:
        table.add_column(f"Δ {short_name(m)}", justify="right")
    for row in rows:
        table.add_row(row["label"], paired_units(row, metrics), *[paired_cell(row.get(m)) for m in metrics])
    Console(file=file, width=max(120, 30 + 28 * len(metrics))).print(table)


def paired_markdown(base: dict[str, Any], rows: Sequence[dict[str, Any]], metrics: Sequence[str],
                    when: str = "final") -> str:
    head = ["run", "seeds×problems", *[f"Δ {short_name(m)}" for m in metrics]]
    lines = [f"{paired_title(base['label'], when)}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        lines.append("| " + " | ".join([row["label"], paired_units(row, metrics),
                                        *[paired_cell(row.get(m)) for m in metrics]]) + " |")
    return "\n".join(lines) + "\n"
