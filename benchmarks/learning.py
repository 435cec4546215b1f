"""Learning proof (issue 8): does the default `python train.py` raise held-out Pass@1 over the warm start by
more than the seed-to-seed spread?

Runs the default training for each seed (each in its own run dir), then reads every run's results.json
(held-out evaluations at round 0 = the warm start, periodic, and at the end) and writes

- benchmarks/results/learning.json: per seed the eval curve, start/end Pass@1 and Pass@1(MCTS), and the
  mean ± 95 % t-interval of the per-seed gains (end − start) next to the std of the end values over seeds;
- docs/img/learning.png: the curves (one line per seed, Pass@1 and Pass@1(MCTS)).

    PYTHONPATH=src python benchmarks/learning.py --seeds 0 1 2 [--out-root outputs/learning] [overrides ...]
    PYTHONPATH=src python benchmarks/learning.py --collect-only --out-root outputs/learning
    PYTHONPATH=src python benchmarks/learning.py --collect-only --run-dir-format 'study/train/hetero_s{seed}'

The runs take the default wall time each (see README); the warm start is cached after the first.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

METRICS = ("eval/pass1", "eval/pass1_mcts")


def run_seed(seed: int, out: Path, overrides: list[str]) -> float:
    t0 = time.time()
    cmd = [sys.executable, str(ROOT / "train.py"), f"seed={seed}", f"hydra.run.dir={out}", *overrides]
    print("+", " ".join(cmd), flush=True)
    env = {**os.environ, "MARS2_ROOT": str(ROOT)}
    with open(out.parent / f"seed{seed}.log", "w") as log:
        subprocess.run(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.time() - t0


def collect(out_root: Path, seeds: list[int], run_dir_format: str | None = None) -> dict:
    from mars2.metrics import mean_ci

    runs = {}
    for s in seeds:
        run_dir = Path(run_dir_format.format(seed=s)) if run_dir_format else out_root / f"seed{s}"
        res = json.loads((run_dir / "results.json").read_text())
        if res.get("status") != "completed":
            raise SystemExit(f"seed {s}: run not completed ({res.get('status')})")
        evals = res["evals"]
        runs[s] = {
            "curve": [{k: e[k] for k in ("round", *METRICS) if k in e} for e in evals],
            "start": {m: evals[0][m] for m in METRICS},
            "end": {m: evals[-1][m] for m in METRICS},
            "wall_s": res.get("wall_s"),
        }
    summary = {}
    for m in METRICS:
        gains = [runs[s]["end"][m] - runs[s]["start"][m] for s in seeds]
        ends = [runs[s]["end"][m] for s in seeds]
        starts = [runs[s]["start"][m] for s in seeds]
        mean, lo, hi = mean_ci(gains)
        summary[m] = {
            "start_mean": statistics.mean(starts), "end_mean": statistics.mean(ends),
            "gain_mean": mean, "gain_ci95": [lo, hi],
            "end_std_over_seeds": statistics.stdev(ends) if len(ends) > 1 else 0.0,
            "start_std_over_seeds": statistics.stdev(starts) if len(starts) > 1 else 0.0,
            "gain_exceeds_spread": mean > (statistics.stdev(ends) if len(ends) > 1 else 0.0),
        }
    return {"seeds": seeds, "runs": runs, "summary": summary}


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(METRICS), figsize=(5 * len(METRICS), 3.6))
    for ax, m in zip(axes, METRICS):
        for s, r in data["runs"].items():
            xs = [p["round"] for p in r["curve"]]
            ax.plot(xs, [p[m] for p in r["curve"]], marker="o", label=f"seed {s}")
        ax.set_title(f"held-out {m.split('/')[-1]}")
        ax.set_xlabel("round")
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out-root", default=str(ROOT / "outputs" / "learning"))
    ap.add_argument("--collect-only", action="store_true")
    ap.add_argument("--run-dir-format", default=None,
                    help="collect existing runs from this dir pattern instead, e.g. 'study/train/hetero_s{seed}'")
    ap.add_argument("--results", default=str(ROOT / "benchmarks" / "results" / "learning.json"))
    ap.add_argument("--png", default=str(ROOT / "docs" / "img" / "learning.png"))
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    out_root = Path(args.out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    walls = {}
    if not args.collect_only:
        for s in args.seeds:
            walls[s] = run_seed(s, out_root / f"seed{s}", args.overrides)
    data = collect(out_root, args.seeds, args.run_dir_format)
    data["command"] = "PYTHONPATH=src python benchmarks/learning.py " + " ".join(sys.argv[1:])
    data["overrides"] = args.overrides
    if walls:
        data["process_wall_s"] = walls
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(data, indent=2) + "\n")
    plot(data, Path(args.png))
    for m, v in data["summary"].items():
        print(f"{m}: start {v['start_mean']:.3f} → end {v['end_mean']:.3f}; gain {v['gain_mean']:+.3f} "
              f"[{v['gain_ci95'][0]:+.3f}, {v['gain_ci95'][1]:+.3f}]; end std over seeds {v['end_std_over_seeds']:.3f}")
    print(f"wrote {args.results} and {args.png}")


if __name__ == "__main__":
    main()
