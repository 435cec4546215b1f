"""The results page of the miniature study (``python study.py``, plan ``sweeps/study/plan.yaml``): tables with
95 % CIs over seeds, the scaling-law chart, TTS curves, diversity bars and training curves, the paper's
numbers for the real models, and a reading of which of the paper's orderings hold — computed from the run
dirs every time, never written by hand.

Ordering verdicts: ``holds`` when the means are in the paper's order, ``holds (significant)`` when in
addition every adjacent pair's 95 % intervals are disjoint, ``does not hold`` otherwise (the table gives the
numbers either way).

Paired differences (issue 17.5): where the run dirs hold per-problem outcomes (``eval_per_problem.json``,
:mod:`mars2.tracking.per_problem`), the Δ columns (final − initial of the same runs) and the tables of
differences between rows (same seeds, same problems) are means with a 95 % paired bootstrap interval over
seeds × problems (``mars2.metrics.stats.paired_summary``), and the orderings get a paired verdict (``holds
(paired, significant)`` when every adjacent step's paired interval lies above 0). Run dirs without them fall back
to the t-interval over seeds of per-seed differences, and the page says so.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Sequence

from mars2.metrics import mean_ci
from mars2.tracking import per_problem
from mars2.tracking.readers import read_run_dir

MAIN = ("grpo", "rs2", "homo", "hetero", "hetero3")
LABELS = {"grpo": "GRPO (single, iid)", "rs2": "RS² (single, tree)", "homo": "homo ×2", "hetero": "hetero ×2",
          "hetero3": "hetero ×3", "hetero_no_shaping": "hetero ×2, shaping=none",
          "hetero_grpo_loss": "hetero ×2, loss=GRPO", "hetero_beta": "hetero ×2, Beta posterior",
          "hetero_kl05": "hetero ×2, KL coef 0.05"}
PAPER = [
    ("Qwen3-8B base", "50.3", "LiveCodeBench v6 Pass@1"),
    ("GRPO (8B)", "52.5", ""),
    ("RS² (8B)", "55.4", ""),
    ("MARS² heterogeneous (8B team)", "58.3", ""),
    ("AReaL-boba-2-14B → MARS²", "58.4 → 64.6", ""),
    ("14B heterogeneous team of 3", "71.2", "Pass@1(MCTS)"),
    ("two 32B models", "77.7", "Pass@1(MCTS)"),
]
DIV = ("div/ec", "div/structural", "div/semantic", "div/da")


def _ci(vals: Sequence[float]) -> tuple[float, float, float] | None:
    vals = [float(v) for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
    return mean_ci(vals) if vals else None


def fmt(ci: tuple[float, float, float] | None, pct: bool = True) -> str:
    if ci is None:
        return "–"
    m, lo, hi = ci
    k, d = (100.0, 1) if pct else (1.0, 2)  # percentage points with 1 decimal; raw values (EC@K, distances) with 2
    if math.isnan(lo) or k * (hi - lo) / 2 < 0.5 * 10 ** -d:  # one seed, or identical values
        return f"{k * m:.{d}f}"
    return f"{k * m:.{d}f} ± {k * (hi - lo) / 2:.{d}f}"


def _train_runs(root: Path, name: str, seeds: Sequence[int]) -> list[dict[str, Any]]:
    out = []
    for s in seeds:
        r = read_run_dir(root / "train" / f"{name}_s{s}")
        if r is not None and r["status"] == "completed":
            r["seed"] = s
            out.append(r)
    return out


def _eval_runs(root: Path, ev: str, run: str, seeds: Sequence[int]) -> list[dict[str, Any]]:
    out = []
    for s in seeds:
        r = read_run_dir(root / "eval" / ev / f"{run}_s{s}")
        if r is not None and r["status"] == "completed":
            r["seed"] = s
            out.append(r)
    return out


def vals(runs: Sequence[dict[str, Any]], key: str, when: str = "final") -> list[float]:
    return [float(r[when][key]) for r in runs if isinstance((r.get(when) or {}).get(key), (int, float))
            and math.isfinite(r[when][key])]


def deltas(runs: Sequence[dict[str, Any]], key: str) -> list[float]:
    """Per-seed final − initial (paired)."""
    out = []
    for r in runs:
        a, b = (r.get("initial") or {}).get(key), (r.get("final") or {}).get(key)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isfinite(a) and math.isfinite(b):
            out.append(float(b) - float(a))
    return out


def ordering(named: Sequence[tuple[str, tuple[float, float, float] | None]]) -> str:
    """Verdict for "named[0] < named[1] < ..." (see module docstring)."""
    present = [(n, c) for n, c in named if c is not None]
    if not present:
        return "not measured"
    if len(present) < len(named):
        missing = [n for n, c in named if c is None]
        return f"incomplete (missing {', '.join(missing)})"
    means = [c[0] for _, c in present]
    if not all(a < b for a, b in zip(means, means[1:])):
        return "does not hold"
    sig = all(not math.isnan(x[2]) and x[2] < y[1] for (_, x), (_, y) in zip(present, present[1:]))
    return "holds (significant)" if sig else "holds (within CIs)"


def _entries(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for r in runs for e in (r.get("per_problem") or [])]


def paired(a_runs: Sequence[dict[str, Any]], b_runs: Sequence[dict[str, Any]], key: str, a_when: str = "final",
           b_when: str = "final") -> dict[str, Any] | None:
    """Paired summary of a − b over seeds × problems (:func:`mars2.tracking.per_problem.paired`), or None when
    either side has no per-problem outcomes or they share no seed / problem."""
    a, b = _entries(a_runs), _entries(b_runs)
    if not a or not b:
        return None
    out = per_problem.paired(a, b, key, a_when, b_when)
    return None if "reason" in out else out


def pfmt(cell: dict[str, Any] | None, pct: bool = True) -> str:
    """A paired difference: ``+3.1 [−1.0, +7.2]`` (percentage points) or ``–``."""
    if cell is None:
        return "–"
    k, d = (100.0, 1) if pct else (1.0, 2)
    return f"{k * cell['mean']:+.{d}f} [{k * cell['ci_low']:+.{d}f}, {k * cell['ci_high']:+.{d}f}]"


def delta(runs: Sequence[dict[str, Any]], key: str) -> str:
    """final − initial of the same runs: paired over seeds × problems where the runs have per-problem outcomes,
    else the t-interval over seeds of the per-seed differences."""
    cell = paired(runs, runs, key, "final", "initial")
    return pfmt(cell) if cell is not None else fmt(_ci(deltas(runs, key)))


def paired_ordering(chain: Sequence[tuple[str, Sequence[dict[str, Any]]]], key: str) -> str:
    """Paired verdict for "chain[0] < chain[1] < ...": every adjacent step's paired difference (final
    evaluations, same seeds and problems) and its 95 % interval."""
    if len(chain) < 2:
        return "not measured"
    cells = [paired(b, a, key) for (_, a), (_, b) in zip(chain, chain[1:])]
    if any(c is None for c in cells):
        return "not paired (no per-problem outcomes)"
    if not all(c["mean"] > 0 for c in cells):
        return "does not hold (paired)"
    if all(c["ci_low"] > 0 for c in cells):
        return "holds (paired, significant)"
    return "holds (paired, some step's CI contains 0)"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *["| " + " | ".join(r) + " |" for r in rows]]


def _group(label: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"label": label, "runs": runs, "config": {}, "seeds": [r.get("seed") for r in runs]}


def write_report(plan: dict[str, Any], root: Path, out_dir: Path, seeds: Sequence[int]) -> Path:
    from mars2.tracking import plots

    out_dir = Path(out_dir)
    img = out_dir / "results"
    img.mkdir(parents=True, exist_ok=True)
    train_names = list(plan["train"]["runs"])
    train = {n: _train_runs(root, n, seeds) for n in train_names}
    evals = {e: {r: _eval_runs(root, e, r, seeds) for r in (spec.get("of") or train_names)}
             for e, spec in ((plan.get("eval") or {}).get("runs") or {}).items()}
    lines = ["# The miniature study: results", ""]
    n_train = sum(len(v) for v in train.values())
    n_eval = sum(len(v) for e in evals.values() for v in e.values())
    wall = sum(float(r.get("wall_s") or 0) for v in train.values() for r in v)
    lines += [
        f"Generated by `python study.py` from `{root.name}/` on {time.strftime('%Y-%m-%d %H:%M')} — "
        f"{n_train} training runs and {n_eval} evaluations completed (plan: `sweeps/study/plan.yaml`, seeds "
        f"{list(seeds)}). Every number is a mean over seeds with its 95 % t-interval (± half-width) in "
        "percentage points; one seed = one independent training run (own RL data order, sampling and search).",
        "",
        "The orderings below are computed from these numbers each time the page is rebuilt.",
        "",
    ]

    # -- 1. training comparison ------------------------------------------------------------------------------
    lines += ["## 1. Training: same data, rounds and evaluation for every paradigm", "",
              "Held-out test split (all problems). Pass@1 = fresh samples at T=1 (mean over the team's agents); "
              "Pass@1(MCTS) = the training run's own evaluation search (AB-MCTS-A, 8 nodes, system mode). "
              "*before* = warm start (round 0), *after* = end of training, Δ = paired difference after − before "
              "(mean [95 % paired bootstrap CI over seeds × problems]; mean ± t-interval over seeds of the per-seed "
              "differences for run dirs without per-problem outcomes).", ""]
    all_train = [r for v in train.values() for r in v]
    iid = [k for k in ("eval/test_iid/pass1",) if vals(all_train, k)]  # minicode's second held-out split
    rows = []
    for n in train_names:
        rs = train[n]
        rows.append([LABELS.get(n, n), str(len(rs)),
                     fmt(_ci(vals(rs, "eval/pass1", "initial"))), fmt(_ci(vals(rs, "eval/pass1"))),
                     delta(rs, "eval/pass1"),
                     fmt(_ci(vals(rs, "eval/pass1_mcts", "initial"))), fmt(_ci(vals(rs, "eval/pass1_mcts"))),
                     delta(rs, "eval/pass1_mcts")]
                    + [c for k in iid for c in (fmt(_ci(vals(rs, k))), delta(rs, k))])
    lines += _table(["run", "seeds", "Pass@1 before", "Pass@1 after", "Δ Pass@1", "MCTS before", "MCTS after",
                     "Δ MCTS"] + [c for _ in iid for c in ("test_iid Pass@1 after", "Δ test_iid Pass@1")], rows)
    lines.append("")
    if not any(r.get("per_problem") for r in all_train):
        lines += ["(These run dirs hold no per-problem outcomes (`eval_per_problem.json`): differences are unpaired, "
                  "t-intervals over seeds.)", ""]
    chain_rows = [n for n in ("grpo", "rs2", "homo", "hetero", "hetero3") if train.get(n)]
    base_name = chain_rows[0] if chain_rows else None
    keys = [("eval/pass1", "Pass@1"), ("eval/pass1_mcts", "Pass@1(MCTS)")] + [(k, "test_iid Pass@1") for k in iid]
    pairs = [(b, a) for a, b in zip(chain_rows, chain_rows[1:])]
    pairs += [(n, base_name) for n in train_names if base_name and n != base_name and train.get(n)
              and (n, base_name) not in pairs]
    if pairs:
        lines += ["### Paired differences between training runs (after training)", "",
                  "Row A − row B on the same seeds and the same held-out problems: mean [95 % CI], paired bootstrap "
                  "over seeds × problems, percentage points (– : no per-problem outcomes).", ""]
        prow = []
        for a, b in pairs:
            cells = [paired(train[a], train[b], k) for k, _ in keys]
            units = next((f"{c['n_seeds']}×{c['n_problems']}" for c in cells if c is not None), "–")
            prow.append([f"{LABELS.get(a, a)} − {LABELS.get(b, b)}", units, *[pfmt(c) for c in cells]])
        lines += _table(["difference", "seeds×problems", *[f"Δ {w}" for _, w in keys]], prow)
        lines.append("")
    main = [n for n in MAIN if n in train]
    order_rows = []
    for key, what in (("eval/pass1", "Pass@1"), ("eval/pass1_mcts", "Pass@1(MCTS)")):
        chain = [n for n in ("grpo", "rs2", "homo", "hetero") if n in train]
        order_rows.append([f"GRPO < RS² < homo < hetero on {what} (after training)",
                           ordering([(n, _ci(vals(train[n], key))) for n in chain])])
        order_rows.append([f"same, on the RL gain Δ {what}",
                           ordering([(n, _ci(deltas(train[n], key))) for n in chain])])
        order_rows.append([f"GRPO < RS² < homo < hetero on {what}, paired steps (after training)",
                           paired_ordering([(n, train[n]) for n in chain], key)])
    groups = [_group(LABELS.get(n, n), train[n]) for n in main if train[n]]
    for name, fn in (("scaling_law.png", plots.scaling_law_chart), ("eval_curves.png", plots.eval_curves),
                     ("training_curves.png", plots.training_curves)):
        if groups and fn(groups, img / name):
            lines += [f"![{name}](results/{name})", ""]

    # -- 2. search at equal budget ---------------------------------------------------------------------------
    modes = [e for e in ("best_of_n", "ab_mcts", "t_plus") if e in evals]
    if modes:
        budget = next((r["config"].get("eval_budget") for e in modes for rs in evals[e].values() for r in rs), "?")
        lines += ["## 2. Evaluation of every trained team at equal node budget", "",
                  f"`evaluate.py ckpt=<run>` on all held-out problems, {budget} nodes per problem, system mode "
                  "(all agents in one tree). Pass@1(MCTS) = hidden pass of the final answer (best public score); "
                  "Pass@N = any node passes (oracle).", ""]
        rows = []
        for n in main:
            rows.append([LABELS.get(n, n)] + [fmt(_ci(vals(evals[e].get(n, []), "eval/pass1_mcts"))) for e in modes]
                        + [fmt(_ci(vals(evals[m].get(n, []), "eval/pass_at_n"))) for m in modes[-1:]])
        lines += _table(["team", *[f"{e} Pass@1(MCTS)" for e in modes], f"{modes[-1]} Pass@N"], rows)
        lines.append("")
        spairs = [(b, a) for a, b in zip(modes, modes[1:])]
        prow = [[LABELS.get(n, n), *[pfmt(paired(evals[a].get(n, []), evals[b].get(n, []), "eval/pass1_mcts"))
                                     for a, b in spairs]] for n in main]
        if spairs and any(c != "–" for r in prow for c in r[1:]):
            lines += ["Paired differences of Pass@1(MCTS) between searches (same team, seeds and problems): mean "
                      "[95 % paired bootstrap CI over seeds × problems], percentage points.", ""]
            lines += _table(["team", *[f"{a} − {b}" for a, b in spairs]], prow)
            lines.append("")
        if len(modes) == 3:
            for n in main:
                order_rows.append([f"best-of-N < AB-MCTS < T+ for {LABELS.get(n, n)}",
                                   ordering([(e, _ci(vals(evals[e].get(n, []), "eval/pass1_mcts"))) for e in modes])])
                order_rows.append([f"best-of-N < AB-MCTS < T+ for {LABELS.get(n, n)}, paired steps",
                                   paired_ordering([(e, evals[e].get(n, [])) for e in modes], "eval/pass1_mcts")])
        tts_groups = [_group(f"{LABELS.get(n, n)} / {e}", evals[e].get(n, [])) for e in ("ab_mcts",) for n in main]
        tts_groups += [_group(f"{LABELS['hetero']} / {e}", evals[e].get("hetero", [])) for e in modes if e != "ab_mcts"]
        tts_groups = [g for g in tts_groups if g["runs"]]
        if tts_groups and plots.tts_curves(tts_groups, img / "tts_curves.png"):
            lines += ["![tts_curves.png](results/tts_curves.png)", ""]

    # -- 3. agent vs system mode -----------------------------------------------------------------------------
    if "ab_mcts_agent" in evals and "ab_mcts" in evals:
        lines += ["## 3. Agent mode vs system mode (AB-MCTS, same budget)", "",
                  "Agent mode: each agent searches alone with the whole budget (team value = mean over agents); "
                  "system mode: the agents share one tree.", ""]
        rows = []
        for n, rs in evals["ab_mcts_agent"].items():
            rows.append([LABELS.get(n, n), fmt(_ci(vals(rs, "eval/pass1_mcts"))),
                         fmt(_ci(vals(evals["ab_mcts"].get(n, []), "eval/pass1_mcts")))])
        lines += _table(["team", "agent mode Pass@1(MCTS)", "system mode Pass@1(MCTS)"], rows)
        lines.append("")

    # -- 4. diversity ----------------------------------------------------------------------------------------
    if "ab_mcts" in evals:
        lines += ["## 4. Diversity of the candidates (AB-MCTS evaluation, method.md §7)", "",
                  "EC@K = distinct behaviour classes on probe inputs; structural = distinct normalised ASTs / K; "
                  "semantic = mean pairwise TF-IDF cosine distance; DA@K = share of problems with ≥ 2 behaviour "
                  "classes among correct candidates.", ""]
        rows = []
        for n in main:
            rs = evals["ab_mcts"].get(n, [])
            rows.append([LABELS.get(n, n)] + [fmt(_ci(vals(rs, f"eval/{d}")), pct=d in ("div/da",))
                                              for d in DIV])
        lines += _table(["team", "EC@K", "structural", "semantic", "DA@K (%)"], rows)
        lines.append("")
        chain = [n for n in ("grpo" if "rs2" not in evals["ab_mcts"] else "rs2", "homo", "hetero") if n in evals["ab_mcts"]]
        for d in ("div/ec", "div/semantic"):
            order_rows.append([f"diversity {d.split('/')[1]}: single < homo < hetero",
                               ordering([(n, _ci(vals(evals["ab_mcts"].get(n, []), f"eval/{d}"))) for n in chain])])
        dgroups = [_group(LABELS.get(n, n), evals["ab_mcts"].get(n, [])) for n in main]
        dgroups = [g for g in dgroups if g["runs"]]
        if dgroups and plots.diversity_bars(dgroups, img / "diversity.png"):
            lines += ["![diversity.png](results/diversity.png)", ""]

    # -- 5. ablations ----------------------------------------------------------------------------------------
    abl = [n for n in train_names if n.startswith("hetero_")]
    if abl and "hetero" in train:
        lines += ["## 5. Ablations of the heterogeneous team (training)", ""]
        rows = []
        for n in ["hetero", *abl]:
            rs = train[n]
            rows.append([LABELS.get(n, n), str(len(rs)), fmt(_ci(vals(rs, "eval/pass1"))),
                         fmt(_ci(deltas(rs, "eval/pass1"))), fmt(_ci(vals(rs, "eval/pass1_mcts"))),
                         fmt(_ci(deltas(rs, "eval/pass1_mcts")))])
        lines += _table(["run", "seeds", "Pass@1 after", "Δ Pass@1", "MCTS after", "Δ MCTS"], rows)
        lines.append("")
    comps = [e for e in ("ab_mcts", "t_plus_feedback_only", "t_plus_discount_only", "t_plus") if e in evals]
    if len(comps) > 2:
        lines += ["## 6. T+ one component at a time (heterogeneous team, evaluation)", ""]
        rows = [[e, fmt(_ci(vals(evals[e].get("hetero", []), "eval/pass1_mcts"))),
                 fmt(_ci(vals(evals[e].get("hetero", []), "eval/pass_at_n")))] for e in comps]
        lines += _table(["search", "Pass@1(MCTS)", "Pass@N"], rows)
        lines.append("")

    # -- orderings and paper anchors ---------------------------------------------------------------------------
    lines += ["## 7. Which of the paper's orderings hold in miniature", ""]
    lines += _table(["ordering", "verdict"], order_rows)
    notes = out_dir / "study_notes.md"
    if notes.is_file():  # the hand-written reading of these numbers (what was tried, what does not hold, why)
        lines += ["", notes.read_text().strip()]
    lines += ["", "## 8. The paper's numbers for the real models (method.md §8)", ""]
    lines += _table(["model / method", "paper", "metric"], [list(r) for r in PAPER])
    lines.append("")
    page = out_dir / "results.md"
    page.write_text("\n".join(lines) + "\n")
    return page
