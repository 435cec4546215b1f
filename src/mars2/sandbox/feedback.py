"""Refinement feedback text from test verdicts (method.md §2 vanilla, §6.1 T+). Always length-capped.

vanilla::

    Test 1: Result: Correct
    Test 2: Result: Wrong
    The program is correct for 1 of 2 tests.

t_plus (the summary, then the first failing test in detail)::

    The program is correct for 1 of 2 tests.
    Test 2 failed.
    Input: [1, 2, 3]
    Expected: [2, 4, 6]
    Actual: [1, 2, 3]

(or ``Error: <last lines of the traceback>``, ``Time limit exceeded (2 s).``, ``Memory limit exceeded.``,
``Output limit exceeded.``). A program that could not be extracted gets "No code found in the response.".
"""
from __future__ import annotations

from mars2.sandbox.types import ExecResult, TestVerdict

NO_CODE_FEEDBACK = "No code found in the response."
STYLES = ("vanilla", "t_plus")
_ELLIPSIS = "…"


def summary_line(result: ExecResult) -> str:
    return f"The program is correct for {result.n_passed} of {result.n_tests} tests."


def format_feedback(result: ExecResult, style: str = "vanilla", max_chars: int = 600) -> str:
    """Feedback text for a refinement prompt; never longer than ``max_chars``."""
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
    style = {"t+": "t_plus", "tplus": "t_plus", "T+": "t_plus"}.get(style, style)
    if style not in STYLES:
        raise ValueError(f"feedback style must be one of {STYLES}, got {style!r}")
    if any(v.status == "no_code" for v in result.verdicts):
        return _cap(NO_CODE_FEEDBACK, max_chars)
    summary = summary_line(result)
    if style == "vanilla":
        lines = [f"Test {i}: Result: {'Correct' if v.passed else 'Wrong'}" for i, v in enumerate(result.verdicts, 1)]
        return _fit_lines(lines, summary, max_chars)
    failing = next(((i, v) for i, v in enumerate(result.verdicts, 1) if not v.passed), None)
    if failing is None:
        return _cap(summary, max_chars)
    budget = max_chars - len(summary) - 1
    if budget <= 0:
        return _cap(summary, max_chars)
    return _cap(summary + "\n" + _detail(*failing, budget=budget), max_chars)


def _cap(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max_chars - 1] + _ELLIPSIS


def _fit_lines(lines: list[str], summary: str, max_chars: int) -> str:
    """Per-test lines while they fit, then "... (k more tests)", then the summary (always kept)."""
    out: list[str] = []
    used = len(summary)
    for j, line in enumerate(lines):
        rest = len(lines) - j - 1
        tail = len(f"... ({rest} more tests)") + 1 if rest else 0
        if used + len(line) + 1 + tail > max_chars:
            more = len(lines) - j
            marker = f"... ({more} more tests)"
            if used + len(marker) + 1 <= max_chars:
                out.append(marker)
            break
        out.append(line)
        used += len(line) + 1
    return _cap("\n".join(out + [summary]), max_chars)


def _field(label: str, text: str, limit: int) -> str:
    text = text.rstrip("\n")
    limit = max(limit - len(label) - 2, 8)
    if len(text) > limit:
        text = text[: limit - 1] + _ELLIPSIS
    return f"{label}:\n{text}" if "\n" in text else f"{label}: {text}"


def _tail_lines(text: str, limit: int) -> str:
    """The last lines of a traceback that fit in ``limit`` characters (the error line is the most useful)."""
    lines = text.rstrip("\n").split("\n")
    kept: list[str] = []
    used = 0
    for line in reversed(lines):
        if used + len(line) + 1 > limit:
            if not kept:  # a single very long error line: keep its end
                kept.append(_ELLIPSIS + line[-(limit - 1):] if limit > 1 else "")
            break
        kept.append(line)
        used += len(line) + 1
    return "\n".join(reversed(kept))


def _detail(i: int, v: TestVerdict, budget: int) -> str:
    head = f"Test {i} failed."
    room = budget - len(head) - 1
    inp = _field("Input", v.input, max(room // 3, 16))
    room_after = room - len(inp) - 1
    if v.status == "wrong_answer":
        half = max(room_after // 2, 16)
        body = _field("Expected", v.expected, half) + "\n" + _field("Actual", v.actual, half)
    elif v.status == "timeout":
        body = v.error if v.error.startswith(("Time limit", "CPU time")) else "Time limit exceeded."
    elif v.status == "memory":
        body = "Memory limit exceeded."
    elif v.status == "output_limit":
        body = "Output limit exceeded."
    else:
        body = "Error: " + _tail_lines(v.error or "runtime error", max(room_after - 7, 16))
    return f"{head}\n{inp}\n{body}"
