"""One judge (issue 20.3): minicode's in-process verification of its references judges exactly as the sandbox
does — the same comparison (``mars2.sandbox.executor``), the same codec — checked against the real sandbox on
values where canonical JSON and Python equality disagree (True vs 1, 7.0 vs 7, tuples, float tolerance)."""
from __future__ import annotations

import pytest

from mars2.sandbox import Sandbox
from mars2.tasks.minicode import verify_problems
from mars2.tasks.problem import Problem, TestCase

# (what the reference returns, the expected output stored in the problem)
FUNCTIONAL = [
    ("True", 1),            # Python equality (the sandbox, HumanEval's assert ==): equal; canonical JSON: not
    ("7.0", 7),             # an expected int compares exactly: 7.0 == 7
    ("(1, 2)", [1, 2]),     # tuples compare as lists
    ("0.1 + 0.2", 0.3),     # an expected float: within float_tol
    ("1.0000009", True),    # an expected bool/int is exact: not equal
    ("[1, 2]", [2, 1]),
    ("{'a': (1,)}", {"a": [1]}),
    ("'x'", "x"),
    ("None", 0),
]
STDIN = [("print(1, 2)", "1  2\n"), ("print(7.0)", "7"), ("print(3)", "4"), ("print('a\\n\\n')", "a")]


def functional(ret: str, expected) -> Problem:
    return Problem(id=f"j/{ret}", statement="", mode="functional", entry_point="f",
                   public_tests=(TestCase([], expected),), hidden_tests=(TestCase([], expected),),
                   reference_solution=f"def f():\n    return {ret}\n")


def stdin(code: str, expected: str) -> Problem:
    return Problem(id=f"k/{code}", statement="", mode="stdin", public_tests=(TestCase("", expected),),
                   hidden_tests=(TestCase("", expected),), reference_solution=code + "\n")


@pytest.fixture(scope="module")
def sb():
    with Sandbox(timeout_s=2.0, workers=1) as s:
        yield s


def test_minicode_verification_agrees_with_the_sandbox(sb):
    problems = [functional(r, e) for r, e in FUNCTIONAL] + [stdin(c, e) for c, e in STDIN]
    evals = sb.evaluate_many([(p, p.reference_solution) for p in problems])
    for p, ev in zip(problems, evals):
        verified = verify_problems([p]) == []
        assert verified == ev.solved, (p.id, verified, ev)
    # the cases where the two used to disagree, spelled out
    assert verify_problems([functional("True", 1)]) == []
    assert verify_problems([functional("7.0", 7)]) == []
    assert verify_problems([functional("1.0000009", True)]) != []
    # a tolerance of 0 makes a float compare exactly, as the sandbox's float_tol=0 does
    assert verify_problems([functional("0.1 + 0.2", 0.3)]) == [] and verify_problems([functional("0.1 + 0.2", 0.3)], tol=0.0)
