"""Judging (issue 16, points 1, 6, 8 and the LiveCodeBench prelude): the parent never raises while judging,
integers compare exactly, feedback shows what the judge saw, and a problem's prelude runs before the program."""
from __future__ import annotations

import dataclasses

import pytest

from mars2.sandbox import Sandbox, format_feedback
from mars2.sandbox.executor import _verdict, outputs_equal, values_equal
from mars2.tasks.problem import Problem, TestCase

# LiveCodeBench's import block (lcb_runner/evaluation/testing_util.py, ``import_string``), abridged
LCB_PRELUDE = ("from string import *\nfrom re import *\nfrom datetime import *\nfrom collections import *\n"
               "from heapq import *\nfrom bisect import *\nfrom copy import *\nfrom math import *\n"
               "from random import *\nfrom statistics import *\nfrom itertools import *\nfrom functools import *\n"
               "from operator import *\nfrom io import *\nfrom sys import *\nfrom json import *\n"
               "from builtins import *\nfrom typing import *\nimport string\nimport re\nimport datetime\n"
               "import collections\nimport heapq\nimport bisect\nimport copy\nimport math\nimport random\n"
               "import statistics\nimport itertools\nimport functools\nimport operator\nimport io\nimport sys\n"
               "import json\nsys.setrecursionlimit(50000)\n")


def fn(tests, entry="f", **kw) -> Problem:
    return Problem(id="j", statement="", mode="functional", entry_point=entry,
                   public_tests=tuple(TestCase(i, o) for i, o in tests), hidden_tests=(), **kw)


def io(tests, **kw) -> Problem:
    return Problem(id="k", statement="", mode="stdin", public_tests=tuple(TestCase(i, o) for i, o in tests),
                   hidden_tests=(), **kw)


@pytest.fixture(scope="module")
def sb():
    with Sandbox(timeout_s=2.0, workers=1) as s:
        yield s


def statuses(res) -> list[str]:
    return [v.status for v in res.verdicts]


# -- 1: one program must never crash the caller -------------------------------------------------------

def test_huge_int_where_a_float_is_expected_is_a_verdict(sb):
    p = fn([([], 1.5), ([], [0.5, 2.5])])
    ev = sb.evaluate(p, "def f():\n    return 10 ** 400\n")  # raised OverflowError out of evaluate before
    assert statuses(ev.public) == ["wrong_answer", "wrong_answer"]
    ev = sb.evaluate(fn([([], 10 ** 400)]), "def f():\n    return 1.5\n")
    assert statuses(ev.public) == ["wrong_answer"]
    assert values_equal(10 ** 400, 10 ** 400, 1e-6) and not values_equal(10 ** 400, 1e300, 1e-6)
    assert not values_equal([10 ** 400], [float("inf")], 1e-6)


def test_any_failure_while_judging_becomes_a_verdict():
    class Boom:  # test data the comparison cannot handle (not JSON at all)
        def __repr__(self):
            raise RuntimeError("no repr")
    p = fn([([], 1)])
    t = TestCase([Boom()], Boom())
    v = _verdict(p, t, {"k": "ok", "v": "1"}, 1e-6)
    assert v.status in ("runtime_error", "wrong_answer")
    v = _verdict(p, p.public_tests[0], {"k": "ok", "v": "{\"$d\": 5}"}, 1e-6)  # malformed tagged value
    assert v.status == "wrong_answer"
    v = _verdict(p, p.public_tests[0], {"k": "ok", "v": "[" * 100000}, 1e-6)  # unreadable frame
    assert v.status == "runtime_error"


# -- 6: integers exactly, floats with the tolerance -----------------------------------------------------

def test_functional_integers_are_exact(sb):
    cases = [(123456789, "123456800.0", "wrong_answer"), (True, "1.0000009", "wrong_answer"),
             (7, "7.0", "passed"), (True, "1", "passed"), (0, "1e-9", "wrong_answer"),
             (2.0, "2.0000001", "passed"), (2.0, "2", "passed"), ([1, 2.5], "[1, 2.5000001]", "passed"),
             ([1, 2.5], "[1.0000001, 2.5]", "wrong_answer")]
    p = fn([([k], exp) for k, (exp, _, _) in enumerate(cases)])
    prog = "VALUES = [" + ", ".join(r for _, r, _ in cases) + "]\ndef f(k):\n    return VALUES[k]\n"
    assert statuses(sb.run(prog, p, p.public_tests)) == [s for _, _, s in cases]


def test_stdin_integer_tokens_are_exact(sb):
    cases = [("1000000", "1000001.0", "wrong_answer"), ("0", "9e-7", "wrong_answer"),
             ("1000000", "1000000.0", "passed"), ("1000000", "1e6", "passed"), ("7", "+007", "passed"),
             ("0.5", "0.5000001", "passed"), ("1", "1.0000001", "wrong_answer")]
    p = io([(printed, exp) for exp, printed, _ in cases])
    res = sb.run("print(input())", p, p.public_tests)
    assert statuses(res) == [s for _, _, s in cases]


def test_unicode_digits_separators_and_leading_zeros():
    """As LiveCodeBench's comparison (Decimal per whitespace-separated token): Unicode decimal digits are
    read by value, any Unicode whitespace separates, leading zeros do not matter, however many."""
    assert outputs_equal("１２３", "123", 1e-6) and outputs_equal("١٢٣ ٤", "123 4", 0.0)
    assert not outputs_equal("１２４", "123", 1e-6)
    assert outputs_equal("1\u00a02\u20293", "1 2\n3", 0.0)  # NBSP and U+2029 separate tokens
    assert outputs_equal("0" * 5000 + "12", "12", 0.0) and outputs_equal("-" + "0" * 5000 + "12", "-12", 0.0)
    assert not outputs_equal("0" * 5000 + "13", "12", 1e-6)
    assert outputs_equal("0" * 3000 + "1.5", "1.5", 1e-6)
    assert not outputs_equal("1e999999999", "1", 1e-6)  # a hostile exponent is no number here, no hang
    assert not outputs_equal("²", "2", 1e-6)  # superscripts are not decimal digits (Decimal refuses them too)


# -- 8: feedback shows the value as the judge saw it -------------------------------------------------

def test_feedback_does_not_lie_about_the_actual_value(sb):
    p = fn([([], 4)])
    prog = "class Four:\n    def __repr__(self):\n        return '4'\ndef f():\n    return Four()\n"
    res = sb.run(prog, p, p.public_tests)
    v = res.verdicts[0]
    assert v.status == "wrong_answer" and v.actual == "4 (type Four)" and v.expected == "4"
    text = format_feedback(res, "t_plus")
    assert "Expected: 4\n" in text and "Actual: 4 (type Four)" in text
    res = sb.run("def f():\n    return '4'\n", p, p.public_tests)
    assert res.verdicts[0].actual == "'4' (type str)"
    res = sb.run("def f():\n    return 5\n", p, p.public_tests)
    assert res.verdicts[0].actual == "5"  # same type: the plain value


# -- LiveCodeBench prelude ------------------------------------------------------------------------------

def test_prelude_in_functional_mode(sb):
    prog = ("class Solution:\n    def maxOf(self, xs: List[int]) -> int:\n"
            "        return max(accumulate(xs, operator.add))\n")
    p = fn([([[1, -2, 3]], 2)], entry="maxOf", meta={"class_name": "Solution"})
    res = sb.run(prog, p, p.public_tests)
    assert statuses(res) == ["runtime_error"] and "NameError" in res.verdicts[0].error  # no prelude: List
    lp = dataclasses.replace(p, prelude=LCB_PRELUDE)
    assert sb.run(prog, lp, lp.public_tests).all_passed


def test_prelude_in_stdin_mode_and_line_numbers(sb):
    p = io([("3\n", "6\n"), ("4\n", "24\n")], prelude=LCB_PRELUDE)
    prog = "n = int(input())\nprint(reduce(mul, range(1, n + 1)))\n"
    assert sb.run(prog, p, p.public_tests).all_passed
    assert statuses(sb.run(prog, dataclasses.replace(p, prelude=""), p.public_tests)) == ["runtime_error"] * 2
    # tracebacks name the model's own line numbers, not the prelude's
    res = sb.run("x = 1\ny = deque()\nraise ValueError('line 3')\n", p, p.public_tests)
    err = res.verdicts[0].error
    assert 'File "<string>", line 3, in <module>' in err and "ValueError: line 3" in err
    fp = fn([([], 1)], prelude=LCB_PRELUDE)
    res = sb.run("def f():\n    return [][0]\n", fp, fp.public_tests)
    assert 'line 2, in f' in res.verdicts[0].error
    # a program with its own __future__ import still compiles (it would not, pasted after the prelude)
    assert sb.run("from __future__ import annotations\ndef f() -> List[int]:\n    return 1\n", fp,
                  fp.public_tests).all_passed
