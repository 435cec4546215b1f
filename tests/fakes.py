"""FAKE generation backend and FAKE scorer for search tests (tests only; never used by the package).

- :class:`FakeBackend` answers each ``GenerationRequest`` with a scripted text and records every
  ``generate`` call (so tests can assert batching).
- :class:`FakeScorer` "runs" a program by reading markers in its text instead of executing it:
  ``# public: 1 0 1`` and ``# hidden: 1 1`` give the per-test verdicts (missing → all wrong); a ``None``
  program (no code block) gets ``no_code`` verdicts. Failing hidden verdicts carry the text
  ``HIDDEN_SECRET`` so tests can check that hidden results never reach feedback or prompts.
"""
from __future__ import annotations

import json
import re
from typing import Callable, Sequence

from mars2.rollout.backend import BackendBase, Generation, GenerationRequest
from mars2.sandbox.types import Evaluation, ExecResult, TestVerdict
from mars2.tasks.problem import Problem, TestCase

HIDDEN_MARK = "HIDDEN_SECRET"


def fake_problem(pid: str = "p0", n_public: int = 2, n_hidden: int = 3) -> Problem:
    return Problem(
        id=pid,
        statement=f"Return the input list of problem {pid} unchanged.",
        mode="functional",
        public_tests=tuple(TestCase([[i]], [i]) for i in range(n_public)),
        hidden_tests=tuple(TestCase([[1000 + i]], [1000 + i]) for i in range(n_hidden)),
        entry_point="f",
        starter_code="def f(xs):",
    )


def response(public: Sequence[int], hidden: Sequence[int], tag: str = "") -> str:
    """A model response whose program the fake scorer grades as given (1 = pass)."""
    pub = " ".join(str(int(x)) for x in public)
    hid = " ".join(str(int(x)) for x in hidden)
    return (f"Here you go.\n```python\ndef f(xs):\n    return xs  # {tag}\n"
            f"# public: {pub}\n# hidden: {hid}\n```")


class FakeBackend(BackendBase):
    """Scripted backend. ``respond(request, index)`` gives the text for the index-th request overall;
    a list of strings is consumed in order (cycling); the default answers a program passing everything."""

    def __init__(self, respond: Callable[[GenerationRequest, int], str] | Sequence[str] | None = None) -> None:
        if respond is None:
            respond = [response([1, 1], [1, 1, 1])]
        if not callable(respond):
            texts = list(respond)
            respond = lambda req, i: texts[i % len(texts)]  # noqa: E731
        super().__init__()
        self.respond = respond
        self.calls: list[list[GenerationRequest]] = []  # (a list here: the requests of each generate call)
        self.n_requests = 0

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.calls.append(list(requests))
        out = []
        for req in requests:
            text = self.respond(req, self.n_requests)
            self.n_requests += 1
            prompt_len = sum(len(m["content"].split()) for m in req.messages)
            ids = [len(w) for w in text.split()] or [0]
            out.append(Generation(text=text, prompt_ids=list(range(prompt_len)), response_ids=ids,
                                  logprobs=[-0.25] * len(ids), truncated=False, meta={"fake": True}))
        return out

    def state_dict(self) -> dict:
        return {"n_requests": self.n_requests}

    def load_state_dict(self, state: dict) -> None:
        self.n_requests = int(state["n_requests"])


_MARK = re.compile(r"#\s*(public|hidden):([ 01]*)")


class FakeScorer:
    """Grades programs from their markers (see module docstring); records every ``evaluate_many`` call."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[Problem, str | None]]] = []

    def evaluate_many(self, items: Sequence[tuple[Problem, str | None]]) -> list[Evaluation]:
        self.calls.append(list(items))
        return [self.evaluate(p, prog) for p, prog in items]

    def evaluate(self, problem: Problem, program: str | None) -> Evaluation:
        if program is None:
            return Evaluation(
                public=ExecResult([TestVerdict("no_code", error="no code found") for _ in problem.public_tests]),
                hidden=ExecResult([TestVerdict("no_code", error="no code found") for _ in problem.hidden_tests]),
            )
        marks = {k: [int(x) for x in v.split()] for k, v in _MARK.findall(program)}
        return Evaluation(
            public=self._run(problem.public_tests, marks.get("public", []), secret=False),
            hidden=self._run(problem.hidden_tests, marks.get("hidden", []), secret=True),
        )

    @staticmethod
    def _run(tests: Sequence[TestCase], passes: list[int], secret: bool) -> ExecResult:
        verdicts = []
        for i, t in enumerate(tests):
            ok = i < len(passes) and passes[i] == 1
            actual = json.dumps(t.output) if ok else (f"{HIDDEN_MARK}_{i}" if secret else f"wrong_{i}")
            verdicts.append(TestVerdict(
                "passed" if ok else "wrong_answer",
                input=(f"{HIDDEN_MARK}_in_{i}" if secret else json.dumps(t.input)),
                expected=json.dumps(t.output),
                actual=actual,
            ))
        return ExecResult(verdicts)


class MeanRng:
    """Stands in for np.random.Generator: every draw returns the distribution's centre, so Thompson sampling
    becomes 'compare posterior means' and the selection logic can be checked exactly; ``random()`` (the T+
    discount's uniform draw) returns ``u``."""

    def __init__(self, u: float = 0.5):
        self.u = u

    def random(self):
        return self.u

    def gamma(self, shape):
        return 1.0

    def normal(self, loc, scale):
        return loc

    def beta(self, a, b):
        return a / (a + b)
