"""Held-out evaluation of a team (method.md §7): Pass@1 of fresh samples per agent, and Pass@1(MCTS),
Pass@N, avg_pass1 and the TTS curve of one search per problem (system mode: all agents in one tree;
agent mode: each agent searches alone). Plain Python: used by the training callback and evaluate.py."""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

from mars2.agents.base import AgentSpec, GenerationBackend, GenerationRequest
from mars2.agents.extraction import extract_program
from mars2.agents.prompts import fresh_messages
from mars2.metrics import avg_pass1, mean_ci, pass1_mcts, pass_at_n, tts_curve
from mars2.search.factory import SearchConfig
from mars2.search.runner import SearchRunner
from mars2.search.tree import Tree
from mars2.tasks.problem import Problem


def fresh_pass1(
    backend: GenerationBackend,
    scorer: Any,
    agents: Sequence[AgentSpec],
    problems: Sequence[Problem],
    samples: int = 1,
) -> dict[str, list[float]]:
    """Per agent, the hidden pass (0/1) of `samples` fresh solutions per problem, averaged per problem."""
    requests, keys = [], []
    for a_idx, agent in enumerate(agents):
        for p_idx, problem in enumerate(problems):
            for _ in range(samples):
                requests.append(GenerationRequest(agent.policy_id, fresh_messages(problem, agent)))
                keys.append((a_idx, p_idx))
    gens = backend.generate(requests)
    programs = [extract_program(g.text) for g in gens]
    evals = scorer.evaluate_many([(problems[p], prog) for (_, p), prog in zip(keys, programs)])
    per: dict[str, list[list[float]]] = {a.name: [[] for _ in problems] for a in agents}
    for (a_idx, p_idx), ev in zip(keys, evals):
        per[agents[a_idx].name][p_idx].append(float(ev.public_pass and ev.hidden_pass))
    return {name: [sum(v) / len(v) for v in rows] for name, rows in per.items()}


def evaluate_team(
    backend: GenerationBackend,
    scorer: Any,
    agents: Sequence[AgentSpec],
    problems: Sequence[Problem],
    search: SearchConfig,
    budget: int,
    mode: str = "system",
    pass1_samples: int = 1,
    tts_budgets: Sequence[int] = (),
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, float], dict[str, list[Tree]]]:
    """Returns flat metrics (``eval/...``) and the trees per searcher ("team" or agent name)."""
    t0 = time.perf_counter()
    metrics: dict[str, float] = {}
    per_agent = fresh_pass1(backend, scorer, agents, problems, pass1_samples)
    all_vals = []
    for name, vals in per_agent.items():
        metrics[f"eval/agent/{name}/pass1"] = sum(vals) / max(1, len(vals))
        all_vals.extend(vals)
    # team Pass@1: mean over agents and problems
    m, lo, hi = mean_ci(all_vals)
    metrics.update({"eval/pass1": m, "eval/pass1_lo": lo, "eval/pass1_hi": hi})

    searchers = {"team": list(agents)} if mode == "system" else {a.name: [a] for a in agents}
    trees_by: dict[str, list[Tree]] = {}
    for key, team in searchers.items():
        runner = SearchRunner(backend, scorer, team, dataclasses.replace(search, budget=budget))
        trees = runner.run(problems, budget=budget, seed=seed, progress=progress)
        trees_by[key] = trees
        prefix = "eval" if key == "team" else f"eval/agent/{key}"
        vals = [float(pass1_mcts([t])) for t in trees]
        m, lo, hi = mean_ci(vals)
        metrics.update({f"{prefix}/pass1_mcts": m, f"{prefix}/pass1_mcts_lo": lo, f"{prefix}/pass1_mcts_hi": hi})
        metrics[f"{prefix}/pass_at_n"] = float(pass_at_n(trees))
        metrics[f"{prefix}/avg_pass1"] = float(avg_pass1(trees))
        budgets = [b for b in tts_budgets if b <= budget]
        for b, v in zip(budgets, tts_curve(trees, budgets)):
            metrics[f"{prefix}/tts/{b}"] = float(v)
    if mode == "agent":
        # the team number in agent mode: the mean of the agents' solo searches
        solo = [metrics[f"eval/agent/{a.name}/pass1_mcts"] for a in agents]
        metrics["eval/pass1_mcts"] = sum(solo) / len(solo)
    metrics["eval/seconds"] = time.perf_counter() - t0
    return metrics, trees_by
