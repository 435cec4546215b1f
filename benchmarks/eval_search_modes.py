"""T+ vs AB-MCTS-A vs best-of-N (iid) at equal node budget on the miniature test split (issue 7, "must show").

Runs `python evaluate.py search@eval.search=<mode> ...` once per mode on the warm-started default pair
(policies from the warm-start cache .cache/mars2), with 3 evaluation seeds and a 16-node budget; the
8-node numbers are the first 8 nodes of the same searches (a prefix of a search *is* the 8-node search: no
search decision depends on the budget — tests/test_evaluate.py checks it). Then compares the modes per
problem (paired: same problems, same seeds) and writes ``benchmarks/results/search_modes.json`` with the exact
commands, CPU/wall times and an ordering verdict.

    PYTHONPATH=src .venv/bin/python benchmarks/eval_search_modes.py [--n-problems 32]
    # re-summarise the saved runs (outputs/bench_search_modes/<mode>) with a written analysis:
    PYTHONPATH=src .venv/bin/python benchmarks/eval_search_modes.py --summarise-only --analysis-file <txt>
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mars2.metrics.stats import mean_ci  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "search_modes.json"
RUNS = ROOT / "outputs" / "bench_search_modes"
MODES = ("t_plus", "ab_mcts", "iid")
KEYS = ("pass1_mcts", "pass_at_n", "avg_pass1", "div/ec", "div/structural", "div/semantic", "div/da", "div/k")


def command(mode: str, args: argparse.Namespace) -> list[str]:
    seeds = "[" + ",".join(str(s) for s in args.seeds) + "]"
    tts = "[" + ",".join(str(b) for b in (1, 2, 4, 8, args.budget)) + "]"
    return [".venv/bin/python", "evaluate.py", f"search@eval.search={mode}", f"eval.budget={args.budget}",
            f"eval.n_problems={args.n_problems}", f"eval.seeds={seeds}", f"eval.tts_budgets={tts}",
            f"hydra.run.dir={(RUNS / mode).relative_to(ROOT)}"]


def run_mode(mode: str, args: argparse.Namespace) -> dict:
    cmd = command(mode, args)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    (RUNS / mode / "stdout.txt").write_text(p.stdout)
    return {"command": " ".join(cmd), "wall_s": round(wall, 1),
            "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1)}


def metric(res: dict, key: str) -> dict | None:
    m = res["metrics"].get(key)
    if m is None:
        return None
    return {"mean": m["mean"], "ci_problems": m["ci_problems"], "ci_seeds": m["ci_seeds"], "per_seed": m["per_seed"]}


def at_budget(res: dict, key: str, b: int, full: int) -> dict | None:
    """``key`` at node budget b: the full-budget key, or the TTS / prefix key."""
    if key == "pass1_mcts":
        return metric(res, f"eval/tts/{b}")
    return metric(res, f"eval/{key}" if b == full else f"eval/b{b}/{key}")


def paired(a: dict, b: dict, key: str) -> dict:
    """Per-problem difference a − b of the per-problem means over seeds: mean and 95 % t-interval."""
    xa, xb = a["metrics"][key]["per_problem"], b["metrics"][key]["per_problem"]
    d = [x - y for x, y in zip(xa, xb) if x is not None and y is not None and not (math.isnan(x) or math.isnan(y))]
    m, lo, hi = mean_ci(d)
    return {"mean": m, "ci": [lo, hi], "problems_a_better": sum(x > 0 for x in d),
            "problems_b_better": sum(x < 0 for x in d), "n": len(d)}


def node_stats(mode: str, seeds: list[int]) -> dict:
    """Where each mode spent its nodes (all seeds, all problems): fresh vs refinement nodes per agent with
    their public / hidden pass rates, and how often refining a failing parent gave a public pass."""
    from mars2.search.serialize import tree_from_dict

    groups: dict[str, list[int]] = {}
    fix = [0, 0]
    for s in seeds:
        data = json.loads((RUNS / mode / "trees" / f"seed{s}.json").read_text())
        for td in data["team"]:
            t = tree_from_dict(td)
            for n in t.real_nodes():
                key = ("fresh" if n.depth == 1 else "refine") + "/" + n.agent_name
                g = groups.setdefault(key, [0, 0, 0])
                g[0] += 1
                g[1] += n.score >= 1.0
                g[2] += n.hidden_pass
                if n.depth > 1 and t.nodes[n.parent_id].score < 1.0:
                    fix[0] += 1
                    fix[1] += n.score >= 1.0
    out = {k: {"nodes": v[0], "public_pass": round(v[1] / v[0], 3), "hidden_pass": round(v[2] / v[0], 3)}
           for k, v in sorted(groups.items())}
    out["refine_failing_parent"] = {"nodes": fix[0], "public_pass": round(fix[1] / fix[0], 3) if fix[0] else None}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-problems", type=int, default=32)
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--summarise-only", action="store_true", help="read existing run dirs, run nothing")
    ap.add_argument("--analysis-file", type=Path, default=None,
                    help="text file with the written analysis of the numbers, stored as `analysis`")
    args = ap.parse_args()
    runs = {}
    for mode in MODES:
        if args.summarise_only:
            prev = json.loads(OUT.read_text())["runs"][mode] if OUT.is_file() else {"command": " ".join(command(mode, args))}
            runs[mode] = prev
        else:
            print(f"running {mode} ...", flush=True)
            runs[mode] = run_mode(mode, args)
            print(f"  {runs[mode]}", flush=True)
    res = {m: json.loads((RUNS / m / "results.json").read_text()) for m in MODES}
    budgets = sorted({8, args.budget})
    table = {}
    for m in MODES:
        table[m] = {"pass1_fresh": metric(res[m], "eval/pass1"),
                    **{f"{k}@{b}": at_budget(res[m], k, b, args.budget) for b in budgets for k in KEYS},
                    "tts": {str(b): metric(res[m], f"eval/tts/{b}")["mean"] for b in (1, 2, 4, 8, args.budget)},
                    "search_stats_seed0": res[m]["per_seed"][0]["search_stats"],
                    "node_stats": node_stats(m, args.seeds)}
    comparisons = {}
    for b in budgets:
        key = f"eval/tts/{b}"
        for a, c in (("t_plus", "ab_mcts"), ("ab_mcts", "iid"), ("t_plus", "iid")):
            comparisons[f"{a}-{c}@{b}"] = paired(res[a], res[c], key)
    verdict = {}
    for b in budgets:
        t, a, i = (table[m][f"pass1_mcts@{b}"]["mean"] for m in MODES)
        sig = {k: not (v["ci"][0] <= 0.0 <= v["ci"][1]) for k, v in comparisons.items() if k.endswith(f"@{b}")}
        verdict[str(b)] = {"t_plus": t, "ab_mcts": a, "iid": i, "t_plus>=ab_mcts": t >= a, "ab_mcts>=iid": a >= i,
                           "ordering_holds_on_means": t >= a >= i, "paired_difference_significant": sig}
    out = {
        "benchmark": "Pass@1(MCTS) of T+ vs AB-MCTS-A vs best-of-N (iid) at equal node budget, miniature test split",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "setup": {"team": "default heterogeneous pair (qwen3_a solver, llama_a debugger), warm-started (cache)",
                  "split": "minicode test (held-out compositions)", "n_problems": args.n_problems,
                  "seeds": args.seeds, "budget": args.budget, "budgets_compared": budgets,
                  "budget_8_from": "the first 8 nodes of the 16-node searches (identical to an 8-node search)",
                  "selection": "rule (best public score, newest); no reward model",
                  "intervals": "95% t-intervals over problems (of per-problem means over seeds) and over seeds"},
        "runs": runs,
        "cpu_s_total": round(sum(r.get("cpu_s", 0.0) for r in runs.values()), 1),
        "results": table,
        "paired_pass1_mcts_differences": comparisons,
        "verdict": verdict,
    }
    if args.analysis_file is not None:
        out["analysis"] = args.analysis_file.read_text().strip()
    elif OUT.is_file() and args.summarise_only:
        out["analysis"] = json.loads(OUT.read_text()).get("analysis")
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({"verdict": verdict, "comparisons": comparisons, "cpu_s_total": out["cpu_s_total"]}, indent=1))


if __name__ == "__main__":
    main()
