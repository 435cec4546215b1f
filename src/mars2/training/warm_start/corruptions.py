"""The repair examples' buggy programs (`mars2.training.warm_start`): near misses of the reference solutions
(:func:`corrupt_program`, :func:`build_refine_pool`, run in the sandbox for their real public-test feedback)
and the policy's own failures (:func:`harvest_failures`), each with its feedback in every style."""
from __future__ import annotations

import dataclasses
import random
import re
from typing import Any, Sequence

from mars2.agents.base import AgentSpec
from mars2.agents.prompts import fresh_messages
from mars2.tasks.problem import Problem

_OPERATOR_SWAPS: tuple[tuple[str, str], ...] = (
    (" + ", " - "), (" - ", " + "), (" * ", " + "), (" // ", " % "), (" % ", " // "),
    (" > ", " < "), (" < ", " > "), (" >= ", " > "), (" <= ", " < "), (" == ", " != "), (" != ", " == "),
    ("min(", "max("), ("max(", "min("), ("sum(", "len("), ("len(", "sum("),
    ("reverse=True", "reverse=False"), ("[::-1]", "[1:]"), (".upper()", ".lower()"), (".lower()", ".upper()"),
    ("isalpha()", "isdigit()"), ("isdigit()", "isalpha()"), (" not in ", " in "),
)
_INT = re.compile(r"(?<![\w.])(-?\d+)(?![\w.])")


def _body_lines(lines: list[str]) -> list[int]:
    """Indices of lines a corruption may touch: everything except the ``def`` line and blank lines."""
    return [i for i, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith("def ")]


_COMPARISON_SWAPS: tuple[tuple[str, str], ...] = (
    (" >= ", " > "), (" > ", " >= "), (" <= ", " < "), (" < ", " <= "), (" == ", " != "), (" != ", " == "),
)
# The near-miss bugs of issue 17, by name: missing step (drop_line), swapped steps (swap_lines), wrong
# constant (constant: ±1 or ±2), off-by-one (off_by_one: ±1), wrong operator / wrong primitive call
# (operator), wrong comparison (comparison: > vs >=, == vs !=), wrong primitive (foreign_line: a step of
# another problem in place of one of this problem's steps).
CORRUPTIONS = ("drop_line", "swap_lines", "constant", "off_by_one", "operator", "comparison", "foreign_line")


def corrupt_program(program: str, rng: random.Random, donor_lines: Sequence[str] = (),
                    kind: str | None = None) -> tuple[str, str] | None:
    """One small edit of ``program`` → ``(kind, new_program)``, or None if the edit does not apply.

    Kinds (drawn uniformly unless given): ``drop_line``, ``swap_lines`` (two adjacent transformation
    lines), ``constant`` (an integer literal ±1 or ±2), ``off_by_one`` (an integer literal ±1),
    ``operator`` (e.g. ``+``→``-``, ``min``→``max``), ``comparison`` (``>``→``>=``, ``==``→``!=``, ...),
    ``foreign_line`` (a transformation line replaced by one from ``donor_lines``)."""
    lines = program.rstrip("\n").split("\n")
    body = _body_lines(lines)
    kind = kind or rng.choice(CORRUPTIONS)
    new = list(lines)
    if kind == "drop_line":
        # Keep at least one body line so the function is not empty (that would not parse).
        if len(body) < 2:
            return None
        del new[rng.choice(body)]
    elif kind == "swap_lines":
        pairs = [(a, b) for a, b in zip(body, body[1:]) if b == a + 1 and not lines[b].lstrip().startswith(("return", "print"))]
        if not pairs:
            return None
        a, b = rng.choice(pairs)
        new[a], new[b] = new[b], new[a]
    elif kind in ("constant", "off_by_one"):
        spots = [(i, m) for i in body for m in _INT.finditer(lines[i])]
        if not spots:
            return None
        i, m = rng.choice(spots)
        val = int(m.group(1)) + rng.choice((-2, -1, 1, 2) if kind == "constant" else (-1, 1))
        new[i] = lines[i][: m.start(1)] + str(val) + lines[i][m.end(1):]
    elif kind in ("operator", "comparison"):
        swaps = _OPERATOR_SWAPS if kind == "operator" else _COMPARISON_SWAPS
        spots = [(i, a, b) for i in body for a, b in swaps if a in lines[i]]
        if not spots:
            return None
        i, a, b = rng.choice(spots)
        new[i] = lines[i].replace(a, b, 1)
    else:  # foreign_line: the phrase→line confusion, replacing one transformation line
        cands = [i for i in body if re.match(r"\s*(xs|s) = ", lines[i]) and "input()" not in lines[i]]
        if not cands or not donor_lines:
            return None
        i = rng.choice(cands)
        var = lines[i].strip().split(" ", 1)[0]
        donors = [d for d in donor_lines if d.startswith(f"{var} = ") and d != lines[i].strip()]
        if not donors:
            return None
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        new[i] = indent + rng.choice(donors)
    out = "\n".join(new)
    if out.strip() == program.strip():
        return None
    try:
        compile(out, "<corrupted>", "exec")
    except (SyntaxError, ValueError):
        return None
    return kind, out


def _donor_lines(problems: Sequence[Problem]) -> list[str]:
    seen: dict[str, None] = {}
    for p in problems:
        for ln in (p.reference_solution or "").split("\n"):
            s = ln.strip()
            if re.match(r"(xs|s) = ", s) and "input()" not in s:
                seen.setdefault(s, None)
    return list(seen)


def build_refine_pool(
    problems: Sequence[Problem], n: int, seed: int, sandbox: Any, feedback_style: str | Sequence[str] = "vanilla",
    max_feedback_chars: int = 1200, weights: Sequence[float] | None = None, twin_share: float = 0.0,
) -> list[tuple[Problem, str, str]]:
    """Up to ``n`` corrupted programs, each failing at least one public test, as triples (problem, corrupted
    program, real public-test feedback) — one triple per style when ``feedback_style`` is a list of styles
    (program-major: the styles of one program are adjacent). Problems are drawn round-robin over a seeded
    shuffle (or with ``weights``), and all candidates run in one ``sandbox.evaluate_many`` batch (public
    tests only: the feedback uses nothing else, and hidden tests would triple the sandbox time).
    ``twin_share``: for a problem with a vague step (minicode), the probability that the candidate is the
    other reading of that step instead of a :func:`corrupt_program` edit."""
    from mars2.sandbox.feedback import format_feedback
    from mars2.tasks.minicode import alternative_solution

    if n <= 0 or not problems:
        return []
    rng = random.Random(f"warm_start|refine|{seed}")
    donors = _donor_lines(problems)
    order = list(problems)
    rng.shuffle(order)
    cands: list[tuple[Problem, str]] = []
    seen: set[tuple[str, str]] = set()
    # 1.5×: some candidates pass the public tests (an edit that changes nothing observable) and are dropped.
    want = int(n * 1.5) + 8
    tries = 0
    while len(cands) < want and tries < 20 * want:
        p = order[tries % len(order)] if weights is None else rng.choices(problems, weights=weights)[0]
        tries += 1
        alt = alternative_solution(p) if twin_share > 0 and (p.meta or {}).get("vague") else None
        if alt is not None and rng.random() < twin_share:
            res: tuple[str, str] | None = ("twin", alt)
        else:
            res = corrupt_program(p.reference_solution or "", rng, donors)
        if res is None or (p.id, res[1]) in seen:
            continue
        seen.add((p.id, res[1]))
        cands.append((p, res[1]))
    public_only = [(dataclasses.replace(p, hidden_tests=()), prog) for p, prog in cands]
    evals = sandbox.evaluate_many(public_only)
    styles = [feedback_style] if isinstance(feedback_style, str) else list(feedback_style)
    pool: list[tuple[Problem, str, str]] = []
    kept = 0
    for (p, prog), ev in zip(cands, evals):
        if ev.public.all_passed:
            continue
        pool += [(p, prog, format_feedback(ev.public, st, max_feedback_chars)) for st in styles]
        kept += 1
        if kept >= n:
            break
    return pool


def harvest_failures(
    model, tokenizer, problems: Sequence[Problem], agents: Sequence[AgentSpec], n: int, seed: int, sandbox: Any,
    weights: Sequence[float] | None = None, max_new_tokens: int = 128, feedback_style: str | Sequence[str] = "vanilla",
    max_feedback_chars: int = 1200,
) -> list[tuple[Problem, AgentSpec, str | None, str]]:
    """The policy's own failures: ``n`` fresh solutions sampled at temperature 1 (seeded) for problems drawn
    with ``weights``; those failing a public test (or with no code) → (problem, agent, program, feedback),
    one tuple per style when ``feedback_style`` is a list of styles."""
    from mars2.rollout.backend import GenerationRequest
    from mars2.agents.extraction import extract_program
    from mars2.rollout.hf_backend import HFBackend
    from mars2.sandbox.feedback import format_feedback

    if n <= 0:
        return []
    rng = random.Random(f"warm_start|harvest|{seed}")
    chosen = rng.choices(list(problems), weights=weights, k=n)
    who = [rng.choice(list(agents)) for _ in chosen]
    backend = HFBackend({"p": model}, {"p": tokenizer}, max_new_tokens=max_new_tokens, temperature=1.0, seed=seed)
    gens = backend.generate([GenerationRequest("p", fresh_messages(p, a)) for p, a in zip(chosen, who)])
    progs = [extract_program(g.text) for g in gens]
    evals = sandbox.evaluate_many([(dataclasses.replace(p, hidden_tests=()), prog) for p, prog in zip(chosen, progs)])
    styles = [feedback_style] if isinstance(feedback_style, str) else list(feedback_style)
    return [(p, a, prog, format_feedback(ev.public, st, max_feedback_chars))
            for p, a, prog, ev in zip(chosen, who, progs, evals) if not ev.public.all_passed for st in styles]
