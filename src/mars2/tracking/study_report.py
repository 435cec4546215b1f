"""The results page of the miniature study (``python study.py``, plan ``sweeps/study/plan.yaml``, issue 18),
computed from the finished jobs every time it is built, never written by hand.

Input: a study root in the layout of ``mars2.cli.study`` — usually the ledger ``docs/results/runs/``::

    <root>/train/<run>_s<seed>/                {results.json, eval_per_problem.json, job.json, diagnostics.json}
    <root>/eval/<split>/<eval>/<run>_s<seed>/  the same, one per held-out split (``test``, ``test_iid``)

(an older root with ``<root>/eval/<eval>/<run>_s<seed>/`` is read as split ``test``).

What the page holds, for both held-out splits wherever the plan measures them: raw numbers (mean over seeds
with the 95 % t-interval over seeds), paired differences between rows (same seeds, same problems: mean with a
95 % paired bootstrap interval over seeds × problems, :func:`mars2.tracking.per_problem.paired`), one verdict
line per claim of the paper, the figures, the study's run count, job seconds, machine load and the commits
that produced the rows, the search diagnostics of the saved trees (``diagnostics.json``,
:mod:`mars2.tracking.tree_diagnostics`), and the hand-written reading ``<out>/study_notes.md`` appended.

Verdicts. A claim "A < B < C" is read step by step (B − A, C − B), each step a paired difference:

- ``holds (paired, significant)``: every step's mean is > 0 and its 95 % interval lies above 0;
- ``direction only, not significant (paired: …)``: every step's mean is > 0, but the steps named (with their
  numbers) have intervals reaching 0 — the data do not separate the rows, so this is not a "holds";
- ``does not hold (paired: …)``: the steps named have a mean ≤ 0 (``significant reversal`` when an interval lies
  below 0);
- ``incomplete (missing …)``: a row has no finished run yet; ``not measured (…)``: its runs lack the metric;
- rows without per-problem outcomes fall back to the means and their t-intervals over seeds (:func:`ordering`:
  ``holds (significant)`` when adjacent intervals are disjoint, ``direction only (within CIs)``, ``does not hold``).
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from mars2.metrics import mean_ci
from mars2.tracking import per_problem
from mars2.tracking.readers import read_run_dir

MAIN = ("grpo", "rs2", "homo", "hetero", "hetero3")
CHAIN = ("grpo", "rs2", "homo", "hetero")
LABELS = {"grpo": "GRPO (single, iid)", "rs2": "RS² (single, tree)", "homo": "homo ×2", "hetero": "hetero ×2",
          "hetero3": "hetero ×3", "hetero_no_shaping": "hetero ×2, shaping=none",
          "hetero_grpo_loss": "hetero ×2, loss=GRPO", "hetero_beta": "hetero ×2, Beta posterior",
          "hetero_kl05": "hetero ×2, KL coef 0.05"}
SHORT = {"grpo": "GRPO", "rs2": "RS²", "homo": "homo", "hetero": "hetero", "hetero3": "hetero ×3"}
SEARCHES = ("best_of_n", "ab_mcts", "t_plus")
SEARCH_LABELS = {"best_of_n": "best-of-N", "ab_mcts": "AB-MCTS", "t_plus": "T+", "ab_mcts_agent": "AB-MCTS, agent mode",
                 "t_plus_feedback_only": "T+ feedback only", "t_plus_discount_only": "T+ discount only"}
COMPONENTS = ("t_plus_feedback_only", "t_plus_discount_only")
TTS_BUDGETS = (8, 16, 32)
PAPER = [
    ("Qwen3-8B base", "50.3", "LiveCodeBench v6 Pass@1"),
    ("GRPO (8B)", "52.5", ""),
    ("RS² (8B)", "55.4", ""),
    ("MARS² heterogeneous (8B team)", "58.3", ""),
    ("AReaL-boba-2-14B → MARS²", "58.4 → 64.6", ""),
    ("14B heterogeneous team of 3", "71.2", "Pass@1(MCTS)"),
    ("two 32B models", "77.7", "Pass@1(MCTS)"),
]
CLAIMS = (("1", "RL ceiling: GRPO < RS² < homo < hetero (and hetero ×3), after RL and in RL gain"),
          ("2", "Test-time scaling: best-of-N < AB-MCTS < T+ at equal node budgets, per team"),
          ("3", "Policy diversity: single < homo < hetero"),
          ("4", "Agent vs system mode: the shared tree beats each agent alone"),
          ("5", "Ablations against their base rows"))
DIV = ("div/ec", "div/structural", "div/semantic", "div/da")
DIV_CLAIM = (("div/ec", "EC@K"), ("div/structural", "structural"), ("div/semantic", "semantic"))
N_BOOT = 10_000


# -- numbers over seeds --------------------------------------------------------------------------------------------
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
    """Unpaired verdict for "named[0] < named[1] < ..." on means and t-intervals over seeds (module docstring)."""
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
    return "holds (significant)" if sig else "direction only (within CIs)"


# -- paired differences --------------------------------------------------------------------------------------------
def _entries(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for r in runs for e in (r.get("per_problem") or [])]


def _outcomes(runs: Sequence[dict[str, Any]], key: str, when: str = "final", gain: bool = False
              ) -> dict[int, dict[str, float]]:
    """seed → {problem → value} (``gain``: final − initial of the same problem)."""
    ent = _entries(runs)
    if not gain:
        return per_problem.outcomes(ent, key, when)
    fin, ini = per_problem.outcomes(ent, key, "final"), per_problem.outcomes(ent, key, "initial")
    return {s: {p: v - ini[s][p] for p, v in fin[s].items() if p in ini[s]} for s in fin if s in ini}


@dataclass(frozen=True)
class Side:
    """One side of a comparison: runs of a row, the metric, initial/final evaluation, or the RL gain."""

    runs: tuple
    key: str
    when: str = "final"
    gain: bool = False

    def values(self) -> list[float]:
        return deltas(self.runs, self.key) if self.gain else vals(self.runs, self.key, self.when)


def side(runs: Sequence[dict[str, Any]], key: str, when: str = "final", gain: bool = False) -> Side:
    return Side(tuple(runs), key, when, gain)


_CACHE: dict[tuple, dict[str, Any] | None] = {}


def diff(a: Side, b: Side, n_boot: int = N_BOOT) -> dict[str, Any] | None:
    """a − b: paired over seeds × problems where both sides have per-problem outcomes on common seeds and
    problems (``paired: True``, the fields of ``mars2.metrics.stats.paired_summary``), else the difference of
    the means over seeds (``paired: False``, no interval); None when a side has no value."""
    ck = (tuple(id(r) for r in a.runs), a.key, a.when, a.gain, tuple(id(r) for r in b.runs), b.key, b.when, b.gain,
          n_boot)
    if ck in _CACHE:
        return _CACHE[ck]
    out: dict[str, Any] | None = None
    oa = _outcomes(a.runs, a.key, a.when, a.gain)
    ob = _outcomes(b.runs, b.key, b.when, b.gain)
    grid = per_problem.paired_grid(oa, ob) if oa and ob else "no per-problem outcomes"
    if not isinstance(grid, str):
        from mars2.metrics.stats import paired_summary

        ga, gb, seeds, _ = grid
        out = {**paired_summary(ga, gb, n_boot=n_boot), "seeds": seeds, "paired": True}
    else:
        va, vb = a.values(), b.values()
        if va and vb:
            out = {"mean": sum(va) / len(va) - sum(vb) / len(vb), "paired": False, "reason": grid,
                   "n_seeds": min(len(va), len(vb))}
    _CACHE[ck] = out
    return out


def paired(a_runs: Sequence[dict[str, Any]], b_runs: Sequence[dict[str, Any]], key: str, a_when: str = "final",
           b_when: str = "final") -> dict[str, Any] | None:
    """Paired summary of a − b over seeds × problems, or None when the rows cannot be paired."""
    c = diff(side(a_runs, key, a_when), side(b_runs, key, b_when))
    return c if c is not None and c["paired"] else None


def pfmt(cell: dict[str, Any] | None, pct: bool = True) -> str:
    """A difference: ``+3.1 [−1.0, +7.2]`` (paired, percentage points), ``+3.1 (unpaired)`` or ``–``."""
    if cell is None:
        return "–"
    k, d = (100.0, 1) if pct else (1.0, 2)
    if not cell.get("paired", True):
        return f"{k * cell['mean']:+.{d}f} (unpaired)"
    return f"{k * cell['mean']:+.{d}f} [{k * cell['ci_low']:+.{d}f}, {k * cell['ci_high']:+.{d}f}]"


def units(cells: Sequence[dict[str, Any] | None]) -> str:
    return next((f"{c['n_seeds']}×{c['n_problems']}" for c in cells if c is not None and c.get("paired")), "–")


def delta(runs: Sequence[dict[str, Any]], key: str) -> str:
    """final − initial of the same runs: paired over seeds × problems where the runs have per-problem outcomes,
    else the t-interval over seeds of the per-seed differences."""
    cell = paired(runs, runs, key, "final", "initial")
    return pfmt(cell) if cell is not None else fmt(_ci(deltas(runs, key)))


def steps_verdict(steps: Sequence[tuple[str, dict[str, Any]]], pct: bool = True) -> str:
    """Paired verdict of claims "every step > 0" (module docstring)."""
    rev = [(n, c) for n, c in steps if c["mean"] <= 0]
    if rev:
        sig = any(c["ci_high"] < 0 for _, c in rev)
        return (f"does not hold (paired{', significant reversal' if sig else ''}: "
                + "; ".join(f"{n} = {pfmt(c, pct)}" for n, c in rev) + ")")
    if any(c["ci_low"] <= 0 for _, c in steps):
        return ("direction only, not significant (paired: "
                + "; ".join(f"{n} = {pfmt(c, pct)}" for n, c in steps if c["ci_low"] <= 0) + ")")
    return "holds (paired, significant)"


def verdict(pairs: Sequence[tuple[str, str, Side, Side]], pct: bool = True, n_boot: int = N_BOOT) -> str:
    """Verdict of "hi > lo" for every (hi label, lo label, hi side, lo side): paired where every pair can be,
    else the unpaired fallback on means (:func:`ordering` of each pair)."""
    if not pairs:
        return "not measured"
    missing = list(dict.fromkeys(n for hn, ln, h, lo in pairs for n, s in ((ln, lo), (hn, h)) if not s.runs))
    if missing:
        return f"incomplete (missing {', '.join(missing)})"
    unmeasured = list(dict.fromkeys(f"{n}: {s.key}" for hn, ln, h, lo in pairs for n, s in ((ln, lo), (hn, h))
                                    if not s.values()))
    if unmeasured:
        return f"not measured ({', '.join(unmeasured)})"
    cells = [(f"{hn} − {ln}", diff(h, lo, n_boot)) for hn, ln, h, lo in pairs]
    if all(c is not None and c["paired"] for _, c in cells):
        return steps_verdict(cells, pct)
    parts = [ordering([(ln, _ci(lo.values())), (hn, _ci(h.values()))]) for hn, ln, h, lo in pairs]
    if any(p == "does not hold" for p in parts):
        return "does not hold"
    return "holds (significant)" if all(p == "holds (significant)" for p in parts) else "direction only (within CIs)"


def chain_pairs(chain: Sequence[tuple[str, Side]]) -> list[tuple[str, str, Side, Side]]:
    """"c0 < c1 < c2" → the adjacent steps (c1 > c0, c2 > c1)."""
    return [(hn, ln, h, lo) for (ln, lo), (hn, h) in zip(chain, chain[1:])]


def paired_ordering(chain: Sequence[tuple[str, Sequence[dict[str, Any]]]], key: str) -> str:
    """Paired verdict for "chain[0] < chain[1] < ..." on the final evaluations (kept for callers of v1)."""
    if len(chain) < 2:
        return "not measured"
    if any(paired(b, a, key) is None for (_, a), (_, b) in zip(chain, chain[1:])):
        return "not paired (no per-problem outcomes)"
    return verdict(chain_pairs([(n, side(rs, key)) for n, rs in chain]))


# -- reading the study ---------------------------------------------------------------------------------------------
def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _read(d: Path, seed: int) -> dict[str, Any] | None:
    r = read_run_dir(d)
    if r is None or r["status"] != "completed":
        return None
    r["seed"] = seed
    r["dir"] = d
    # pair by the run's seed (its dir name): re-key the entries of a run dir with one evaluation seed
    ent = r.get("per_problem") or []
    if ent and len({e.get("seed") for e in ent}) == 1:
        r["per_problem"] = [{**e, "seed": seed} for e in ent]
    r["job"] = _read_json(d / "job.json")
    r["diag"] = _read_json(d / "diagnostics.json")
    try:  # the commit the job recorded itself (results.json git_sha), without parsing the file a second time
        m = _GIT_SHA.search((d / "results.json").read_text())
    except OSError:
        m = None
    job = r["job"] if isinstance(r["job"], dict) else {}
    r["commit"] = m.group(1)[:7] if m else (str(job["commit"]) if job.get("commit") else None)
    return r


_GIT_SHA = re.compile(r'"git_sha":\s*"([0-9a-f]{7,40})"')


def _plan_budget(plan: Mapping[str, Any], name: str) -> int | None:
    ev = plan.get("eval") or {}
    spec = (ev.get("runs") or {}).get(name) or {}
    for args in (spec.get("args") or [], ev.get("common") or []):
        for a in args:
            if isinstance(a, str) and a.startswith("eval.budget="):
                try:
                    return int(a.split("=", 1)[1])
                except ValueError:
                    return None
    return None


class Study:
    """Every finished run of a plan under a study root (train and evaluations, per split)."""

    def __init__(self, plan: Mapping[str, Any], root: Path, seeds: Sequence[int]):
        self.plan, self.root, self.seeds = plan, Path(root), list(seeds)
        self.train_names = list(plan["train"]["runs"])
        ev = plan.get("eval") or {}
        self.splits = list(ev.get("splits") or ["test"])
        self.eval_specs = dict(ev.get("runs") or {})
        self.train = {n: [r for s in self.seeds if (r := _read(self.root / "train" / f"{n}_s{s}", s))]
                      for n in self.train_names}
        self.evals: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {}
        self.planned_evals = 0
        for name, spec in self.eval_specs.items():
            for split in spec.get("splits") or self.splits:
                of = spec.get("of") or self.train_names
                self.planned_evals += len(of) * len(self.seeds)
                self.evals[(split, name)] = {run: [r for s in self.seeds if (r := self._eval(split, name, run, s))]
                                             for run in of}
        all_splits = [s for spec in self.eval_specs.values() for s in (spec.get("splits") or self.splits)]
        self.eval_splits = list(dict.fromkeys(self.splits + all_splits))
        # training runs measure Pass@1 on their extra held-out splits (eval/<split>/pass1) whatever the plan says
        extra = sorted({k.split("/")[1] for v in self.train.values() for r in v for k in (r.get("final") or {})
                        if k.startswith("eval/") and k.endswith("/pass1") and k.count("/") == 2})
        self.train_splits = list(dict.fromkeys(self.eval_splits + extra))

    def _eval(self, split: str, name: str, run: str, seed: int) -> dict[str, Any] | None:
        d = self.root / "eval" / split / name / f"{run}_s{seed}"
        if not d.is_dir() and split == "test":  # v1 layout: eval/<name>/<run>_s<seed>
            d = self.root / "eval" / name / f"{run}_s{seed}"
        return _read(d, seed)

    def ev(self, split: str, name: str, run: str) -> list[dict[str, Any]]:
        return (self.evals.get((split, name)) or {}).get(run, [])

    def has_eval(self, split: str, name: str) -> bool:
        return (split, name) in self.evals

    def all_runs(self) -> list[dict[str, Any]]:
        return [r for v in self.train.values() for r in v] + [r for e in self.evals.values() for v in e.values()
                                                               for r in v]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *["| " + " | ".join(r) + " |" for r in rows]]


def _group(label: str, runs: Sequence[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"label": label, "runs": list(runs), "config": {}, "seeds": [r.get("seed") for r in runs], **extra}


def lab(n: str) -> str:
    return LABELS.get(n, n)


def vlab(n: str) -> str:
    """A row's name in verdict lines: the claim's short name (``RS² − GRPO``), else its label."""
    return SHORT.get(n, lab(n))


def split_tag(split: str) -> str:
    """Verdict labels on the first split are unmarked; those on other splits end in ``[split]``."""
    return "" if split == "test" else f" [{split}]"


def train_keys(split: str) -> list[tuple[str, str]]:
    """Metrics a training run measures on a split: test → Pass@1 and Pass@1(MCTS); others → Pass@1."""
    if split == "test":
        return [("eval/pass1", "Pass@1"), ("eval/pass1_mcts", "Pass@1(MCTS)")]
    return [(f"eval/{split}/pass1", "Pass@1")]


# -- the page ------------------------------------------------------------------------------------------------------
class Page:
    def __init__(self, study: Study, img: Path, n_boot: int):
        self.s, self.img, self.n_boot = study, img, n_boot
        self.lines: list[str] = []
        self.verdicts: list[tuple[str, str, str]] = []  # (claim number, label, verdict)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        if rows:
            self.lines += _table(header, rows) + [""]

    def claim(self, num: str, label: str, v: str) -> None:
        self.verdicts.append((num, label, v))
        self.lines.append(f"- **{label}**: {v}")

    def figure(self, name: str, fn: Callable[..., Any], *args: Any, caption: str = "") -> None:
        try:
            ok = fn(*args, self.img / name)
        except Exception as e:  # noqa: BLE001 - a figure must not lose the page
            self.add(f"({name}: not drawn, {type(e).__name__}: {e})", "")
            return
        if ok:
            self.add(f"![{name}](results/{name})", "")
            if caption:
                self.add(caption, "")

    def d(self, a: Side, b: Side) -> dict[str, Any] | None:
        return diff(a, b, self.n_boot)

    def v(self, pairs: Sequence[tuple[str, str, Side, Side]], pct: bool = True) -> str:
        return verdict(pairs, pct, self.n_boot)


def _header(page: Page, out_dir: Path) -> list[str]:
    s = page.s
    n_train = sum(len(v) for v in s.train.values())
    n_eval = sum(len(v) for e in s.evals.values() for v in e.values())
    planned_train = len(s.train_names) * len(s.seeds)
    jobs = [r["job"] for r in s.all_runs() if isinstance(r.get("job"), dict)]
    secs = sum(float(j.get("seconds") or 0.0) for j in jobs)
    loads = [j["loadavg"] for j in jobs if isinstance(j.get("loadavg"), list) and len(j["loadavg"]) == 3]
    lines = ["# The miniature study (v2): results", ""]
    done = n_train + n_eval
    planned = planned_train + s.planned_evals
    status = "complete" if done >= planned else f"**incomplete: {done} of {planned} jobs finished**"
    lines += [
        f"Generated by `python study.py --stages report` from `{s.root.name}/` on {time.strftime('%Y-%m-%d %H:%M %Z')}"
        f" — {n_train}/{planned_train} training runs and {n_eval}/{s.planned_evals} evaluations finished "
        f"({status}; plan `sweeps/study/plan.yaml`, seeds {s.seeds}, held-out splits {s.train_splits}). Every number "
        "below is computed from those runs when the page is built.", ""]
    if jobs:
        t_end, t_start = [], []
        for j in jobs:
            try:
                end = datetime.strptime(str(j.get("finished")), "%Y-%m-%dT%H:%M:%S%z").timestamp()
            except ValueError:
                continue
            t_end.append(end)
            t_start.append(end - float(j.get("seconds") or 0.0))
        span = ""
        if t_end:
            busy, sessions = _busy_time(list(zip(t_start, t_end)))
            span = (f"; the study ran (some job in flight) for {busy / 3600:.2f} h of wall clock in {sessions} "
                    f"stretch(es) without a gap of more than 30 min")
        cpu = [float(j["cpu_s"]) for j in jobs if j.get("cpu_s") is not None]
        if cpu:
            span += (f"; {sum(cpu) / 3600:.2f} CPU-h in the {len(cpu)} jobs that measured theirs "
                     f"(≈ {sum(cpu) / 2 / 3600:.2f} h on 2 idle cores of the machines that ran them)")
        load = ""
        if loads:
            l1 = [x[0] for x in loads]
            l15 = [x[2] for x in loads]
            load = (f"; machine load average when the jobs finished: 1-min mean {sum(l1) / len(l1):.2f} "
                    f"(min {min(l1):.2f}, max {max(l1):.2f}), 15-min mean {sum(l15) / len(l15):.2f}")
        lines += [f"**Time and load** (from the ledger's `job.json` files of {len(jobs)} jobs): "
                  f"{secs / 3600:.2f} h of job time in total{span}{load}.", ""]
    by_commit: dict[str, list[str]] = {}
    for r in s.all_runs():
        rel = r["dir"].relative_to(s.root).parts
        row = rel[1].rsplit("_s", 1)[0] if rel[0] == "train" else (f"{rel[2]}@{rel[1]}" if len(rel) == 4 else rel[1])
        by_commit.setdefault(str(r.get("commit") or "unknown"), []).append(row)
    if by_commit:
        rows = []
        for c, names in sorted(by_commit.items(), key=lambda kv: -len(kv[1])):
            uniq = sorted(set(names))
            rows.append([f"`{c}`", str(len(names)), ", ".join(uniq[:12]) + (" …" if len(uniq) > 12 else "")])
        lines += ["Commits that produced the rows (the `git_sha` each job recorded in its results.json, else its "
                  "`job.json` commit):", ""]
        lines += _table(["commit", "jobs", "rows (train run, or evaluation@split)"], rows) + [""]
    if not jobs:
        lines += ["(No `job.json` files: the study's job time and load are not known for this root.)", ""]
    lines += warm_start_lines(s)
    return lines


def _busy_time(intervals: Sequence[tuple[float, float]], gap: float = 1800.0) -> tuple[float, int]:
    """Length of the union of [start, end] intervals (seconds) and the number of stretches separated by more
    than ``gap`` seconds with nothing running (e.g. sessions)."""
    busy, stretches, cur_s, cur_e = 0.0, 0, None, None
    for a, b in sorted(intervals):
        if cur_e is None or a > cur_e:
            if cur_e is not None:
                busy += cur_e - cur_s
                stretches += a - cur_e > gap
            cur_s, cur_e = a, b
        else:
            cur_e = max(cur_e, b)
    if cur_e is not None:
        busy += cur_e - cur_s
        stretches += 1
    return busy, stretches


def warm_start_fingerprints(study: "Study") -> dict[tuple[str, str], list[str]]:
    """(policy, warm start) → the training runs (``<row>_s<seed>``) that started from it. A warm start is named by
    its cache key and the final loss of its 300 steps: the key is the same on every machine, the loss is not
    (the floating point of another CPU moves it after a few steps), so two values of one key are two different
    starting policies."""
    out: dict[tuple[str, str], list[str]] = {}
    for name, runs in study.train.items():
        for r in runs:
            for pid, w in sorted((r.get("warm_start") or {}).items()):
                if not isinstance(w, dict) or w.get("final_loss") is None:
                    continue
                fp = f"{w.get('key') or '?'} / loss {float(w['final_loss']):.6g}"
                out.setdefault((pid, fp), []).append(f"{name}_s{r['seed']}")
    return out


def warm_start_lines(study: "Study") -> list[str]:
    fps = warm_start_fingerprints(study)
    if not fps:
        return []
    rows = [[f"`{pid}`", f"`{fp}`", str(len(runs)), ", ".join(sorted(runs)[:14]) + (" …" if len(runs) > 14 else "")]
            for (pid, fp), runs in sorted(fps.items())]
    shared = all(len([1 for (p, _) in fps if p == pid]) == 1 for pid, _ in fps)
    return ["Warm starts (the supervised starting policy of each training run, per policy): "
            + ("every run of a policy started from the same one." if shared else
               "**more than one per policy** — runs done on different machines started from slightly different "
               "policies (same data, steps and key; another CPU's floating point), so a paired difference between "
               "two rows of one seed may include a difference of starting policy; it stays unbiased over seeds, "
               "with more variance."), ""] + _table(["policy", "warm start (key / final loss)", "runs", "which"],
                                                    rows) + [""]


def _training(page: Page) -> None:
    s = page.s
    tb = next((r["config"].get("eval_budget") for v in s.train.values() for r in v
               if (r.get("config") or {}).get("eval_budget")), None)
    page.add("## 1. RL ceiling: training every paradigm on the same data, rounds and evaluation", "",
             "Pass@1 = fresh samples at T=1 (team: mean over its agents); Pass@1(MCTS) = the training run's own "
             f"evaluation search (AB-MCTS, system mode{f', {tb} nodes' if tb else ''}; `test` only: the runs measure "
             "the other split by fresh samples). "
             "*before* = warm start (round 0), *after* = end of RL, Δ = after − before of the same runs. The last "
             "column is the AB-MCTS evaluation of the trained team at the plan's budget (section 2), after RL only. "
             "Raw numbers: mean ± 95 % t-interval over seeds; differences: mean [95 % paired bootstrap CI over "
             "seeds × problems], percentage points.", "")
    all_train = [r for v in s.train.values() for r in v]
    if all_train and not any(r.get("per_problem") for r in all_train):
        page.add("(These run dirs hold no per-problem outcomes (`eval_per_problem.json`): differences are unpaired, "
                 "t-intervals over seeds.)", "")
    main = [n for n in MAIN if n in s.train]
    budget = _plan_budget(s.plan, "ab_mcts")
    for split in s.train_splits:
        keys = train_keys(split)
        has_ab = s.has_eval(split, "ab_mcts")
        page.add(f"### Split `{split}`", "")
        rows = []
        for n in s.train_names:
            rs = s.train[n]
            row = [lab(n), str(len(rs))]
            for k, _ in keys:
                row += [fmt(_ci(vals(rs, k, "initial"))), fmt(_ci(vals(rs, k))), delta(rs, k)]
            if has_ab:
                row.append(fmt(_ci(vals(s.ev(split, "ab_mcts", n), "eval/pass1_mcts"))) if n in
                           s.evals[(split, "ab_mcts")] else "·")
            rows.append(row)
        head = ["run", "seeds"]
        for _, w in keys:
            short = "MCTS" if w == "Pass@1(MCTS)" else w
            head += [f"{short} before", f"{short} after", f"Δ {short}"]
        if has_ab:
            head.append(f"AB-MCTS eval Pass@1(MCTS){f' ({budget} nodes)' if budget else ''}")
        page.table(head, rows)

        pairs = [(b, a) for a, b in zip([n for n in CHAIN if n in s.train], [n for n in CHAIN if n in s.train][1:])]
        pairs += [(x, y) for x, y in (("hetero3", "homo"), ("hetero3", "hetero")) if x in s.train and y in s.train]
        base = next((n for n in CHAIN if n in s.train), None)
        pairs += [(n, base) for n in main if base and n != base and (n, base) not in pairs]
        prow = []
        for a, b in pairs:
            cells = []
            for k, _ in keys:
                cells += [page.d(side(s.train[a], k), side(s.train[b], k)),
                          page.d(side(s.train[a], k, gain=True), side(s.train[b], k, gain=True))]
            if has_ab:
                cells.append(page.d(side(s.ev(split, "ab_mcts", a), "eval/pass1_mcts"),
                                    side(s.ev(split, "ab_mcts", b), "eval/pass1_mcts")))
            prow.append([f"{lab(a)} − {lab(b)}", units(cells), *[pfmt(c) for c in cells]])
        head = ["difference", "seeds×problems"]
        for _, w in keys:
            head += [f"Δ {w} after", f"Δ of RL gains {w}"]
        if has_ab:
            head.append("Δ AB-MCTS eval Pass@1(MCTS)")
        if prow:
            page.add(f"Paired differences between training runs (`{split}`): row A − row B, same seeds and "
                     "problems.", "")
            page.table(head, prow)

        page.add(f"Verdicts, claim 1 (`{split}`):", "")
        for top in ("hetero", "hetero3"):
            if top not in s.train:
                continue
            chain = [n for n in CHAIN if n != "hetero" and n in s.train] + [top]  # the rows the plan trains
            if len(chain) < 2:
                continue
            names = " < ".join(SHORT[n] for n in chain)
            for k, w in keys:
                page.claim("1", f"{names} on {w} (after training){split_tag(split)}",
                           page.v(chain_pairs([(vlab(n), side(s.train.get(n, []), k)) for n in chain])))
                page.claim("1", f"{names} on the RL gain Δ {w}{split_tag(split)}",
                           page.v(chain_pairs([(vlab(n), side(s.train.get(n, []), k, gain=True)) for n in chain])))
            ab_chain = [n for n in chain if has_ab and n in s.evals[(split, "ab_mcts")]]
            if len(ab_chain) >= 2 and top in ab_chain:
                page.claim("1", f"{' < '.join(SHORT[n] for n in ab_chain)} on Pass@1(MCTS), AB-MCTS evaluation"
                                f"{split_tag(split)}",
                           page.v(chain_pairs([(vlab(n), side(s.ev(split, "ab_mcts", n), "eval/pass1_mcts"))
                                               for n in ab_chain])))
        page.add("")
        from mars2.tracking import plots

        groups = [_group(lab(n), s.train[n]) for n in main if s.train[n]]
        if groups:
            name = "scaling_law.png" if split == "test" else f"scaling_law_{split}.png"
            metrics = [k for k, _ in keys]
            page.figure(name, lambda g, path: plots.scaling_law_chart(g, path, metrics=metrics), groups, caption=(
                f"Scaling-law bars (`{split}`): bar = mean over seeds after RL, whisker = 95 % t-interval over "
                "seeds (n seeds under each bar; *not* the paired intervals of the tables), black dot = the same "
                "runs before RL (warm start)."))
    from mars2.tracking import plots

    groups = [_group(lab(n), s.train[n]) for n in main if s.train[n]]
    if groups:
        page.figure("eval_curves.png", plots.eval_curves, groups)
        page.figure("training_curves.png", plots.training_curves, groups)


def _tts_source(s: Study, search: str, b: int) -> tuple[str, str] | None:
    """(evaluation name, metric key) giving ``search``'s Pass@1(MCTS) at ``b`` nodes: an evaluation run at b
    nodes (``<search>_b<b>``) if the plan has one, else the TTS prefix ``eval/tts/<b>`` of the plan's
    ``<search>`` evaluation when its budget is ≥ b."""
    if f"{search}_b{b}" in s.eval_specs:
        return f"{search}_b{b}", f"eval/tts/{b}"
    base = _plan_budget(s.plan, search)
    if search in s.eval_specs and base is not None and b <= base:
        return search, f"eval/tts/{b}"
    return None


def _tts_side(s: Study, split: str, search: str, b: int, team: str) -> Side | None:
    src = _tts_source(s, search, b)
    if src is None or not s.has_eval(split, src[0]) or team not in s.evals[(split, src[0])]:
        return None
    runs = s.ev(split, src[0], team)
    key = src[1]
    if runs and not vals(runs, key):  # an evaluation without a TTS key at its own budget: its Pass@1(MCTS)
        key = "eval/pass1_mcts"
    return side(runs, key)


def _search(page: Page) -> None:
    s = page.s
    if not any(s.has_eval(sp, e) for sp in s.eval_splits for e in SEARCHES):
        return
    from mars2.tracking import plots

    budget = _plan_budget(s.plan, "ab_mcts")
    page.add("## 2. Test-time scaling: best-of-N < AB-MCTS < T+ at equal node budgets", "",
             "Each trained team is evaluated with each search on all held-out problems, system mode (all agents in "
             f"one tree){f', {budget} nodes per problem' if budget else ''}. Pass@1(MCTS) = hidden pass of the final "
             "answer (best public score); Pass@N = some node passes (oracle). At 8 and 16 nodes the values are the "
             "TTS prefix of the 16-node searches (`eval/tts/<b>`: the first b nodes of the same search); at 32 nodes "
             "they come from the 32-node evaluations (`*_b32`, `test` only, heterogeneous teams). Differences are "
             "paired per problem and seed (the evaluations keep per-problem TTS outcomes); a cell marked "
             "(unpaired) had none.", "")
    teams = list(dict.fromkeys(t for e in SEARCHES for sp in s.eval_splits for t in (s.evals.get((sp, e)) or {})))
    for split in s.eval_splits:
        modes = [e for e in SEARCHES if s.has_eval(split, e)]
        if not modes:
            continue
        page.add(f"### Split `{split}`", "")
        rows = []
        for n in teams:
            rows.append([lab(n)] + [fmt(_ci(vals(s.ev(split, e, n), "eval/pass1_mcts"))) for e in modes]
                        + [fmt(_ci(vals(s.ev(split, m, n), "eval/pass_at_n"))) for m in modes])
        page.table(["team", *[f"{SEARCH_LABELS[e]} Pass@1(MCTS)" for e in modes],
                    *[f"{SEARCH_LABELS[e]} Pass@N" for e in modes]], rows)
        rows = []
        for n in teams:
            for b in TTS_BUDGETS:
                sides = {e: _tts_side(s, split, e, b, n) for e in SEARCHES}
                if not any(x is not None and x.runs for x in sides.values()):
                    continue
                row = [lab(n), str(b)] + [fmt(_ci(x.values())) if x is not None else "·" for x in sides.values()]
                cells = [page.d(sides[hi], sides[lo]) if sides[hi] is not None and sides[lo] is not None else None
                         for hi, lo in (("ab_mcts", "best_of_n"), ("t_plus", "ab_mcts"))]
                rows.append(row + [units(cells), *[pfmt(c) for c in cells]])
        if rows:
            page.add(f"Pass@1(MCTS) at equal budgets (`{split}`), and the paired steps of the claim:", "")
            page.table(["team", "nodes", "best-of-N", "AB-MCTS", "T+", "seeds×problems", "AB-MCTS − best-of-N",
                        "T+ − AB-MCTS"], rows)
        page.add(f"Verdicts, claim 2 (`{split}`):", "")
        for n in teams:
            if not all(n in (s.evals.get((split, e)) or {}) for e in SEARCHES):  # not planned with every search
                continue
            if len(modes) == len(SEARCHES):  # at the evaluations' own budget
                at = f" at {budget} nodes" if budget else ""
                page.claim("2", f"best-of-N < AB-MCTS < T+ for {lab(n)}{at}{split_tag(split)}",
                           page.v(chain_pairs([(SEARCH_LABELS[e], side(s.ev(split, e, n), "eval/pass1_mcts"))
                                               for e in SEARCHES])))
            for b in TTS_BUDGETS:
                if b == budget:
                    continue
                sides = [(SEARCH_LABELS[e], _tts_side(s, split, e, b, n)) for e in SEARCHES]
                if all(x is None for _, x in sides):
                    continue
                sides = [(lb, x if x is not None else side([], "eval/pass1_mcts")) for lb, x in sides]
                page.claim("2", f"best-of-N < AB-MCTS < T+ for {lab(n)} at {b} nodes{split_tag(split)}",
                           page.v(chain_pairs(sides)))
        page.add("")
        panels = []
        for n in teams:
            groups = []
            for j, e in enumerate(SEARCHES):
                if s.ev(split, e, n):
                    groups.append(_group(SEARCH_LABELS[e], s.ev(split, e, n), color=f"C{j}", linestyle="-"))
                if s.ev(split, f"{e}_b32", n):
                    groups.append(_group(f"{SEARCH_LABELS[e]} (32-node run)", s.ev(split, f"{e}_b32", n),
                                         color=f"C{j}", linestyle="--"))
            if groups:
                panels.append((lab(n), groups))
        if panels:
            page.figure(f"tts_curves_{split}.png", plots.tts_panels, panels, caption=(
                f"TTS curves (`{split}`): Pass@1 of the search's final answer when the search is cut after the first "
                "b nodes; line = mean over seeds, band = 95 % t-interval over seeds; dashed = the 32-node runs."))


def _diversity(page: Page) -> None:
    s = page.s
    if not any(s.has_eval(sp, "ab_mcts") for sp in s.eval_splits):
        return
    from mars2.tracking import plots

    page.add("## 3. Policy diversity: single < homo < hetero (AB-MCTS evaluation's candidates, method.md §7)", "",
             "EC@K = distinct behaviour classes on probe inputs among the K candidates of a problem; structural = "
             "distinct normalised ASTs / K; semantic = mean pairwise TF-IDF cosine distance; DA@K = share of problems "
             "with ≥ 2 behaviour classes among correct candidates. Single agent = the RS²-trained policy (tree "
             "search in training, like the teams). Differences: raw units (EC@K in classes, the others in [0, 1]), "
             "paired over seeds × problems.", "")
    teams = list(dict.fromkeys(t for sp in s.eval_splits for t in (s.evals.get((sp, "ab_mcts")) or {})))
    single = "rs2" if "rs2" in teams else "grpo"
    chain = [n for n in (single, "homo", "hetero") if n in teams]
    chain3 = [single, "homo", "hetero3"] if all(n in teams for n in (single, "homo", "hetero3")) else []
    for split in s.eval_splits:
        if not s.has_eval(split, "ab_mcts"):
            continue
        page.add(f"### Split `{split}`", "")
        rows = [[lab(n)] + [fmt(_ci(vals(s.ev(split, "ab_mcts", n), f"eval/{d}")), pct=d == "div/da") for d in DIV]
                for n in teams]
        page.table(["team", "EC@K", "structural", "semantic", "DA@K (%)"], rows)
        steps = [(b, a) for a, b in zip(chain, chain[1:])] + ([("hetero3", "homo")] if chain3 else [])
        prow = []
        for a, b in steps:
            cells = [page.d(side(s.ev(split, "ab_mcts", a), f"eval/{d}"), side(s.ev(split, "ab_mcts", b), f"eval/{d}"))
                     for d, _ in DIV_CLAIM]
            prow.append([f"{lab(a)} − {lab(b)}", units(cells), *[pfmt(c, pct=False) for c in cells]])
        if prow:
            page.table(["difference", "seeds×problems", *[f"Δ {w}" for _, w in DIV_CLAIM]], prow)
        page.add(f"Verdicts, claim 3 (`{split}`):", "")
        for c in (chain, chain3):
            if len(c) < 2:
                continue
            names = " < ".join(SHORT.get(n, n) if n != single else "single" for n in c)
            for d, w in DIV_CLAIM:
                page.claim("3", f"diversity {w}: {names}{split_tag(split)}",
                           page.v(chain_pairs([(vlab(n), side(s.ev(split, "ab_mcts", n), f"eval/{d}")) for n in c]),
                                  pct=False))
        page.add("")
        groups = [_group(lab(n), s.ev(split, "ab_mcts", n)) for n in teams if s.ev(split, "ab_mcts", n)]
        if groups:
            page.figure("diversity.png" if split == "test" else f"diversity_{split}.png", plots.diversity_bars, groups,
                        caption=f"Diversity (`{split}`): bar = mean over seeds, whisker = 95 % t-interval over seeds.")


def _agent_names(runs: Sequence[dict[str, Any]]) -> list[str]:
    names = set()
    for r in runs:
        for k in r.get("final") or {}:
            if k.startswith("eval/agent/") and k.endswith("/pass1_mcts"):
                names.add(k[len("eval/agent/"):-len("/pass1_mcts")])
    return sorted(names)


def _agent_mode(page: Page) -> None:
    s = page.s
    if not any(s.has_eval(sp, "ab_mcts_agent") for sp in s.eval_splits):
        return
    page.add("## 4. Agent mode vs system mode: does the shared tree beat each agent alone? (AB-MCTS, same budget)", "",
             "Agent mode: each agent searches alone with the whole node budget; system mode: the agents share one tree "
             "(section 2's AB-MCTS evaluation). Difference = system − agent alone, paired per problem and seed.", "")
    for split in s.eval_splits:
        if not s.has_eval(split, "ab_mcts_agent"):
            continue
        page.add(f"### Split `{split}`", "")
        rows, claims = [], []
        for n in s.evals[(split, "ab_mcts_agent")]:
            agent_runs = s.ev(split, "ab_mcts_agent", n)
            sys_side = side(s.ev(split, "ab_mcts", n), "eval/pass1_mcts")
            names = _agent_names(agent_runs)
            pairs = []
            for a in names:
                a_side = side(agent_runs, f"eval/agent/{a}/pass1_mcts")
                c = page.d(sys_side, a_side)
                rows.append([lab(n), a, fmt(_ci(a_side.values())), fmt(_ci(sys_side.values())), units([c]), pfmt(c)])
                pairs.append(("system", a, sys_side, a_side))
            team_side = side(agent_runs, "eval/pass1_mcts")
            c = page.d(sys_side, team_side)
            rows.append([lab(n), "mean over agents", fmt(_ci(team_side.values())), fmt(_ci(sys_side.values())),
                         units([c]), pfmt(c)])
            if not pairs:  # no finished agent-mode run (or none with per-agent keys)
                pairs = [("system", "agent mode", sys_side, team_side)]
            claims.append((f"system mode > each agent alone for {lab(n)}{split_tag(split)}", page.v(pairs)))
        page.table(["team", "agent", "alone Pass@1(MCTS)", "system Pass@1(MCTS)", "seeds×problems",
                    "system − alone"], rows)
        page.add(f"Verdicts, claim 4 (`{split}`):", "")
        for label, v in claims:
            page.claim("4", label, v)
        page.add("")


def _ablations(page: Page) -> None:
    s = page.s
    abl = [n for n in s.train_names if n.startswith("hetero_")]
    comps = [c for c in COMPONENTS if c in s.eval_specs]
    if not (abl and "hetero" in s.train) and not comps:
        return
    page.add("## 5. Ablations, each against its base row", "")
    if abl and "hetero" in s.train:
        page.add("Training ablations of the heterogeneous team (one change each) against `hetero ×2`: after RL and "
                 "the RL gain, differences = hetero ×2 − ablation (> 0: the removed or replaced part helps), "
                 "paired.", "")
        for split in s.train_splits:
            keys = train_keys(split)
            page.add(f"### Training ablations, split `{split}`", "")
            rows = []
            for n in ["hetero", *abl]:
                rs = s.train[n]
                row = [lab(n), str(len(rs))]
                for k, _ in keys:
                    row += [fmt(_ci(vals(rs, k))), delta(rs, k)]
                if n != "hetero":
                    cells = []
                    for k, _ in keys:
                        cells += [page.d(side(s.train["hetero"], k), side(rs, k)),
                                  page.d(side(s.train["hetero"], k, gain=True), side(rs, k, gain=True))]
                    row += [units(cells), *[pfmt(c) for c in cells]]
                else:
                    row += ["", *[""] * (2 * len(keys))]
                rows.append(row)
            head = ["run", "seeds"]
            for _, w in keys:
                head += [f"{w} after", f"Δ {w}"]
            head.append("seeds×problems")
            for _, w in keys:
                head += [f"hetero − row, {w} after", f"hetero − row, RL gain {w}"]
            page.table(head, rows)
            page.add(f"Verdicts, claim 5 (`{split}`):", "")
            for n in abl:
                for k, w in keys:
                    page.claim("5", f"hetero ×2 > {lab(n)} on {w} (after training){split_tag(split)}",
                               page.v([("hetero ×2", lab(n), side(s.train["hetero"], k), side(s.train[n], k))]))
                    page.claim("5", f"hetero ×2 > {lab(n)} on the RL gain Δ {w}{split_tag(split)}",
                               page.v([("hetero ×2", lab(n), side(s.train["hetero"], k, gain=True),
                                        side(s.train[n], k, gain=True))]))
            page.add("")
    if comps:
        page.add("T+ one component at a time (evaluation of the trained heterogeneous team, same budget): AB-MCTS plus "
                 "T+'s feedback only or its GEN discount only, against AB-MCTS (does the part help alone?) and against "
                 "full T+ (do both parts beat one?). Differences paired per problem and seed.", "")
        for split in s.eval_splits:
            present = [c for c in comps if s.has_eval(split, c)]
            if not present:
                continue
            teams = list(dict.fromkeys(t for c in present for t in s.evals[(split, c)]))
            page.add(f"### T+ components, split `{split}`", "")
            rows, claims = [], []
            for n in teams:
                ab = side(s.ev(split, "ab_mcts", n), "eval/pass1_mcts")
                tp = side(s.ev(split, "t_plus", n), "eval/pass1_mcts")
                for e in ("ab_mcts", *present, "t_plus"):
                    rs = s.ev(split, e, n)
                    row = [lab(n), SEARCH_LABELS.get(e, e), fmt(_ci(vals(rs, "eval/pass1_mcts"))),
                           fmt(_ci(vals(rs, "eval/pass_at_n")))]
                    if e in present:
                        c1, c2 = page.d(side(rs, "eval/pass1_mcts"), ab), page.d(tp, side(rs, "eval/pass1_mcts"))
                        row += [units([c1, c2]), pfmt(c1), pfmt(c2)]
                    else:
                        row += ["", "", ""]
                    rows.append(row)
                for e in present:
                    me = side(s.ev(split, e, n), "eval/pass1_mcts")
                    claims.append((f"{SEARCH_LABELS[e]} > AB-MCTS for {lab(n)}{split_tag(split)}",
                                   page.v([(SEARCH_LABELS[e], "AB-MCTS", me, ab)])))
                    claims.append((f"T+ > {SEARCH_LABELS[e]} for {lab(n)}{split_tag(split)}",
                                   page.v([("T+", SEARCH_LABELS[e], tp, me)])))
            page.table(["team", "search", "Pass@1(MCTS)", "Pass@N", "seeds×problems", "row − AB-MCTS", "T+ − row"],
                       rows)
            page.add(f"Verdicts, claim 5 (`{split}`):", "")
            for label, v in claims:
                page.claim("5", label, v)
            page.add("")


def _pct(x: Any) -> str:
    return f"{100 * x:.1f}" if isinstance(x, (int, float)) and math.isfinite(x) else "–"


def _diagnostics(page: Page) -> None:
    from mars2.tracking.tree_diagnostics import BUCKETS, pool

    s = page.s
    blocks = []
    for split in s.eval_splits:
        rows, arows = [], []
        for (sp, e), teams in s.evals.items():
            if sp != split:
                continue
            for n, runs in teams.items():
                p = pool([r["diag"] for r in runs if isinstance(r.get("diag"), dict)])
                if p is None:
                    continue
                dep = p["depth"]
                rows.append([SEARCH_LABELS.get(e, e), lab(n), str(p["n"]), str(p.get("nodes", 0)),
                             _pct(p.get("gen_share")),
                             _pct(p.get("cont_share")),
                             " / ".join(_pct(dep[b].get("hidden_pass")) for b in BUCKETS),
                             " / ".join(_pct(dep[b].get("improved")) for b in BUCKETS[1:]),
                             " / ".join(_pct(dep[b].get("fixed")) for b in BUCKETS[1:]),
                             _pct(p.get("fixed")), _pct(p.get("broken"))])
                for a, d in p["agents"].items():
                    arows.append([SEARCH_LABELS.get(e, e), lab(n), a, str(d.get("nodes", 0)), _pct(d.get("gen_share")),
                                  _pct(d.get("cont_share")), _pct(d.get("hidden_pass")), _pct(d.get("improved")),
                                  _pct(d.get("fixed"))])
        if rows:
            blocks.append((split, rows, arows))
    trows = []
    for n, runs in s.train.items():
        fin = pool([r["diag"] for r in runs if isinstance(r.get("diag"), dict)])
        ini = pool([r["diag"]["initial"] for r in runs if isinstance(r.get("diag"), dict)
                    and isinstance(r["diag"].get("initial"), dict)])
        if fin is None:
            continue
        trows.append([lab(n), str(fin["n"]), *(f"{_pct((ini or {}).get(k))} → {_pct(fin.get(k))}"
                                               for k in ("gen_share", "hidden_pass", "improved", "fixed"))])
    if not blocks and not trows:
        return
    page.add("## 6. Search diagnostics: do the searches refine, and does refinement repair?", "",
             "From the saved search trees (`diagnostics.json` of each job, `mars2.tracking.tree_diagnostics`), pooled "
             "over the seeds of a row. GEN = a fresh generation (child of the root, depth 1), CONT = a continuation "
             "of an existing program (depth ≥ 2). Per depth 1 / 2 / 3 / 4+: hidden pass = share of the nodes passing "
             "every test; improved = share whose public score beats the parent's; fixed = share passing among the "
             "nodes whose parent failed; broken = share failing among the nodes whose parent passed. All in %.", "")
    for split, rows, arows in blocks:
        page.add(f"### Split `{split}`", "")
        allp = pool([r["diag"] for (sp, e), teams in s.evals.items() if sp == split for runs in teams.values()
                     for r in runs if isinstance(r.get("diag"), dict)])
        if allp and allp.get("fixed") is not None and allp["depth"]["1"].get("hidden_pass") is not None:
            fx, gp = allp["fixed"], allp["depth"]["1"]["hidden_pass"]
            page.add(f"Pooled over every evaluation on `{split}` with diagnostics: a continuation passes where its "
                     f"parent failed in {_pct(fx)} % of {allp.get('failing_parent', 0)} cases, a fresh generation "
                     f"(depth 1) passes in {_pct(gp)} % of {allp['depth']['1'].get('nodes', 0)}: refinement "
                     f"{'repairs more often than' if fx > gp else 'does not repair more often than'} a fresh sample "
                     "solves.", "")
        page.table(["search", "team", "seeds", "nodes", "GEN %", "CONT %", "hidden pass d1/d2/d3/d4+",
                    "improved d2/d3/d4+", "fixed d2/d3/d4+", "fixed (all CONT)", "broken (all CONT)"], rows)
        page.add("Per agent (its own nodes in the row's trees):", "")
        page.table(["search", "team", "agent", "nodes", "GEN %", "CONT %", "hidden pass", "improved", "fixed"], arows)
    if trows:
        page.add("Training runs' own evaluation trees, before → after RL:", "")
        page.table(["run", "seeds", "GEN %", "hidden pass", "improved (CONT)", "fixed (CONT)"], trows)


def write_report(plan: dict[str, Any], root: Path, out_dir: Path, seeds: Sequence[int],
                 n_boot: int = N_BOOT) -> Path:
    """Build ``out_dir/results.md`` (and its figures in ``out_dir/results/``) from the finished runs under
    ``root`` (module docstring). Rows without runs yet make their verdicts say ``incomplete``."""
    out_dir = Path(out_dir)
    img = out_dir / "results"
    img.mkdir(parents=True, exist_ok=True)
    _CACHE.clear()
    study = Study(plan, Path(root), seeds)
    page = Page(study, img, n_boot)
    _training(page)
    _search(page)
    _diversity(page)
    _agent_mode(page)
    _ablations(page)
    _diagnostics(page)
    _CACHE.clear()

    lines = _header(page, out_dir)
    lines += ["## Verdicts: the paper's claims in miniature", "",
              "One line per claim, computed from the runs each time the page is built (how to read them: the module "
              "docstring of `mars2.tracking.study_report`; in short, *paired* verdicts read every step of a claim as "
              "a paired difference with its 95 % bootstrap CI over seeds × problems). Claims: (1) RL ceiling, (2) "
              "test-time scaling, (3) policy diversity, (4) agent vs system mode, (5) ablations. Lines on `test` are "
              "unmarked; lines on another split end in its name in brackets. The numbers behind each line are in the "
              "sections below.", ""]
    for num, what in CLAIMS:
        rows = [[label, v] for n, label, v in page.verdicts if n == num]
        if rows:
            lines += [f"**({num}) {what}**", ""] + _table(["claim", "verdict"], rows) + [""]
    if not page.verdicts:
        lines += ["(Nothing to judge yet: no finished runs.)", ""]
    unpaired = [label for _, label, v in page.verdicts if v.startswith(("holds (significant)", "direction only (within CIs)"))
                or v == "does not hold"]
    if unpaired:
        lines += [f"{len(unpaired)} verdict(s) above are *unpaired* (a row without per-problem outcomes: means and "
                  "t-intervals over seeds; `holds (significant)` = adjacent intervals disjoint): "
                  + "; ".join(unpaired[:8]) + (" …" if len(unpaired) > 8 else "") + ".", ""]
    lines += [""] + page.lines
    notes = out_dir / "study_notes.md"
    if notes.is_file():  # the hand-written reading of these numbers (what was tried, what does not hold, why)
        lines += ["", notes.read_text().strip(), ""]
    lines += ["", "## The paper's numbers for the real models (method.md §8)", ""]
    lines += _table(["model / method", "paper", "metric"], [list(r) for r in PAPER])
    lines.append("")
    page_path = out_dir / "results.md"
    page_path.write_text("\n".join(lines) + "\n")
    # the verdict lines, machine-readable (e.g. for the README's results section)
    (img / "verdicts.json").write_text(json.dumps(
        {"generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "claims": dict(CLAIMS),
         "verdicts": [{"claim": n, "line": label, "verdict": v} for n, label, v in page.verdicts]},
        indent=1, ensure_ascii=False) + "\n")
    return page_path
