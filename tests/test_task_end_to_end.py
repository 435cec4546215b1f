"""End to end on every fixture format (issue 15): each loaded problem's reference solution passes its public
and hidden tests in the real ``mars2.sandbox.Sandbox``, and a wrong variant fails. LeetCode-style references
use ``List`` without importing it, as models do: they pass only because the LiveCodeBench prelude runs first.

The reference solutions are written here (the benchmark rows carry none, except HumanEval's canonical ones).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from mars2.sandbox import Sandbox
from mars2.tasks import LCB_PRELUDE, Problem, TestCase
from mars2.tasks.loaders import load_deepcoder, load_humaneval, load_livecodebench, load_verl_code

FIX = Path(__file__).parent / "fixtures" / "tasks"

SUM_STDIN = "n = int(input())\nxs = list(map(int, input().split()))\nprint(sum(xs))\n"

# problem id -> (reference solution, wrong variant)
SOLUTIONS: dict[str, tuple[str, str]] = {
    # LiveCodeBench
    "livecodebench/abc999_a": (SUM_STDIN, SUM_STDIN.replace("sum(xs)", "sum(xs) + (n > 1)")),
    "livecodebench/abc100_a": (SUM_STDIN, SUM_STDIN.replace("sum(xs)", "max(xs)")),
    "livecodebench/9001": (
        "class Solution:\n    def countGreater(self, nums: List[int], k: int) -> int:\n"
        "        return sum(x > k for x in nums)\n",
        "class Solution:\n    def countGreater(self, nums: List[int], k: int) -> int:\n"
        "        return sum(x >= k for x in nums)\n"),
    # DeepCoder (primeintellect / TACO / lcbv5 layouts)
    "deepcoder/deepcoder:1": ("a, b = map(int, input().split())\nprint(a + b)\n",
                              "a, b = map(int, input().split())\nprint(a - b)\n"),
    "deepcoder/deepcoder:2": ("def add(a, b):\n    return a + b\n", "def add(a, b):\n    return a * b\n"),
    "deepcoder/deepcoder:3": ("def pair_sums(xs):\n    return [a + b for a, b in zip(xs, xs[1:])]\n",
                              "def pair_sums(xs):\n    return [a + b for a, b in zip(xs, xs)]\n"),
    "deepcoder/deepcoder:4": ("n = int(input())\nprint(n * n)\n", "n = int(input())\nprint(n + n)\n"),
    "deepcoder/deepcoder:5": (
        "class Solution:\n    def maxTimes(self, nums: List[int], k: int) -> int:\n        return max(nums) * k\n",
        "class Solution:\n    def maxTimes(self, nums: List[int], k: int) -> int:\n        return max(nums) + k\n"),
    "deepcoder/deepcoder_lcbv5:1": (
        "class Solution:\n    def sumEven(self, nums: List[int]) -> int:\n"
        "        return sum(x for x in nums if x % 2 == 0)\n",
        "class Solution:\n    def sumEven(self, nums: List[int]) -> int:\n"
        "        return sum(x for x in nums if x > 0 and x % 2 == 0)\n"),
    "deepcoder/deepcoder_lcbv5:2": (
        # groupby comes from the prelude's `from itertools import *`, as in LiveCodeBench's harness
        "class Solution:\n    def longestRun(self, s: str) -> int:\n"
        "        return max(len(list(g)) for _, g in groupby(s))\n",
        "class Solution:\n    def longestRun(self, s: str) -> int:\n        return len(set(s))\n"),
    "deepcoder/deepcoder_lcbv5:3": (
        "class Solution:\n    def countPairs(self, nums: List[int], target: int) -> int:\n"
        "        return sum(a + b == target for a, b in combinations(nums, 2))\n",
        "class Solution:\n    def countPairs(self, nums: List[int], target: int) -> int:\n"
        "        return sum(a + b == target for a, b in permutations(nums, 2))\n"),
    "deepcoder/deepcoder_lcbv5:4": ("print(input()[::-1])\n", "print(input())\n"),
    # verl / MARTI rows
    "verl_code/train/0": ("a, b = map(int, input().split())\nprint(a * b)\n",
                          "a, b = map(int, input().split())\nprint(abs(a * b))\n"),
    "verl_code/train/1": (
        "class Solution:\n    def spread(self, nums: List[int]) -> int:\n        return max(nums) - min(nums)\n",
        "class Solution:\n    def spread(self, nums: List[int]) -> int:\n        return max(nums) - nums[0]\n"),
    "verl_code/train/2": ("def double_all(xs):\n    return [2 * x for x in xs]\n",
                          "def double_all(xs):\n    return [x * x for x in xs]\n"),
    "verl_code/test/0": (SUM_STDIN, SUM_STDIN.replace("sum(xs)", "sum(xs[1:])")),
    "verl_code/test/1": (
        "class Solution:\n    def countDivisible(self, nums: List[int], k: int) -> int:\n"
        "        return sum(x % k == 0 for x in nums)\n",
        "class Solution:\n    def countDivisible(self, nums: List[int], k: int) -> int:\n"
        "        return sum(x % k != 0 for x in nums)\n"),
}


def _fixture_problems() -> dict[str, list[Problem]]:
    return {
        "livecodebench.jsonl": load_livecodebench(FIX / "livecodebench.jsonl")["test"],
        "deepcoder.jsonl": load_deepcoder(FIX / "deepcoder.jsonl")["train"],
        "deepcoder.json": load_deepcoder(FIX / "deepcoder.json")["train"],
        "deepcoder_lcbv5.jsonl": load_deepcoder(FIX / "deepcoder_lcbv5.jsonl")["train"],
        "verl_code/*.jsonl": [p for ps in load_verl_code(FIX / "verl_code" / "train.jsonl",
                                                         FIX / "verl_code" / "test.jsonl").values() for p in ps],
        "verl_code/train.parquet": load_verl_code(FIX / "verl_code" / "train.parquet")["train"],
    }


@pytest.fixture(scope="module")
def sandbox():
    with Sandbox(timeout_s=10.0, workers=2, network="off") as sb:
        yield sb


def test_the_sandbox_runs_the_prelude_first(sandbox: Sandbox) -> None:
    probe = Problem(id="probe", statement="", mode="functional", public_tests=(TestCase([], 1),),
                    hidden_tests=(), entry_point="f", prelude="PRELUDE_VALUE = 1\n")
    assert sandbox.evaluate(probe, "def f():\n    return PRELUDE_VALUE\n").public_pass


@pytest.mark.parametrize("fixture", list(_fixture_problems()))
def test_references_pass_and_wrong_variants_fail(fixture: str, sandbox: Sandbox) -> None:
    problems = _fixture_problems()[fixture]
    assert problems and all(p.id in SOLUTIONS for p in problems), [p.id for p in problems]
    items = [(p, SOLUTIONS[p.id][0]) for p in problems] + [(p, SOLUTIONS[p.id][1]) for p in problems]
    evals = sandbox.evaluate_many(items)
    n = len(problems)
    for p, ev in zip(problems, evals[:n]):
        assert p.public_tests and p.hidden_tests
        assert ev.public_pass and ev.hidden_pass, (p.id, ev)
    for p, ev in zip(problems, evals[n:]):
        assert not (ev.public_pass and ev.hidden_pass), (p.id, "the wrong variant passed every test")


def test_humaneval_canonical_solutions_pass_and_wrong_variants_fail(sandbox: Sandbox) -> None:
    problems = load_humaneval(FIX / "humaneval.jsonl")["test"]
    assert all(p.prelude == "" for p in problems)  # HumanEval's harness has no import block
    wrong = {"HumanEval/X0": "    return [x + 2 for x in xs]\n", "HumanEval/X1": "    return x / 3\n"}
    evals = sandbox.evaluate_many([(p, p.reference_solution) for p in problems]
                                  + [(p, p.statement + wrong[p.id]) for p in problems])
    assert all(ev.public_pass and ev.hidden_pass for ev in evals[:2])
    assert not any(ev.public_pass and ev.hidden_pass for ev in evals[2:])


def test_leetcode_solution_without_import_needs_the_prelude(sandbox: Sandbox) -> None:
    """The issue's case: a correct LeetCode-style solution using ``List`` without importing it fails with
    NameError when there is no prelude, and passes with LiveCodeBench's."""
    ref = SOLUTIONS["livecodebench/9001"][0]
    assert "import" not in ref and "List[int]" in ref
    (with_prelude,) = [p for p in load_livecodebench(FIX / "livecodebench.jsonl")["test"] if p.mode == "functional"]
    (without,) = [p for p in load_livecodebench(FIX / "livecodebench.jsonl", prelude=False)["test"]
                  if p.mode == "functional"]
    assert with_prelude.prelude == LCB_PRELUDE and without.prelude == ""
    bare, full = sandbox.evaluate_many([(without, ref), (with_prelude, ref)])
    assert not bare.public_pass and not bare.hidden_pass
    assert "NameError" in str(bare) and "List" in str(bare)
    assert full.public_pass and full.hidden_pass
