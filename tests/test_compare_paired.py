"""Paired differences between rows (issue 17.5): compare.py --paired-against and the study report's paired
tables, on hand-made run dirs with per-problem outcomes (eval_per_problem.json) and hand-computed means;
run dirs without them fall back to unpaired numbers with one line saying so."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mars2.metrics.stats import paired_bootstrap_ci
from mars2.tracking import compare, per_problem, readers, study_report

ROOT = Path(__file__).resolve().parents[1]
IDS = ["p0", "p1", "p2", "p3"]
# per (row, seed): the final Pass@1 of the 4 problems; initial = all 0
FINAL = {
    ("single", 0): [0, 1, 0, 0], ("single", 1): [0, 0, 1, 0],
    ("heterogeneous", 0): [1, 1, 0, 0], ("heterogeneous", 1): [0, 1, 1, 1],
}


def make_run(d: Path, paradigm: str, seed: int, final: list[float], with_problems: bool = True) -> None:
    d.mkdir(parents=True)
    mean = sum(final) / len(final)
    cfg = {"paradigm": paradigm, "seed": seed, "n_agents": 1 if paradigm == "single" else 2, "search": "ab_mcts"}
    ev0 = {"round": 0, "eval/pass1": 0.0}
    ev1 = {"round": 2, "eval/pass1": mean, "eval/test_iid/pass1": mean / 2}
    (d / "results.json").write_text(json.dumps({"status": "completed", "config": cfg, "evals": [ev0, ev1],
                                                "initial": ev0, "final": ev1}))
    if with_problems:
        class R:  # an EvalResult's per-problem part
            def __init__(self, vals):
                self.values = {"eval/pass1": vals, "eval/test_iid/pass1": [v / 2 for v in vals[:2]] + vals[2:]}
                self.problem_ids = {"eval": IDS, "eval/test_iid": IDS}

        per_problem.record(d, R([0.0] * 4), 0, seed)
        per_problem.record(d, R([float(x) for x in final]), 2, seed)


@pytest.fixture()
def study(tmp_path: Path) -> Path:
    for (paradigm, seed), final in FINAL.items():
        make_run(tmp_path / "runs" / f"{paradigm}_s{seed}", paradigm, seed, final)
    return tmp_path / "runs"


def test_paired_table_hand_computed(study):
    runs = readers.read_run_dirs([study])
    assert all(r["per_problem"] for r in runs)
    base, rows, notes = compare.paired_table(runs, "RS²", ["eval/pass1", "eval/test_iid/pass1"], n_boot=4000)
    assert base["label"] == "RS²" and notes == [] and [r["label"] for r in rows] == ["hetero×2"]
    cell = rows[0]["eval/pass1"]
    # differences per (seed, problem): s0 (1, 0, 0, 0), s1 (0, 1, 0, 1) → mean 3/8
    assert cell["mean"] == pytest.approx(3 / 8) and cell["n_seeds"] == 2 and cell["n_problems"] == 4
    ref = paired_bootstrap_ci([[1, 1, 0, 0], [0, 1, 1, 1]], [[0, 1, 0, 0], [0, 0, 1, 0]], n_boot=4000)
    assert (cell["ci_low"], cell["ci_high"]) == pytest.approx(ref[1:])
    assert compare.paired_cell(cell).startswith("+0.375 [") and compare.paired_units(rows[0], ["eval/pass1"]) == "2×4"
    # test_iid: the first two problems halved → differences s0 (0.5, 0, 0, 0), s1 (0, 0.5, 0, 1) → 2/8
    assert rows[0]["eval/test_iid/pass1"]["mean"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="matches no row"):
        compare.paired_table(runs, "nope")
    assert compare.extra_split_metrics(runs) == ["eval/test_iid/pass1"]


def test_rows_without_per_problem_outcomes_are_unpaired_with_one_line(study):
    make_run(study / "homo_s0", "homogeneous", 0, [1, 1, 1, 0], with_problems=False)
    runs = readers.read_run_dirs([study])
    _, rows, notes = compare.paired_table(runs, "RS²", ["eval/pass1"], n_boot=500)
    homo = next(r for r in rows if r["label"].startswith("homo"))
    # unpaired: mean 0.75 − mean of RS²'s seeds (0.25, 0.25) = 0.5, no interval
    assert homo["eval/pass1"]["unpaired"] == pytest.approx(0.5) and "mean" not in homo["eval/pass1"]
    assert compare.paired_cell(homo["eval/pass1"]) == "+0.500 (unpaired)"
    assert len(notes) == 1 and notes[0].startswith("homo×2: no per-problem outcomes")


def test_compare_cli_paired_against(study, tmp_path):
    out = tmp_path / "cmp"
    p = subprocess.run([sys.executable, str(ROOT / "compare.py"), str(study), "--out", str(out), "--no-plots",
                        "--paired-against", "RS²"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "paired differences: row − RS²" in p.stdout and "+0.375 [" in p.stdout and "2×4" in p.stdout
    assert "test_iid/pass1" in p.stdout  # the extra split is a default metric when present
    saved = json.loads((out / "paired.json").read_text())
    assert saved["against"] == "RS²" and saved["rows"][0]["eval/pass1"]["mean"] == pytest.approx(0.375)
    assert "| hetero×2 | 2×4 | +0.375 [" in (out / "paired.md").read_text()
    bad = subprocess.run([sys.executable, str(ROOT / "compare.py"), str(study), "--out", str(out), "--no-plots",
                          "--paired-against", "zzz"], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "matches no row" in bad.stderr and "Traceback" not in bad.stderr


def test_study_report_paired_tables(tmp_path):
    plan = {"train": {"runs": {"grpo": [], "hetero": []}}}
    for (paradigm, seed), final in FINAL.items():
        name = "grpo" if paradigm == "single" else "hetero"
        make_run(tmp_path / "train" / f"{name}_s{seed}", paradigm, seed, final)
    text = study_report.write_report(plan, tmp_path, tmp_path / "docs", [0, 1], n_boot=2000).read_text()
    # RL gain of hetero, paired final − initial: (1,1,0,0), (0,1,1,1) − 0 → 62.5 points
    row = next(ln for ln in text.splitlines() if ln.startswith("| hetero ×2 | 2 |"))
    assert "+62.5 [" in row
    diff = next(ln for ln in text.splitlines() if ln.startswith("| hetero ×2 − GRPO (single, iid) |"))
    assert "| 2×4 | +37.5 [" in diff
    # the training runs' extra split is a section of its own even where the plan names no splits
    assert "### Split `test_iid`" in text
    iid = [ln for ln in text.splitlines() if ln.startswith("| hetero ×2 − GRPO (single, iid) |")][1]
    assert "| 2×4 | +25.0 [" in iid  # test_iid: differences s0 (0.5, 0, 0, 0), s1 (0, 0.5, 0, 1) → 2/8
    assert "(paired" in text


def test_study_report_without_per_problem_outcomes_says_so(tmp_path):
    plan = {"train": {"runs": {"grpo": [], "hetero": []}}}
    for (paradigm, seed), final in FINAL.items():
        name = "grpo" if paradigm == "single" else "hetero"
        make_run(tmp_path / "train" / f"{name}_s{seed}", paradigm, seed, final, with_problems=False)
    text = study_report.write_report(plan, tmp_path, tmp_path / "docs", [0, 1]).read_text()
    assert "hold no per-problem outcomes" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| hetero ×2 | 2 |"))
    assert "62.5 ± " in row  # the t-interval over the per-seed deltas (0.5, 0.75)
    assert "+37.5 (unpaired)" in text and "verdict(s) above are *unpaired*" in text
