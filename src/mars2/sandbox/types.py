"""Result types of the sandbox (method.md §2). Plain dataclasses so trees can be serialised."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Status = Literal[
    "passed", "wrong_answer", "runtime_error", "timeout", "memory", "output_limit", "no_code"
]


@dataclass
class TestVerdict:
    __test__ = False

    status: Status
    input: str = ""  # trimmed text of the test input (for T+ feedback)
    expected: str = ""  # trimmed text of the expected output
    actual: str = ""  # trimmed text of what the program produced
    error: str = ""  # error type + trimmed traceback, or a reason ("time limit 1.0 s")
    time_s: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"


@dataclass
class ExecResult:
    """Verdicts of one program on one list of tests (in order)."""

    verdicts: list[TestVerdict] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def n_tests(self) -> int:
        return len(self.verdicts)

    @property
    def n_passed(self) -> int:
        return sum(v.passed for v in self.verdicts)

    @property
    def all_passed(self) -> bool:
        return self.n_tests > 0 and self.n_passed == self.n_tests

    @property
    def fraction(self) -> float:
        return self.n_passed / self.n_tests if self.n_tests else 0.0


@dataclass
class Evaluation:
    """A node's program run on a problem's public and hidden tests."""

    public: ExecResult
    hidden: ExecResult

    @property
    def public_pass(self) -> bool:
        return self.public.all_passed

    @property
    def hidden_pass(self) -> bool:
        return self.hidden.all_passed

    @property
    def solved(self) -> bool:
        """THE definition of a correct program, used wherever "solved" / "pass" is counted (Pass@1, Pass@1(MCTS),
        Pass@N, avg_pass1, the round metrics, R_θ's labels, the RL reward ``all``): it passes every test the
        problem has, public and hidden, as judged by the sandbox. A problem without hidden tests is solved on its
        public tests alone; one without any test is never solved (there is nothing to pass)."""
        n = self.public.n_tests + self.hidden.n_tests
        return n > 0 and self.public.n_passed == self.public.n_tests and self.hidden.n_passed == self.hidden.n_tests

    @property
    def all_pass(self) -> bool:
        """Same as :attr:`solved` (the RL reward's name for "every test, public ∪ hidden")."""
        return self.solved
