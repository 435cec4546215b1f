"""Run the miniature study (sweeps/study/plan.yaml) as resumable train.py / evaluate.py jobs and write
docs/results.md: `python study.py --jobs 2` (see docs/results.md and `python study.py --help`)."""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
os.environ.setdefault("MARS2_ROOT", str(ROOT))
sys.path.insert(0, str(ROOT / "src"))

if __name__ == "__main__":
    from mars2.cli.study import main

    sys.exit(main(sys.argv[1:], repo=ROOT))
