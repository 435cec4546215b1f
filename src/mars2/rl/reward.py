"""The RL reward of a node (method.md §2 ``reward.tests``): pass-all on a set of tests, judged by the sandbox.

The search scores nodes on public tests only (``mars2.rollout.runner.search_score``); the reward the policy
is trained on may also see the hidden tests: ``all`` (public ∪ hidden, MARTI's choice), ``public`` or
``hidden``."""
from __future__ import annotations

from mars2.sandbox.types import Evaluation

REWARD_TESTS = ("all", "public", "hidden")


def training_reward(evaluation: Evaluation, tests: str) -> float:
    """1.0 when the program passes every test of the chosen set, else 0.0."""
    if tests == "all":
        return 1.0 if evaluation.all_pass else 0.0
    if tests == "public":
        return 1.0 if evaluation.public_pass else 0.0
    if tests == "hidden":
        return 1.0 if evaluation.hidden_pass else 0.0
    raise ValueError(f"reward tests must be one of {REWARD_TESTS}, got {tests!r}")
