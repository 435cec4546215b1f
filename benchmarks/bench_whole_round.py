"""A whole default training round (rollout + scoring + GSPO update) under two or more rollout settings, same seed
(issue 21.3). Each arm is a real ``train.py`` run of ``--rounds`` rounds; the arms run interleaved ``--reps``
times (a, b, a, b, ...) so the shared machine's load drifts over both alike. Per round the run's own
metrics.csv rows are read: ``time/round_s``, ``search/generate_s``, ``search/score_s``, ``time/train_s``,
``search/gen_tokens``. Arms whose settings are exact (same tokens sampled) must grow the same trees: the
generated token counts per round are compared across arms and the result says whether they agree.

    PYTHONPATH=src python benchmarks/bench_whole_round.py --key hf_generation \
        --arm "before=rollout.prefix_cache_tokens=0 rollout.split_cost_tokens=0 rollout.attention_split_positions=0" \
        --arm "after="

Results go to benchmarks/results/whole_round.json under ``--key`` (other keys kept).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "whole_round.json"
# train.py at its defaults except: no periodic evaluation (it would dominate 4 short rounds), fresh output dir
BASE = ["eval.at_start=false", "eval.every=1000", "eval.n_problems=1", "eval.budget=1", "eval.tts_budgets=[1]",
        "overwrite=true"]
FIELDS = {"round_s": "time/round_s", "generate_s": "search/generate_s", "score_s": "search/score_s",
          "train_s": "time/train_s", "gen_tokens": "search/gen_tokens", "nodes": "search/nodes"}


def round_rows(run_dir: Path) -> list[dict[str, float]]:
    """The per-round rows of a run's metrics.csv (rows carrying ``time/round_s``), in round order."""
    files = sorted(run_dir.rglob("metrics.csv"))
    if not files:
        raise SystemExit(f"bench_whole_round: no metrics.csv under {run_dir}")
    rows = []
    with files[0].open() as f:
        for row in csv.DictReader(f):
            if row.get("time/round_s"):
                rows.append({k: float(row[c]) for k, c in FIELDS.items() if row.get(c)})
    return rows


def parse_arm(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition("=")
    if not name:
        raise SystemExit(f"bench_whole_round: --arm needs NAME=OVERRIDES, got {text!r}")
    return name, overrides.split()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arm", action="append", required=True, help="NAME=space-separated Hydra overrides")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--key", required=True, help="key of whole_round.json this measurement is stored under")
    ap.add_argument("--work-dir", default="/tmp/mars2-bench-whole-round")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    arms = dict(parse_arm(a) for a in args.arm)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    runs: dict[str, list[dict]] = {name: [] for name in arms}
    commands = {}
    for rep in range(args.reps):
        for name, overrides in arms.items():
            run_dir = Path(args.work_dir) / f"{args.key}_{name}_{rep}"
            cmd = [sys.executable, "train.py", f"rounds={args.rounds}", f"seed={args.seed}", *BASE, *overrides,
                   f"hydra.run.dir={run_dir}"]
            commands[name] = " ".join(["python", *cmd[1:-1], f"hydra.run.dir=<work-dir>/{args.key}_{name}_<rep>"])
            load0, t0 = os.getloadavg()[0], time.perf_counter()
            done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(f"bench_whole_round: {name} rep {rep} failed (rc {done.returncode}):\n"
                                 + done.stderr[-2000:])
            rows = round_rows(run_dir)
            runs[name].append({"rounds": rows, "process_s": round(time.perf_counter() - t0, 1),
                               "loadavg_1m_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)]})
            print(json.dumps({"arm": name, "rep": rep, "round_s": [round(r["round_s"], 2) for r in rows]}), flush=True)

    def mean_of(name: str, field: str) -> float:
        return statistics.mean(r[field] for run in runs[name] for r in run["rounds"])

    first = next(iter(arms))
    summary = {name: {f: round(mean_of(name, f), 3) for f in ("round_s", "generate_s", "score_s", "train_s", "gen_tokens")}
               for name in arms}
    for name in arms:
        summary[name]["gen_tokens_per_s"] = round(summary[name]["gen_tokens"] / summary[name]["generate_s"], 1)
        summary[name]["rollout_s"] = round(summary[name]["generate_s"] + summary[name]["score_s"], 3)
    tokens = {name: [[r.get("gen_tokens") for r in run["rounds"]] for run in runs[name]] for name in arms}
    same = all(t == tokens[first][0] for ts in tokens.values() for t in ts)
    ratios = {name: {f: round(summary[name][f] / summary[first][f], 3)
                     for f in ("round_s", "generate_s", "rollout_s", "train_s", "gen_tokens_per_s")}
              for name in arms if name != first}
    # paired per (repeat, round): the same round of the same seed under each arm
    paired = {name: {f: [round(b[f] / a[f], 3) for ra, rb in zip(runs[first], runs[name])
                         for a, b in zip(ra["rounds"], rb["rounds"])] for f in ("round_s", "generate_s", "train_s")}
              for name in arms if name != first}
    record = json.loads(Path(args.out).read_text()) if Path(args.out).is_file() else {}
    record[args.key] = {
        "what": "a default train.py round (rollout + scoring + GSPO update), same seed, arms interleaved; per-round "
                "means over all rounds and repeats, from each run's metrics.csv",
        "arms": {name: " ".join(o) for name, o in arms.items()}, "commands": commands,
        "rounds": args.rounds, "reps": args.reps, "seed": args.seed,
        "summary": summary, f"ratio_over_{first}": ratios, f"paired_round_ratios_over_{first}": paired,
        "same_generated_tokens_every_round": same, "generated_tokens_per_round": tokens,
        "runs": runs,
        "machine": {"cpus": os.cpu_count(), "loadavg_end": [round(x, 2) for x in os.getloadavg()]},
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps({"summary": summary, "ratios": ratios, "paired": paired, "same_tokens": same}, indent=1))


if __name__ == "__main__":
    main()
