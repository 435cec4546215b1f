"""The plots people expect from the study (design.md "Experiment management"), drawn from run records
(:mod:`mars2.tracking.readers`) with matplotlib's Agg backend (no display needed):

Every figure says what it shows: readable metric and agent names (:data:`METRIC_LABELS`), what bars and
bands are (mean, 95 % t-interval over n seeds), the evaluation's node budget when the runs record it;
rounds on integer ticks; rates clipped to [0, 1]; a panel without data says "no data".

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

# Readable names for the metric keys (legends, axis labels). Pass@1(MCTS) is the hidden result of the search's
# final answer (best public score), Pass@N the oracle (some node passes), see mars2.metrics.passk.
METRIC_LABELS = {
    "eval/pass1": "Pass@1 (single sample)",
    "eval/pass1_mcts": "Pass@1 of the search's final answer",
    "eval/test_iid/pass1": "Pass@1 on test_iid (single sample)",
    "eval/pass_at_n": "Pass@N (any node correct)",
    "eval/avg_pass1": "hidden pass of public-passing nodes",
    "div/ec": "EC@K: behaviour classes",
    "div/structural": "structural diversity",
    "div/semantic": "semantic distance",
    "div/da": "DA@K: problems with ≥ 2 correct behaviours",
}
# y-axis labels of the diversity panels (and whether the metric is a rate in [0, 1])
DIVERSITY_Y = {"ec": ("distinct behaviour classes among K", False), "structural": ("distinct ASTs / K", True),
               "semantic": ("mean pairwise TF-IDF distance", True), "da": ("share of problems", True)}
NO_DATA = "no data"


def metric_label(metric: str) -> str:
    if metric in METRIC_LABELS:
        return METRIC_LABELS[metric]
    short = short_name(metric)
    if f"div/{short}" in METRIC_LABELS:
        return METRIC_LABELS[f"div/{short}"]
    if metric.startswith("eval/tts/"):
        return f"final answer at {metric.rsplit('/', 1)[1]} nodes"
    return short


def is_rate(metric: str) -> bool:
    """Pass rates and shares live in [0, 1] (clipped there, CI ends included); counts do not."""
    short = short_name(metric)
    if metric.startswith(("eval/diversity/", "eval/div/")):
        return DIVERSITY_Y.get(short, ("", True))[1]
    return metric.startswith("eval/") and not metric.endswith(("seconds", "/nodes", "/k"))


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _ci(vals: Sequence[float], rate: bool = False) -> tuple[float, float, float]:
    m, lo, hi = mean_ci(vals) if vals else (math.nan, math.nan, math.nan)
    if rate and not math.isnan(m):
        m, lo, hi = (min(1.0, max(0.0, v)) for v in (m, lo, hi))
    return m, lo, hi


def _seeds(groups: Sequence[dict[str, Any]]) -> str:
    """"n = 3 seeds" (or "n = 1–3 seeds" when groups differ)."""
    ns = sorted({len(g["runs"]) for g in groups if g["runs"]})
    if not ns:
        return "n = 0 runs"
    n = f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"
    return f"n = {n} seed{'s' if ns[-1] > 1 else ''}"


def _budget(groups: Sequence[dict[str, Any]], key: str = "eval_budget") -> str:
    """"8 nodes per problem" from the runs' configs ("" when unknown)."""
    vals = sorted({r["config"].get(key) for g in groups for r in g["runs"] if r.get("config", {}).get(key)}, key=str)
    if not vals:
        return ""
    return f"{'/'.join(str(v) for v in vals)} nodes per problem"


def _band_note(groups: Sequence[dict[str, Any]], what: str = "bands") -> str:
    return f"{what}: 95 % CI over seeds ({_seeds(groups)})"


def _no_data(ax: Any, why: str = NO_DATA) -> None:
    ax.text(0.5, 0.5, why, transform=ax.transAxes, ha="center", va="center", fontsize=11, color="#888888",
            bbox={"boxstyle": "round", "facecolor": "#f4f4f4", "edgecolor": "#cccccc"})


def _no_data_bars(ax: Any, xs: Sequence[float], values: Sequence[float]) -> None:
    """"no data" where a bar is missing; the whole panel says so when every bar is."""
    if all(math.isnan(v) for v in values):
        _no_data(ax)
        return
    for x, v in zip(xs, values):
        if math.isnan(v):
            ax.text(x, 0.04, NO_DATA, ha="center", va="bottom", fontsize=8, color="#777777",
                    transform=ax.get_xaxis_transform())


def _int_ticks(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _curve(runs: Sequence[dict[str, Any]], key: str, rows: str,
           rate: bool = False) -> tuple[list[float], list[float], list[float], list[float]]:
    """(x, mean, lo, hi) of ``key`` over rounds, averaged over the runs that have the round."""
    by_round: dict[float, list[float]] = defaultdict(list)
    for r in runs:
        for row in r.get(rows) or []:
            v = row.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                by_round[float(row.get("round", 0))].append(float(v))
    xs = sorted(by_round)
    stats = [_ci(by_round[x], rate) for x in xs]
    return xs, [s[0] for s in stats], [s[1] for s in stats], [s[2] for s in stats]


def _save(fig: Any, path: Path) -> Path:
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def scaling_law_chart(groups: list[dict[str, Any]], path: Path,
                      metrics: Sequence[str] = ("eval/pass1", "eval/pass1_mcts")) -> Path | None:
    metrics = [m for m in metrics if any(metric_values(g["runs"], m) for g in groups)]
    if not groups or not metrics:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.5, 1.4 * len(groups) * len(metrics)), 4.3))
    width = 0.8 / len(metrics)
    for j, m in enumerate(metrics):
        xs, means, err_lo, err_hi, starts = [], [], [], [], []
        for i, g in enumerate(groups):
            mean, lo, hi = _ci(metric_values(g["runs"], m), rate=True)
            x = i + (j - (len(metrics) - 1) / 2) * width
            xs.append(x)
            means.append(mean)
            err_lo.append(0.0 if math.isnan(lo) else mean - lo)
            err_hi.append(0.0 if math.isnan(hi) else hi - mean)
            starts.append(_ci(metric_values(g["runs"], m, "initial"), rate=True)[0])
        ax.bar(xs, means, width, yerr=[err_lo, err_hi], capsize=3, label=metric_label(m))
        ax.scatter(xs, starts, color="black", s=12, zorder=3, label="before RL (round 0)" if j == 0 else None)
        _no_data_bars(ax, xs, means)
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels([f"{g['label']}\n(n={len(g['runs'])})" for g in groups], fontsize=8)
    ax.set_ylim(0.0, 1.0)
    ax.set_ylabel("held-out pass rate after training")
    budget = _budget(groups)
    ax.set_title("Scaling law: single → homogeneous → heterogeneous\n"
                 f"bars: mean, whiskers: {_band_note(groups, '')[2:]}" + (f"; eval {budget}" if budget else ""),
                 fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    return _save(fig, path)


def _tts_line(ax, g: dict[str, Any], budgets: Sequence[int], alpha: float, **kw: Any) -> None:
    """One group's TTS curve: mean over seeds of ``eval/tts/<b>`` with its 95 % CI band (budgets without a
    value are left out)."""
    stats = [_ci(metric_values(g["runs"], f"eval/tts/{b}"), rate=True) for b in budgets]
    pts = [(b, st) for b, st in zip(budgets, stats) if not math.isnan(st[0])]
    if not pts:
        return
    bs, ss = [p[0] for p in pts], [p[1] for p in pts]
    line, = ax.plot(bs, [st[0] for st in ss], marker="o", label=f"{g['label']} (n={len(g['runs'])})", **kw)
    ax.fill_between(bs, [st[1] for st in ss], [st[2] for st in ss], alpha=alpha, color=line.get_color())


def _tts_axes(ax, budgets: Sequence[int]) -> None:
    """Log-2 budget axis with a tick per budget, Pass@1 in [0, 1]; "no data" on an empty panel."""
    if not ax.lines:
        _no_data(ax)
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets)
    ax.set_xticklabels([str(b) for b in budgets])
    ax.minorticks_off()
    ax.set_ylim(0.0, 1.0)


def tts_curves(groups: list[dict[str, Any]], path: Path) -> Path | None:
    budgets = tts_budgets([r for g in groups for r in g["runs"]])
    if not budgets:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.0, 4.3))
    for g in groups:
        _tts_line(ax, g, budgets, alpha=0.15)
    _tts_axes(ax, budgets)
    ax.set_xlabel("node budget (nodes per problem, search cut after the first b nodes)")
    ax.set_ylabel("Pass@1 of the search's final answer")
    ax.set_title(f"Test-time scaling at the final evaluation\nlines: mean, {_band_note(groups)}", fontsize=9)
    if ax.lines:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def tts_panels(panels: Sequence[tuple[str, list[dict[str, Any]]]], path: Path) -> Path | None:
    """TTS curves, one panel per team (``panels``: (title, groups)); a group may set ``color`` and ``linestyle``
    (e.g. the same search at two full budgets: solid and dashed). Lines: mean over seeds, bands: 95 % CI."""
    panels = [(t, gs) for t, gs in panels if any(tts_budgets(g["runs"]) for g in gs)]
    if not panels:
        return None
    plt = _plt()
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.7 * rows + 0.5), squeeze=False)
    all_groups = [g for _, gs in panels for g in gs]
    every = sorted({b for g in all_groups for b in tts_budgets(g["runs"])})
    for ax, (title, groups) in zip(axes.flat, panels):
        for g in groups:
            _tts_line(ax, g, tts_budgets(g["runs"]), alpha=0.12, markersize=3,
                      **{k: g[k] for k in ("color", "linestyle") if g.get(k)})
        _tts_axes(ax, every)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("node budget b (first b nodes of the search)", fontsize=8)
        ax.set_ylabel("Pass@1 of the final answer", fontsize=8)
        if ax.lines:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"Test-time scaling per team\nlines: mean, {_band_note(all_groups)}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def eval_curves(groups: list[dict[str, Any]], path: Path,
                metrics: Sequence[str] = ("eval/pass1", "eval/pass1_mcts")) -> Path | None:
    if not any(len(r.get("evals") or []) > 1 for g in groups for r in g["runs"]):
        return None
    plt = _plt()
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.2 * len(metrics), 4.0), squeeze=False)
    for ax, m in zip(axes[0], metrics):
        for g in groups:
            xs, mean, lo, hi = _curve(g["runs"], m, "evals", rate=True)
            if xs:
                line, = ax.plot(xs, mean, marker=".", label=g["label"])
                ax.fill_between(xs, lo, hi, alpha=0.15, color=line.get_color())
        if not ax.lines:
            _no_data(ax)
        _int_ticks(ax)
        ax.set_ylim(0.0, 1.0)
        ax.set_xlabel("training round")
        ax.set_ylabel(metric_label(m))
        ax.set_title(metric_label(m), fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    budget = _budget(groups)
    fig.suptitle("Held-out evaluation during training" + (f" ({budget})" if budget else "")
                 + f"\nlines: mean, {_band_note(groups)}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def agent_names(runs: Sequence[dict[str, Any]], metric: str) -> list[str]:
    names = set()
    for r in runs:
        for row in r.get("history") or []:
            for k in row:
                m = AGENT_METRIC.match(k)
                if m and m.group("metric") == metric:
                    names.add(m.group("agent"))
    return sorted(names)


def agent_label(name: str) -> str:
    """``solver@qwen3_a`` → ``solver (qwen3_a)``: role, then the policy it runs on."""
    role, _, policy = name.partition("@")
    return f"{role} ({policy})" if policy else name


def training_curves(groups: list[dict[str, Any]], path: Path, metric: str = "reward") -> Path | None:
    panels = [(g, agent_names(g["runs"], metric)) for g in groups]
    if not any(names for _, names in panels):
        return None
    plt = _plt()
    cols = min(3, len(panels))
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.8 * cols, 3.6 * rows), squeeze=False)
    for ax, (g, names) in zip(axes.flat, panels):
        for name in names:
            xs, mean, lo, hi = _curve(g["runs"], f"agent/{name}/{metric}", "history")
            line, = ax.plot(xs, mean, marker=".", label=agent_label(name))
            ax.fill_between(xs, lo, hi, alpha=0.15, color=line.get_color())
        if not names:
            _no_data(ax)
        _int_ticks(ax)
        ax.set_title(f"{g['label']} (n={len(g['runs'])})", fontsize=9)
        ax.set_xlabel("training round")
        ax.set_ylabel(f"mean {metric} of the agent's nodes")
        if names:
            ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"Training trees: per-agent node {metric}\nlines: mean over seeds, {_band_note(groups)}",
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def diversity_bars(groups: list[dict[str, Any]], path: Path) -> Path | None:
    metrics = diversity_metrics([r for g in groups for r in g["runs"]])
    if not metrics:
        return None
    order = ("ec", "structural", "semantic", "da")
    metrics = sorted(metrics, key=lambda m: (order.index(short_name(m)) if short_name(m) in order else 9, m))
    plt = _plt()
    cols = min(2, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(max(4.6, 1.3 * len(groups)) * cols, 3.6 * rows + 0.6), squeeze=False)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    all_runs = [r for g in groups for r in g["runs"]]
    for ax, m in zip(axes.flat, metrics):
        short = short_name(m)
        rate = is_rate(m)
        prefix = m[: -len(short)]
        ks = [v for r in all_runs for v in [(r.get("final") or {}).get(prefix + "k")] if isinstance(v, (int, float))]
        k_txt = f"K = {sum(ks) / len(ks):.3g} candidates per problem" if ks else "K = candidates per problem"
        stats = [_ci(metric_values(g["runs"], m), rate=rate) for g in groups]
        means = [s[0] for s in stats]
        ax.bar(range(len(groups)), means,
               yerr=[[0.0 if math.isnan(s[1]) else s[0] - s[1] for s in stats],
                     [0.0 if math.isnan(s[2]) else s[2] - s[0] for s in stats]], capsize=3)
        _no_data_bars(ax, list(range(len(groups))), means)
        ax.set_xlim(-0.6, len(groups) - 0.4)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([f"{g['label']}\n(n={len(g['runs'])})" for g in groups], fontsize=7)
        ax.set_title(f"{metric_label(m)}\n{k_txt}", fontsize=9)
        ax.set_ylabel(DIVERSITY_Y.get(short, (short, rate))[0])
        if rate:
            ax.set_ylim(0.0, 1.0)
    fig.suptitle(f"Diversity of the final evaluation's candidates\nbars: mean, whiskers: "
                 f"{_band_note(groups, '')[2:]}", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


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
