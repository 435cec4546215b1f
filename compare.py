"""Compare runs: tables (mean ± 95 % CI over seeds) and plots (scaling law, TTS, training curves, diversity).

    python compare.py                                   # run dirs under outputs/ and multirun/
    python compare.py multirun/2026-01-01_10-00-00      # one sweep
    python compare.py --mlflow sqlite:///mlflow.db      # an MLflow store (optionally --mlflow-experiment mars2)
    python compare.py --wandb outputs/                  # offline wandb runs found under a folder
    python compare.py --wandb my-entity/mars2           # a wandb project (online, needs `wandb login`)
    python compare.py multirun/... --out docs/results   # where the PNGs and comparison.md go (default: compare/)
    python compare.py multirun/... --paired-against GRPO  # + paired differences row − GRPO per metric:
                                                        #   mean [95% CI] over seeds × problems (same seeds,
                                                        #   same problems; needs eval_per_problem.json)
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))


def load_runs(args: argparse.Namespace) -> list[dict]:
    from mars2.tracking import readers

    runs: list[dict] = []
    if args.paths or not (args.mlflow or args.wandb):
        runs += readers.read_run_dirs(args.paths or ["outputs", "multirun"])
    if args.mlflow:
        runs += readers.read_mlflow(args.mlflow, args.mlflow_experiment)
    for w in args.wandb or []:
        if Path(w).exists():
            runs += readers.read_wandb_offline([w])
        else:
            runs += readers.read_wandb_project(w)
    return runs


def main(argv: list[str] | None = None) -> int:
    from mars2.tracking.compare import (
        DEFAULT_METRICS, compare_table, diversity_metrics, extra_split_metrics, paired_markdown, paired_table,
        print_paired, print_table, write_tables,
    )

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("paths", nargs="*", help="run dirs or folders holding them (default: outputs multirun)")
    ap.add_argument("--mlflow", help="MLflow tracking URI (sqlite:///path.db) or a .db file")
    ap.add_argument("--mlflow-experiment", default=None, help="only this MLflow experiment")
    ap.add_argument("--wandb", action="append", help="a folder with offline wandb runs, or entity/project")
    ap.add_argument("--metrics", nargs="*", default=None, help=f"default: {' '.join(DEFAULT_METRICS)} + diversity")
    ap.add_argument("--out", default="compare", help="folder for the PNGs and comparison.md/json")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--all", action="store_true", help="include failed / pruned / running runs in the tables")
    ap.add_argument("--paired-against", metavar="ROW", default=None,
                    help="also print every other row's paired difference to this row (its label, or a unique part "
                         "of it): mean [95%% CI], paired bootstrap over seeds x problems")
    ap.add_argument("--paired-when", choices=("final", "initial"), default="final",
                    help="which evaluation of training runs to pair (default: final)")
    args = ap.parse_args(argv)

    runs = load_runs(args)
    done = [r for r in runs if args.all or r["status"] == "completed"]
    others = [r for r in runs if r["status"] != "completed"]
    if others and not args.all:
        by_status: dict[str, int] = {}
        for r in others:
            by_status[r["status"]] = by_status.get(r["status"], 0) + 1
        print("compare.py: left out " + ", ".join(f"{n} {s}" for s, n in sorted(by_status.items()))
              + " run(s) (--all to include)", file=sys.stderr)
    if not done:
        where = args.paths or args.mlflow or args.wandb or ["outputs", "multirun"]
        print(f"compare.py: no completed runs found in {where}", file=sys.stderr)
        return 1
    metrics = (list(args.metrics) if args.metrics
               else [*DEFAULT_METRICS, *extra_split_metrics(done), *diversity_metrics(done)])
    rows = compare_table(done, metrics)
    print_table(rows, metrics)
    files = write_tables(rows, metrics, args.out)
    if args.paired_against:
        try:
            base, prow, notes = paired_table(done, args.paired_against, metrics, args.paired_when)
        except ValueError as e:
            print(f"compare.py: {e}", file=sys.stderr)
            return 2
        for note in notes:
            print(f"compare.py: {note}", file=sys.stderr)
        print_paired(base, prow, metrics, args.paired_when)
        import json

        md = Path(args.out) / "paired.md"
        md.write_text(paired_markdown(base, prow, metrics, args.paired_when))
        js = Path(args.out) / "paired.json"
        js.write_text(json.dumps({"against": base["label"], "when": args.paired_when, "rows": prow}, indent=2))
        files += [md, js]
    if not args.no_plots:
        from mars2.tracking.plots import make_plots

        pngs, notes = make_plots(done, args.out)
        files += pngs
        for note in notes:
            print(f"compare.py: {note}", file=sys.stderr)
    print("wrote: " + " ".join(str(f) for f in files))
    return 0


if __name__ == "__main__":
    sys.exit(main())
