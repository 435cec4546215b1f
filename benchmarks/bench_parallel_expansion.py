"""k pending expansions per tree (``search.parallel=k``, issue 21.1): quality and throughput at equal node budget.

The warm-started default tiny pair (``python evaluate.py``'s team, policies from the warm-start cache
.cache/mars2), the minicode test split (first ``--n-problems``), AB-MCTS-A with ``--budget`` nodes per tree,
for k = 1, 2, 4, 8 (virtual-loss rule) and optionally (``--independent-k``) rows with treequest's
independent draws. Every row
runs the same problems and the same seeds (a generation backend seeded per (seed, row) the way evaluate.py
seeds it per seed, and the same per-tree search seeds), rows interleaved within each seed (order rotated per
seed) so that the load of the shared machine falls on every row alike. Per run: the runner's own timings
(wall, generation, scoring), rounds (= generation calls), nodes/s, response tokens/s, tree shape, and the
hidden-test result of the final answer of every tree (Pass@1(MCTS), rule selection).

Writes ``benchmarks/results/parallel_expansion.json``:

    PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_parallel_expansion.py \
        [--n-problems 32] [--budget 16] [--seeds 0 1 2] [--ks 1 2 4 8]
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("MARS2_ROOT", str(ROOT))

import numpy as np  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "parallel_expansion.json"


def compose(overrides: list[str]) -> dict:
    from hydra import compose as hcompose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hcompose(config_name="evaluate", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(ROOT / "outputs" / "bench_parallel_expansion")
    return OmegaConf.to_container(cfg, resolve=True)


def tree_shape(trees) -> dict:
    width = [len(t.root.children) for t in trees]
    depth = [np.mean([n.depth for n in t.real_nodes()]) for t in trees]
    maxd = [max(n.depth for n in t.real_nodes()) for t in trees]
    refine = [np.mean([n.depth > 1 for n in t.real_nodes()]) for t in trees]
    return {"root_width": float(np.mean(width)), "mean_depth": float(np.mean(depth)),
            "max_depth": float(np.mean(maxd)), "refine_share": float(np.mean(refine))}


def summarise(vals: list[float]) -> dict:
    from mars2.metrics.stats import mean_ci

    m, lo, hi = mean_ci(vals)
    return {"mean": m, "ci_low": lo, "ci_high": hi, "per_seed": vals}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n-problems", type=int, default=32)
    ap.add_argument("--budget", type=int, default=16)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--independent-k", type=int, nargs="*", default=[],
                    help="extra rows with parallel_rule=independent (treequest's ask_batch) at these k")
    ap.add_argument("--few-trees", type=int, default=0,
                    help="also run the k rows on only this many problems (few trees per generation batch: the "
                         "regime where batching across trees gives little and k matters most)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    import torch

    from mars2.agents.team import team_policies
    from mars2.cli.build import build_backend, build_policies, build_sandbox, load_problems, make_team, search_config
    from mars2.metrics.passk import pass1_mcts_values, pass_at_n_values
    from mars2.rollout.runner import SearchRunner

    load_start = os.getloadavg()
    t_all = time.time()
    c = compose([])
    threads = c.get("trainer", {}).get("num_threads")
    if threads:
        torch.set_num_threads(int(threads))
    agents = make_team(c)
    problems = load_problems(c)
    test = problems["test"][: args.n_problems]
    base = search_config(c["eval"]["search"])
    n = len(test)
    rows = [(k, "virtual_loss", n) for k in args.ks] + [(k, "independent", n) for k in args.independent_k]
    if args.few_trees:
        rows += [(k, "virtual_loss", args.few_trees) for k in args.ks]
    names = [(f"k{k}" if rule == "virtual_loss" else f"k{k}_independent") + ("" if m == n else f"_{m}trees")
             for k, rule, m in rows]
    sandbox = build_sandbox(c)
    runs: dict[str, list[dict]] = {n: [] for n in names}
    pass1: dict[str, list[list[float]]] = {n: [] for n in names}
    try:
        t0 = time.time()
        models, tokenizers, _ = build_policies(c, team_policies(agents), problems, sandbox, progress=False)
        setup_s = time.time() - t0
        for si, seed in enumerate(args.seeds):
            order = list(range(len(rows)))
            order = order[si % len(order):] + order[: si % len(order)]  # rotate the row order per seed
            for ri in order:
                (k, rule, m), name = rows[ri], names[ri]
                cfg = dataclasses.replace(base, budget=args.budget, parallel=k, parallel_rule=rule)
                torch.manual_seed(seed)
                backend = build_backend(c, models, tokenizers, seed=seed)
                runner = SearchRunner(backend, sandbox, agents, cfg)
                la = os.getloadavg()[0]
                trees = runner.run(test[:m], seed=seed + 7919)  # evaluate.py's evaluation seed offset
                st = dict(runner.stats)
                tokens = sum(len(n.response_ids) for t in trees for n in t.real_nodes())
                p1 = pass1_mcts_values(trees, args.budget, None, "tiebreak")
                pn = pass_at_n_values(trees, args.budget)
                rec = {"seed": seed, "wall_s": st["wall_s"], "generate_s": st["generate_s"], "score_s": st["score_s"],
                       "overhead_s": st["overhead_s"], "rounds": int(st["generate_calls"]), "nodes": int(st["nodes"]),
                       "batch_mean": st["batch_mean"], "nodes_per_s": st["nodes"] / st["wall_s"],
                       "wall_per_round_s": st["wall_s"] / st["generate_calls"],
                       "response_tokens": tokens, "tokens_per_s": tokens / st["wall_s"],
                       "pass1_mcts": float(np.mean(p1)), "pass_at_n": float(np.mean(pn)),
                       "shape": tree_shape(trees), "load1_before": la, "load1_after": os.getloadavg()[0]}
                runs[name].append(rec)
                pass1[name].append(list(p1))
                print(f"seed {seed} {name}: wall {rec['wall_s']:.1f}s rounds {rec['rounds']} "
                      f"nodes/s {rec['nodes_per_s']:.2f} pass1_mcts {rec['pass1_mcts']:.3f} "
                      f"shape {rec['shape']} load {la:.2f}", flush=True)
            write_results(args, names, rows, runs, pass1, agents, test, base, setup_s, load_start, t_all, False)
    finally:
        sandbox.close()

    table = write_results(args, names, rows, runs, pass1, agents, test, base, setup_s, load_start, t_all, True)
    print(json.dumps({n: {"pass1_mcts": table[n]["pass1_mcts"]["mean"], "nodes_per_s": table[n]["nodes_per_s"]["mean"],
                          "speedup": table[n]["speedup_vs_k1_same_seed"]["mean"]} for n in table}, indent=1))


def write_results(args, names, rows, runs, pass1, agents, test, base, setup_s, load_start, t_all, complete) -> dict:
    from mars2.metrics.stats import mean_ci, paired_summary

    table = {}
    n_done = min(len(runs[n]) for n in names)
    for name, (k, rule, m) in zip(names, rows):
        # the reference of a row: k=1 (virtual loss) on the same problems
        ref = next((nm for nm, (k2, r2, m2) in zip(names, rows) if k2 == 1 and r2 == "virtual_loss" and m2 == m),
                   names[0])
        rs = runs[name][:n_done]
        if not rs:
            continue
        grid = np.array(pass1[name][:n_done])  # seeds × problems
        mean, lo, hi = mean_ci(grid.mean(axis=0))  # over problems (of per-problem means over seeds)
        _, slo, shi = mean_ci(grid.mean(axis=1))  # over seeds
        speed = [r["wall_s"] / q["wall_s"] for r, q in zip(runs[ref], rs)]  # same seed, same run
        table[name] = {
            "parallel": k, "parallel_rule": rule, "n_problems": m, "reference_row": ref,
            "pass1_mcts": {"mean": mean, "ci_problems": [lo, hi], "ci_seeds": [slo, shi],
                           "per_seed": [r["pass1_mcts"] for r in rs]},
            "pass_at_n": summarise([r["pass_at_n"] for r in rs]),
            "nodes_per_s": summarise([r["nodes_per_s"] for r in rs]),
            "tokens_per_s": summarise([r["tokens_per_s"] for r in rs]),
            "wall_s": summarise([r["wall_s"] for r in rs]),
            "rounds": rs[0]["rounds"],
            "wall_per_round_s": summarise([r["wall_per_round_s"] for r in rs]),
            "speedup_vs_k1_same_seed": summarise(speed),
            "shape": {key: float(np.mean([r["shape"][key] for r in rs])) for key in rs[0]["shape"]},
            "paired_pass1_mcts_minus_k1": None if name == ref else paired_summary(
                grid, np.array(pass1[ref][:n_done])),
        }
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                                    capture_output=True, text=True).stdout.strip())
    except OSError:
        sha, dirty = "", None
    out = {
        "benchmark": "search.parallel=k (k pending expansions per tree, virtual loss): Pass@1(MCTS) and throughput "
                     "at equal node budget",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "complete": complete, "seeds_done": args.seeds[:n_done],
        "command": "PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_parallel_expansion.py "
                   + " ".join(sys.argv[1:]),
        "git_sha": sha, "working_tree_dirty": dirty,
        "setup": {"team": [f"{a.name}:{a.policy_id}" for a in agents], "split": "minicode test",
                  "n_problems": len(test), "budget": args.budget, "seeds": args.seeds,
                  "search": {**base.to_dict(), "budget": args.budget},
                  "rows": names, "selection": "rule (best public score, newest)",
                  "search_seed": "runner seed = seed + 7919 (evaluate.py's), tree i seeded (seed, i); "
                                 "backend seeded with `seed` per run",
                  "intervals": "pass1_mcts: 95% t-intervals over problems (per-problem means over seeds) and "
                               "over seeds; paired: bootstrap over seeds x problems (mars2.metrics.stats); "
                               "throughput: t-intervals over seeds",
                  "policy_setup_s": round(setup_s, 1)},
        "machine": {"cpus": os.cpu_count(), "load_start": load_start, "load_now": os.getloadavg(),
                    "note": "shared machine: other helpers' jobs ran at the same time (see per-run load1)"},
        "total_wall_s": round(time.time() - t_all, 1),
        "results": table,
        "runs": runs,
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    return table


if __name__ == "__main__":
    main()
