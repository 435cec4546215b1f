"""Training data of the T+ reward model R_θ(problem, program) → [0, 1] (method.md §6.3): tree nodes labelled
by whether their program passes the hidden tests.

Held-out splits are by **problem**, not by node: nodes of one tree share a problem and often near-identical
programs, so a node split would leak and overstate AUC."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

from mars2.search.tree import Tree
from mars2.tasks.problem import Problem

__all__ = ["RMExample", "examples_from_trees", "split_by_problem"]


@dataclass(frozen=True)
class RMExample:
    """One (problem, program) pair with its label: 1.0 if the program passes the hidden tests."""

    problem_id: str
    problem_text: str
    program: str
    label: float
    node_id: int = 0
    public_score: float = 0.0


def examples_from_trees(
    trees: Iterable[Tree],
    problems: Mapping[str, Problem] | Sequence[Problem],
    include_no_code: bool = False,
) -> list[RMExample]:
    """One example per evaluated real node. Label = `Node.hidden_pass` (public and hidden tests all pass —
    the correctness that Pass@1(MCTS) scores, §7). Nodes without an evaluation are skipped; nodes with no
    extracted program are skipped unless ``include_no_code`` (they score 0 anyway and are never chosen over
    a node with code, so they only teach the model to spot an empty string)."""
    by_id = problems if isinstance(problems, Mapping) else {p.id: p for p in problems}
    out = []
    for tree in trees:
        problem = by_id[tree.problem_id]
        for node in tree.real_nodes():
            if node.evaluation is None:
                continue
            if node.program is None and not include_no_code:
                continue
            out.append(RMExample(
                problem_id=tree.problem_id,
                problem_text=problem.statement,
                program=node.program or "",
                label=1.0 if node.hidden_pass else 0.0,
                node_id=node.id,
                public_score=float(node.score),
            ))
    return out


def split_by_problem(
    examples: Sequence[RMExample], held_out_frac: float = 0.2, seed: int = 0
) -> tuple[list[RMExample], list[RMExample]]:
    """(train, held_out): a seeded random ``held_out_frac`` of the *problems* goes to held-out (at least one
    problem each side when there are ≥ 2 problems)."""
    ids = sorted({e.problem_id for e in examples})
    random.Random(seed).shuffle(ids)
    n_held = round(len(ids) * held_out_frac)
    if len(ids) >= 2:
        n_held = min(max(n_held, 1), len(ids) - 1)
    held = set(ids[:n_held])
    return [e for e in examples if e.problem_id not in held], [e for e in examples if e.problem_id in held]
