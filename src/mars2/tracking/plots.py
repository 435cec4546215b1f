"""The plots people expect from the study (design.md "Experiment management"), drawn from run records
(:mod:`mars2.tracking.readers`) with matplotlib's Agg backend (no display needed):

- ``scaling_law.png``: Pass@1 and Pass@1(MCTS) at the end of training per configuration, single → homo →
  hetero, bars = mean over seeds, whiskers = 95 % CI, dots = before RL;
- ``tts_curves.png``: Pass@1(MCTS) against the node budget (``eval/tts/<b>`` of the final evaluation);
- ``eval_curves.png``: held-out Pass@1 / Pass@1(MCTS) against the training round;
- ``training_curves.png``: per agent, mean node reward of its tree nodes against the round (one panel per
  configuration, one line per agent);
- ``diversity.png``: the final evaluation's diversity metrics (``eval/div/*`` or ``eval/diversity/*``) per
  configuration (skipped, with a note, when the runs have none).
"""
from __future__ import annotations

import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from mars2.metrics import mean_ci
from mars2.tracking.compare import diversity_metrics, group_runs, metric_values, short_name, tts_budgets

AGENT_METRIC = re.compile(r"^agent/(?P<agent>.+)/(?P<metric>[^/]+)$")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _ci(vals: Sequence[float]) -> tuple[float, float, float]:
    return mean_ci(vals) if vals else (math.nan, math.nan, math.nan)


def _curve(runs: Sequence[dict[str, Any]], key: str, rows: str) -> tuple[list[float], list[float], list[float], list[float]]:
    """(x, mean, lo, hi) of ``key`` over rounds, averaged over the runs that have the round."""
    by_round: dict[float, list[float]] = defaultdict(list)
    for r in runs:
        for row in r.get(rows) or []:
            v = row.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                by_round[float(row.get("round", 0))].append(float(v))
    xs = sorted(by_round)
    stats = [_ci(by_round[x]) for x in xs]
    return xs, [s[0] for s in stats], [s[1] for s in stats], [s[2] for s in stats]


def scaling_law_chart(groups: list[dict[str, Any]], path: Path,
                      metrics: Sequence[str] = ("eval/pass1", "eval/pass1_mcts")) -> Path | None:
    metrics = [m for m in metrics if any(metric_values(g["runs"], m) for g in groups)]
    if not groups or not metrics:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(groups) * len(metrics)), 4.0))
    width = 0.8 / len(metrics)
    for j, m in enumerate(metrics):
        xs, means, errs, starts = [], [], [], []
        for i, g in enumerate(groups):
            mean, lo, hi = _ci(metric_values(g["runs"], m))
            xs.append(i + (j - (len(metrics) - 1) / 2) * width)
            means.append(mean)
            errs.append(0.0 if math.isnan(lo) else (hi - lo) / 2)
            starts.append(_ci(metric_values(g["runs"], m, "initial"))[0])
        ax.bar(xs, means, width, yerr=errs, capsize=3, label=m.replace("eval/", ""))
        ax.scatter(xs, starts, color="black", s=12, zorder=3, label="before RL" if j == 0 else None)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{g['label']}\n(n={len(g['runs'])})" for g in groups], fontsize=8)
    ax.set_ylabel("held-out pass rate")
    ax.set_title("Scaling law: single → homogeneous → heterogeneous")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def tts_curves(groups: list[dict[str, Any]], path: Path) -> Path | None:
    budgets = tts_budgets([r for g in groups for r in g["runs"]])
    if not budgets:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.0))
    for g in groups:
        stats = [_ci(metric_values(g["runs"], f"eval/tts/{b}")) for b in budgets]
        pts = [(b, s) for b, s in zip(budgets, stats) if not math.isnan(s[0])]
        if not pts:
            continue
        bs, ss = [p[0] for p in pts], [p[1] for p in pts]
        ax.plot(bs, [s[0] for s in ss], marker="o", label=g["label"])
        ax.fill_between(bs, [s[1] for s in ss], [s[2] for s in ss], alpha=0.15)
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets)
    ax.set_xticklabels([str(b) for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("node budget")
    ax.set_ylabel("Pass@1(MCTS)")
    ax.set_title("Test-time scaling (final evaluation)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def eval_curves(groups: list[dict[str, Any]], path: Path,
                metrics: Sequence[str] = ("eval/pass1", "eval/pass1_mcts")) -> Path | None:
    if not any(len(r.get("evals") or []) > 1 for g in groups for r in g["runs"]):
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.0 * len(metrics), 3.8), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for g in groups:
            xs, mean, lo, hi = _curve(g["runs"], m, "evals")
            if xs:
                ax.plot(xs, mean, marker=".", label=g["label"])
                ax.fill_between(xs, lo, hi, alpha=0.15)
        ax.set_xlabel("round")
        ax.set_ylabel(m.replace("eval/", ""))
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle("Held-out evaluation during training")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def agent_names(runs: Sequence[dict[str, Any]], metric: str) -> list[str]:
    names = set()
    for r in runs:
        for row in r.get("history") or []:
            for k in row:
                m = AGENT_METRIC.match(k)
                if m and m.group("metric") == metric:
                    names.add(m.group("agent"))
    return sorted(names)


def training_curves(groups: list[dict[str, Any]], path: Path, metric: str = "reward") -> Path | None:
    panels = [(g, agent_names(g["runs"], metric)) for g in groups]
    panels = [(g, names) for g, names in panels if names]
    if not panels:
        return None
    plt = _plt()
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.4 * rows), squeeze=False)
    for ax, (g, names) in zip(axes.flat, panels):
        for name in names:
            xs, mean, lo, hi = _curve(g["runs"], f"agent/{name}/{metric}", "history")
            ax.plot(xs, mean, marker=".", label=name)
            ax.fill_between(xs, lo, hi, alpha=0.15)
        ax.set_title(g["label"], fontsize=9)
        ax.set_xlabel("round")
        ax.set_ylabel(f"node {metric}")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"Training: per-agent node {metric} (mean over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def diversity_bars(groups: list[dict[str, Any]], path: Path) -> Path | None:
    metrics = diversity_metrics([r for g in groups for r in g["runs"]])
    if not metrics:
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(metrics), figsize=(max(4.0, 1.0 * len(groups)) * len(metrics), 3.8), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        stats = [_ci(metric_values(g["runs"], m)) for g in groups]
        ax.bar(range(len(groups)), [s[0] for s in stats],
               yerr=[0.0 if math.isnan(s[1]) else (s[2] - s[1]) / 2 for s in stats], capsize=3)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([g["label"] for g in groups], fontsize=7, rotation=20)
        ax.set_title(short_name(m), fontsize=9)
    fig.suptitle("Diversity of the final evaluation's candidates")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def make_plots(runs: Sequence[dict[str, Any]], out_dir: str | Path) -> tuple[list[Path], list[str]]:
    """Every plot the runs have data for → (written files, notes about plots skipped for lack of data)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs(runs)
    written, notes = [], []
    for name, fn in (("scaling_law.png", scaling_law_chart), ("tts_curves.png", tts_curves),
                     ("eval_curves.png", eval_curves), ("training_curves.png", training_curves),
                     ("diversity.png", diversity_bars)):
        p = fn(groups, out / name)
        if p is None:
            what = "diversity metrics (eval/div/*, eval/diversity/*)" if name == "diversity.png" else "data"
            notes.append(f"{name}: skipped, the runs have no {what}")
        else:
            written.append(p)
    return written, notes


def run_plots(run_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """The plots of one run (what its MLflow run gets as artifacts)."""
    from mars2.tracking.readers import read_run_dir

    run = read_run_dir(run_dir)
    if run is None:
        return []
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = group_runs([run])
    written = []
    for name, fn in (("tts_curves.png", tts_curves), ("eval_curves.png", eval_curves),
                     ("training_curves.png", training_curves)):
        p = fn(groups, out / name)
        if p is not None:
            written.append(p)
    return written
