"""Compare runs: `python compare.py outputs/ multirun/` prints paradigm x metric tables with 95 % CIs."""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / "src"))


def main() -> int:
    from mars2.tracking.compare import DEFAULT_METRICS, compare_table, find_results, print_table

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("paths", nargs="*", default=["outputs", "multirun"], help="run dirs or folders holding them")
    ap.add_argument("--metrics", nargs="*", default=list(DEFAULT_METRICS))
    args = ap.parse_args()
    runs = find_results(args.paths)
    if not runs:
        print(f"compare.py: no completed runs (results.json) under {args.paths}", file=sys.stderr)
        return 1
    print_table(compare_table(runs, args.metrics), args.metrics)
    return 0


if __name__ == "__main__":
    sys.exit(main())
