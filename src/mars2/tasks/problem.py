"""The one problem schema every downstream component sees (method.md §2, §9).

Tests are stored in a JSON-compatible form so that the sandbox can ship them to a child process and
compare results in the parent on serialised values.

- ``mode == "functional"``: ``TestCase.input`` is the list of positional arguments passed to
  ``entry_point``; ``TestCase.output`` is the expected return value (JSON-serialisable; tuples become lists).
- ``mode == "stdin"``: ``TestCase.input`` is the text fed to stdin; ``TestCase.output`` is the expected
  stdout text (compared after whitespace normalisation).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["functional", "stdin"]


@dataclass(frozen=True)
class TestCase:
    __test__ = False  # not a pytest class

    input: Any
    output: Any


@dataclass(frozen=True)
class Problem:
    id: str
    statement: str
    mode: Mode
    public_tests: tuple[TestCase, ...]
    hidden_tests: tuple[TestCase, ...]
    entry_point: str | None = None  # functional problems only
    starter_code: str = ""  # e.g. the signature "def solve(xs):"
    difficulty: int = 1
    source: str = "minicode"
    date: str | None = None
    reference_solution: str | None = None
    # Source text the sandbox puts before every program, in both modes (LiveCodeBench's harness prepends a
    # block of standard imports, so LeetCode-style code may use ``List`` without importing it).
    prelude: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.mode not in ("functional", "stdin"):
            raise ValueError(f"problem {self.id}: mode must be 'functional' or 'stdin', got {self.mode!r}")
        if self.mode == "functional" and not self.entry_point:
            raise ValueError(f"problem {self.id}: functional problems need an entry_point")

    @property
    def all_tests(self) -> tuple[TestCase, ...]:
        return self.public_tests + self.hidden_tests
