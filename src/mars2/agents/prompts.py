"""Prompt building (method.md §1, §6). The same messages go through each policy's chat template, for
tiny models and real checkpoints alike.

- A child of the root gets the fresh-solution prompt.
- Any other child is a single-turn refinement of its parent: the parent's program, the parent's
  evaluation feedback (public tests only) and, by default, the problem statement.
"""
from __future__ import annotations

from mars2.agents.base import AgentSpec
from mars2.tasks.problem import Problem

ANSWER_FORMAT = "Answer with one ```python code block."
NO_CODE = "(no code found)"


def task_line(problem: Problem) -> str:
    if problem.mode == "functional":
        sig = problem.starter_code.strip() or f"def {problem.entry_point}(...):"
        return f"Write a Python function `{sig.rstrip(':')}`."
    return "Write a Python program that reads standard input and prints the answer."


def fresh_messages(problem: Problem, agent: AgentSpec) -> list[dict[str, str]]:
    user = f"{problem.statement.strip()}\n{task_line(problem)} {ANSWER_FORMAT}"
    return _with_system(agent, user)


def refine_messages(
    problem: Problem,
    agent: AgentSpec,
    parent_program: str | None,
    feedback: str,
    include_statement: bool = True,
) -> list[dict[str, str]]:
    parts = []
    if include_statement:
        parts.append(f"{problem.statement.strip()}\n{task_line(problem)}")
    program = parent_program if parent_program is not None else NO_CODE
    parts.append(f"Previous program:\n```python\n{program}\n```")
    parts.append(f"Feedback:\n{feedback.strip()}")
    parts.append(f"Fix the program. {ANSWER_FORMAT}")
    return _with_system(agent, "\n".join(parts))


def format_response(program: str) -> str:
    """The response format the tiny policies are warm-started on (and real models are asked for)."""
    return f"```python\n{program.strip()}\n```"


def _with_system(agent: AgentSpec, user: str) -> list[dict[str, str]]:
    msgs = []
    if agent.role_prompt:
        msgs.append({"role": "system", "content": agent.role_prompt})
    msgs.append({"role": "user", "content": user})
    return msgs
