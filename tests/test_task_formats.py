"""Issue 15: real benchmark formats read the way their harnesses read them, and bad files get one line.

One section per point of the issue; the fixtures are handmade files in the real layouts
(tests/fixtures/tasks/make_fixtures.py), odd files are written to tmp_path here.
"""
from __future__ import annotations

import gzip
import json
import logging
import os
import shutil
import typing
from pathlib import Path

import pytest

from mars2.tasks import LCB_PRELUDE, TestCase
from mars2.tasks.loaders import (
    EmptySplitError,
    LoadReport,
    TaskDataError,
    load_deepcoder,
    load_humaneval,
    load_livecodebench,
    load_verl_code,
    resolve_prelude,
)
from mars2.tasks.registry import load_task
from mars2.cli.stats import main as stats_main

FIX = Path(__file__).parent / "fixtures" / "tasks"
LCB = FIX / "livecodebench.jsonl"


def _one_line_exit_2(capsys: pytest.CaptureFixture, *args: str) -> str:
    assert stats_main(["stats", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mars2: ") and "\n" not in err and "Traceback" not in err, err
    return err


# --- 1. the LiveCodeBench prelude ------------------------------------------------------------------

def test_lcb_prelude_is_the_harness_import_block() -> None:
    lines = LCB_PRELUDE.splitlines()
    star = [ln for ln in lines if ln.startswith("from ")]
    plain = [ln for ln in lines if ln.startswith("import ")]
    assert len(lines) == 35 and len(star) == 18 and len(plain) == 16
    assert lines[0] == "from string import *" and lines[17] == "from typing import *"
    assert "from collections import *" in star and "from builtins import *" in star
    assert plain[0] == "import string" and plain[-1] == "import json"
    assert {"import math", "import heapq", "import bisect", "import itertools", "import functools"} <= set(plain)
    assert lines[-1] == "sys.setrecursionlimit(50000)"
    ns: dict = {}
    exec(compile(LCB_PRELUDE, "<prelude>", "exec"), ns)  # it runs, and gives what LeetCode code expects
    assert ns["List"] is typing.List and ns["Optional"] is typing.Optional
    assert all(k in ns for k in ("deque", "Counter", "heappush", "bisect_left", "accumulate", "lru_cache", "inf"))


def test_prelude_on_by_default_for_lcb_derived_tasks_only() -> None:
    lcb = load_livecodebench(LCB)["test"]
    dc = load_deepcoder(FIX / "deepcoder_lcbv5.jsonl")["train"]
    verl = load_verl_code(FIX / "verl_code" / "train.jsonl", FIX / "verl_code" / "test.jsonl")
    assert all(p.prelude == LCB_PRELUDE for p in lcb + dc + verl["train"] + verl["test"])
    assert all(p.prelude == "" for p in load_humaneval(FIX / "humaneval.jsonl")["test"])
    assert all(p.prelude == "" for p in load_livecodebench(LCB, prelude=False)["test"])
    custom = load_deepcoder(FIX / "deepcoder.jsonl", prelude="import math")["train"]
    assert {p.prelude for p in custom} == {"import math\n"}


def test_prelude_values() -> None:
    assert resolve_prelude("t", True) == LCB_PRELUDE
    assert resolve_prelude("t", False) == resolve_prelude("t", None) == resolve_prelude("t", "") == ""
    with pytest.raises(TaskDataError, match=r"^t: task.prelude must be true, false or Python source text"):
        resolve_prelude("t", 3)
    with pytest.raises(TaskDataError, match=r"^t: task.prelude is not valid Python \(SyntaxError"):
        resolve_prelude("t", "from typing import")


def test_prelude_through_the_stats_command(capsys: pytest.CaptureFixture) -> None:
    assert stats_main(["stats", "task=livecodebench", f"task.path={LCB}", "task.start_date=null",
                       "task.prelude=false"]) == 0
    assert "prelude" not in capsys.readouterr().out
    assert stats_main(["stats", "task=livecodebench", f"task.path={LCB}", "task.start_date=null"]) == 0
    assert "prelude: 3 of 3 problems run after a 35-line prelude" in capsys.readouterr().out
    err = _one_line_exit_2(capsys, "task=livecodebench", f"task.path={LCB}", "task.prelude='def ('")
    assert "task.prelude is not valid Python" in err


# --- 2. DeepCoder functional rows take their function name from the row --------------------------------

def test_deepcoder_lcbv5_rows_name_their_function_at_row_level() -> None:
    rep = LoadReport()
    probs = load_deepcoder(FIX / "deepcoder_lcbv5.jsonl", report=rep)["train"]
    assert (rep.rows, rep.loaded, rep.skipped) == (4, 4, 0)
    by_id = {p.id: p for p in probs}
    a = by_id["deepcoder/deepcoder_lcbv5:1"]  # metadata as a dict
    assert a.mode == "functional" and a.entry_point == "sumEven" and a.meta["class_name"] == "Solution"
    assert a.public_tests == (TestCase([[1, 2, 3, 4]], 6), TestCase([[]], 0))
    assert by_id["deepcoder/deepcoder_lcbv5:2"].entry_point == "longestRun"  # metadata as a JSON string
    assert by_id["deepcoder/deepcoder_lcbv5:2"].public_tests == (TestCase(["aabbbc"], 3),)
    c = by_id["deepcoder/deepcoder_lcbv5:3"]  # no metadata: the starter code's method
    assert c.entry_point == "countPairs" and c.hidden_tests == (TestCase([[2, 2, 2], 4], 3), TestCase([[5], 5], 0))
    assert by_id["deepcoder/deepcoder_lcbv5:4"].mode == "stdin"


def test_deepcoder_row_name_wins_and_missing_everywhere_is_a_counted_reason(tmp_path: Path) -> None:
    tests = json.dumps([{"input": "[1]", "output": "1", "testtype": "functional",
                         "metadata": {"func_name": "fromTest"}}])
    rows = [{"problem": "p", "tests": tests, "metadata": {"func_name": "fromRow"}},
            {"problem": "p", "tests": tests},
            {"problem": "p", "tests": json.dumps([{"input": "[1]", "output": "1", "testtype": "functional"}]),
             "starter_code": ""}]
    f = tmp_path / "rows.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    rep = LoadReport()
    probs = load_deepcoder(f, report=rep)["train"]
    assert [p.entry_point for p in probs] == ["fromRow", "fromTest"]
    assert rep.malformed == {"functional tests without a function name (no metadata.func_name, fn_name or def "
                             "in the starter code)": 1}


# --- 3. the verl / MARTI format ------------------------------------------------------------------------

def test_verl_code_rows() -> None:
    rep = LoadReport()
    splits = load_verl_code(FIX / "verl_code" / "train.jsonl", FIX / "verl_code" / "test.jsonl", report=rep)
    assert sorted(splits) == ["test", "train"]
    assert rep.malformed == {"label is not JSON": 1} and (rep.rows, rep.loaded) == (6, 5)
    stdin, leet, taco = splits["train"]
    assert stdin.id == "verl_code/train/0" and stdin.mode == "stdin" and stdin.entry_point is None  # fn_name ""
    assert stdin.statement.startswith("Read two integers") and stdin.meta["system_prompt"].startswith("You are")
    assert stdin.public_tests == (TestCase("2 3\n", "6\n"), TestCase("0 5\n", "0\n"))
    assert stdin.hidden_tests == (TestCase("-1 4\n", "-4\n"), TestCase("7 7\n", "49\n"))  # not extra_info's ['0']
    assert stdin.meta["data_source"] == "primeintellect" and stdin.source == "verl_code"
    assert leet.mode == "functional" and leet.entry_point == "spread" and leet.meta["class_name"] == "Solution"
    assert leet.all_tests == (TestCase([[1, 5, 2]], 4), TestCase([[3]], 0), TestCase([[10, 1, 4, 4]], 9))
    assert leet.difficulty == 2
    assert taco.entry_point == "double_all" and "class_name" not in taco.meta
    assert taco.all_tests == (TestCase([[1, 2]], [2, 4]), TestCase([[]], []), TestCase([[-3, 0]], [-6, 0]))
    marti, verl = splits["test"]
    # MARTI's {public_tests, private_tests} label keeps its own split
    assert marti.public_tests == (TestCase("3\n1 2 3\n", "6\n"),)
    assert marti.hidden_tests == (TestCase("1\n-5\n", "-5\n"), TestCase("2\n10 20\n", "30\n"))
    # verl's reward_model.ground_truth, two newline-separated JSON arguments
    assert verl.entry_point == "countDivisible" and verl.public_tests[0] == TestCase([[1, 2, 3, 4], 2], 2)


def test_verl_code_parquet_reads_like_jsonl() -> None:
    pq = load_verl_code(FIX / "verl_code" / "train.parquet")["train"]
    js = load_verl_code(FIX / "verl_code" / "train.jsonl")["train"]
    assert [(p.id, p.mode, p.entry_point, p.public_tests, p.hidden_tests) for p in pq] == \
           [(p.id, p.mode, p.entry_point, p.public_tests, p.hidden_tests) for p in js]


def test_verl_code_registry_conf_and_missing_paths(capsys: pytest.CaptureFixture) -> None:
    splits = load_task("verl_code", train_path=FIX / "verl_code" / "train.jsonl", test_path=None)
    assert list(splits) == ["train"] and len(splits["train"]) == 3
    with pytest.raises(TaskDataError, match="verl_code: give task.train_path and/or task.test_path"):
        load_verl_code()
    assert stats_main(["stats", "task=verl_code", f"task.train_path={FIX / 'verl_code' / 'train.jsonl'}",
                       f"task.test_path={FIX / 'verl_code' / 'test.jsonl'}", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["splits"]["train"]["problems"] == 3 and data["splits"]["test"]["problems"] == 2


# --- 4. JSON Lines inside a .json file -------------------------------------------------------------------

def test_json_file_holding_json_lines(tmp_path: Path) -> None:
    f = tmp_path / "train.json"
    f.write_text((FIX / "deepcoder.jsonl").read_text())
    rep = LoadReport()
    probs = load_deepcoder(f, report=rep)["train"]
    assert len(probs) == 5 and rep.malformed == {"tests is not JSON": 1, "line is not JSON": 1}
    assert [p.id for p in probs] == [p.id.replace("deepcoder/deepcoder", "deepcoder/train")
                                     for p in load_deepcoder(FIX / "deepcoder.jsonl")["train"]]


# --- 5. empty splits -------------------------------------------------------------------------------------

@pytest.mark.parametrize("task,key,split", [("livecodebench", "path", "test"), ("deepcoder", "path", "train"),
                                            ("verl_code", "train_path", "train"), ("humaneval", "path", "test")])
def test_empty_file_is_one_line_naming_task_file_and_split(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                            task: str, key: str, split: str) -> None:
    f = tmp_path / "empty.jsonl"
    f.write_text("\n\n")
    extra = ["task.test_path=null"] if task == "verl_code" else []
    err = _one_line_exit_2(capsys, f"task={task}", f"task.{key}={f}", *extra)
    assert err == (f"mars2: {task}: split {split!r} has 0 problems (the file holds no rows; file {f}); "
                   "a run cannot use an empty split")


def test_all_rows_skipped_is_an_empty_split_error(tmp_path: Path) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text('{"problem": "p", "tests": "{no"}\nnot json\n')
    with pytest.raises(EmptySplitError) as err:
        load_deepcoder(f)
    e = err.value
    assert (e.task, e.split, e.source) == ("deepcoder", "train", str(f))
    assert str(e) == (f"deepcoder: split 'train' has 0 problems (all 2 rows were left out: 1 malformed (tests is "
                      f"not JSON), 1 malformed (line is not JSON); file {f}); a run cannot use an empty split")
    assert isinstance(e, TaskDataError)  # a SetupError: train.py / evaluate.py exit 2 with this line


# --- 6. file-level read errors -----------------------------------------------------------------------

def _odd_files(tmp: Path) -> list[tuple[str, Path, str]]:
    good = (FIX / "deepcoder.jsonl").read_bytes()
    cases = []
    f = tmp / "truncated.jsonl.gz"
    f.write_bytes(gzip.compress(good)[:-30])
    cases.append(("truncated gzip", f, "is a truncated gzip file"))
    f = tmp / "plain.jsonl.gz"
    f.write_bytes(good)
    cases.append(("plain file named .gz", f, "is named .gz but is not gzip data"))
    f = tmp / "zipped.jsonl"
    f.write_bytes(gzip.compress(good))
    cases.append(("gzip bytes named .jsonl", f, "holds gzip-compressed data but its name does not end in .gz"))
    f = tmp / "latin1.jsonl"
    f.write_bytes(json.dumps({"problem": "café", "tests": "[]"}, ensure_ascii=False).encode("latin-1"))
    cases.append(("Latin-1 text", f, "is not UTF-8 text (byte 0xe9 on line 1"))
    d = tmp / "dir_with_subdir"
    (d / "x.jsonl").mkdir(parents=True)
    (d / "a.jsonl").write_bytes(good)
    cases.append(("a subdirectory named x.jsonl", d, f"{d / 'x.jsonl'} is a directory, not a data file"))
    f = tmp / "dangling.jsonl"
    os.symlink(tmp / "nowhere.jsonl", f)
    cases.append(("a broken symlink", f, "is a broken symbolic link"))
    d = tmp / "dir_with_link"
    d.mkdir()
    os.symlink(tmp / "nowhere.jsonl", d / "b.jsonl")
    cases.append(("a broken symlink in a directory", d, f"{d / 'b.jsonl'} is a broken symbolic link"))
    f = tmp / "rows.json"
    f.write_text('{"rows": 5}')
    cases.append(('{"rows": 5} in a .json', f, "has 'rows' = int, not a list of rows"))
    f = tmp / "scalar.json"
    f.write_text("5")
    cases.append(("a JSON number", f, "holds a JSON int, not rows"))
    return cases


def test_file_level_errors_are_one_line_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    for what, f, expected in _odd_files(tmp_path):
        with pytest.raises(TaskDataError) as err:
            load_deepcoder(f)
        msg = str(err.value)
        assert msg.startswith("deepcoder: ") and expected in msg and str(f) in msg and "\n" not in msg, (what, msg)
        assert expected in _one_line_exit_2(capsys, "task=deepcoder", f"task.path={f}"), what


def test_a_utf8_bom_is_accepted(tmp_path: Path) -> None:
    f = tmp_path / "bom.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + (FIX / "deepcoder.jsonl").read_bytes())
    g = tmp_path / "bom.json"
    g.write_bytes(b"\xef\xbb\xbf" + (FIX / "deepcoder.json").read_bytes())
    assert len(load_deepcoder(f)["train"]) == len(load_deepcoder(g)["train"]) == 5


def test_gzip_files_read(tmp_path: Path) -> None:
    f = tmp_path / "test.jsonl.gz"
    f.write_bytes(gzip.compress(LCB.read_bytes()))
    assert len(load_livecodebench(f)["test"]) == 3


# --- 7. LiveCodeBench rows with mixed test types -------------------------------------------------------

def test_lcb_mixed_test_types_are_rejected_and_counted(tmp_path: Path) -> None:
    stdin_row, functional_row = (json.loads(ln) for ln in LCB.read_text().splitlines()[:2])
    mixed = {**stdin_row, "question_id": "mixed", "private_test_cases": functional_row["public_test_cases"],
             "metadata": functional_row["metadata"]}
    f = tmp_path / "mixed.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in (stdin_row, mixed)) + "\n")
    rep = LoadReport()
    probs = load_livecodebench(f, report=rep)["test"]
    assert [p.id for p in probs] == ["livecodebench/abc999_a"]
    assert rep.malformed == {"mixed stdin and functional tests": 1}
    with pytest.raises(TaskDataError, match=r"malformed row mixed:2 .*: mixed stdin and functional tests"):
        load_livecodebench(f, strict=True)


# --- 8. the date window, bad window values, skip reasons in words ------------------------------------------

def test_default_window_reports_what_it_removed(capsys: pytest.CaptureFixture, caplog) -> None:
    # conf/task/livecodebench.yaml's window (2025-01-01..2025-05-31) removes every fixture row
    err = _one_line_exit_2(capsys, "task=livecodebench", f"task.path={LCB}")
    assert "split 'test' has 0 problems (all 4 rows were left out: 4 outside the date window " \
           "2025-01-01..2025-05-31; widen task.start_date / task.end_date or set them to null" in err
    rep = LoadReport()
    with caplog.at_level(logging.INFO, logger="mars2.tasks.loaders"):
        load_livecodebench(LCB, start_date="2023-06-01", report=rep)
    assert rep.filtered_by == {"outside the date window 2023-06-01..any": 1}
    assert "livecodebench: 1 of 4 rows outside the date window 2023-06-01..any" in caplog.text


@pytest.mark.parametrize("key", ["start_date", "end_date"])
def test_a_garbage_date_names_the_key(key: str, capsys: pytest.CaptureFixture) -> None:
    err = _one_line_exit_2(capsys, "task=livecodebench", f"task.path={LCB}", f"task.{key}=garbage")
    assert err == f"mars2: livecodebench: task.{key}='garbage' is not a date (expected YYYY-MM-DD, or null for no bound)"


def test_reversed_window_is_an_error() -> None:
    with pytest.raises(TaskDataError, match="task.start_date=2024-01-01 is after task.end_date=2023-01-01"):
        load_livecodebench(LCB, start_date="2024-01-01", end_date="2023-01-01")


def test_skip_reasons_are_words(tmp_path: Path) -> None:
    stdin_row, functional_row = (json.loads(ln) for ln in LCB.read_text().splitlines()[:2])
    lcb_rows = [
        stdin_row,
        {**stdin_row, "public_test_cases": "[1, 2]"},          # tests that are not objects
        {**functional_row, "metadata": "[1]"},                  # metadata not an object
        {**stdin_row, "starter_code": 5},                       # a field of the wrong type
    ]
    f = tmp_path / "lcb.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in lcb_rows) + "\n")
    rep = LoadReport()
    load_livecodebench(f, report=rep)
    dc_rows = [
        {"problem": "p", "tests": json.dumps([{"input": "1", "output": "1"}])},
        {"problem": "p", "tests": json.dumps([{"input": "[1]", "output": "1", "testtype": "functional",
                                               "metadata": "{bad"}])},
        {"problem": "p", "tests": json.dumps([{"input": "[1]", "output": "1", "testtype": "functional",
                                               "metadata": 5}])},
        {"problem": "p", "tests": json.dumps([5, 6])},
    ]
    g = tmp_path / "dc.jsonl"
    g.write_text("\n".join(json.dumps(r) for r in dc_rows) + "\n")
    rep2 = LoadReport()
    load_deepcoder(g, report=rep2)
    reasons = set(rep.malformed) | set(rep2.malformed)
    assert reasons == {"test without input/output", "metadata is not an object", "starter_code is not a string",
                       "test metadata is not JSON", "test metadata is not an object", "a test is not an object"}
    assert not any(r.endswith("Error") for r in reasons)


def test_directory_of_files_reads_all(tmp_path: Path) -> None:
    shutil.copy(FIX / "deepcoder.jsonl", tmp_path / "a.jsonl")
    shutil.copy(FIX / "deepcoder.json", tmp_path / "b.json")
    assert len(load_deepcoder(tmp_path)["train"]) == 10


def test_require_split_for_a_run() -> None:
    from mars2.tasks.registry import require_split

    splits = load_deepcoder(FIX / "deepcoder.json")
    assert len(require_split("deepcoder", splits, "train")) == 5
    with pytest.raises(TaskDataError, match=r"^deepcoder: no split 'test' \(this task has: train\)$"):
        require_split("deepcoder", splits, "test")
    with pytest.raises(EmptySplitError, match=r"^minicode: split 'test' has 0 problems \(the split is empty\); "
                                              r"a run cannot use an empty split$"):
        require_split("minicode", {"test": []}, "test")


def test_jsonl_lines_split_on_newline_only(tmp_path: Path) -> None:
    """A raw U+2028 inside a JSON string is not a line break (str.splitlines would cut the row in two);
    CRLF line ends are fine."""
    row = json.loads(LCB.read_text().splitlines()[0])
    row["question_content"] += "\u2028second paragraph"
    f = tmp_path / "u2028.jsonl"
    f.write_bytes((json.dumps(row, ensure_ascii=False) + "\r\n" + json.dumps(row) + "\r\n").encode("utf-8"))
    probs = load_livecodebench(f)["test"]
    assert len(probs) == 2 and all(p.statement.endswith("\u2028second paragraph") for p in probs)
