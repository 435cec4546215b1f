"""Grow one search tree per problem, many trees at once, with batched generation and scoring (method.md §3
"Budgets", §1, §2).

Each round: every unfinished tree proposes one expansion (``search.parallel=k``: up to k, before any of them
is scored); all the prompts go to the generation backend in ONE ``generate`` call (this is where rollout
speed comes from: per-token overhead dominates small-model generation, so batch size is the lever); all the
programs go to the scorer in ONE ``evaluate_many`` call (the sandbox runs them on its worker pool); then each
tree commits its nodes in proposal order. At k=1 expansions within a tree stay sequential, as AB-MCTS
requires; k>1 trades some of the search's information per node for k times fewer rounds.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Sequence

import numpy as np

from mars2.agents.base import AgentSpec
from mars2.rollout.backend import GenerationBackend, GenerationRequest
from mars2.agents.extraction import extract_program
from mars2.agents.prompts import fresh_messages, refine_messages
from mars2.rl.reward import REWARD_TESTS, training_reward
from mars2.sandbox.feedback import format_feedback
from mars2.sandbox.types import Evaluation
from mars2.search.ab_mcts import TreeSearch
from mars2.search.factory import SearchConfig, SeedLike, make_tree_search
from mars2.search.tree import Node, Tree
from mars2.tasks.problem import Problem

Progress = Callable[[int, int], None]


def search_score(evaluation: Evaluation, score: str) -> float:
    """§2: the node score the search uses — public pass-all (1/0), or the fraction of public tests passed."""
    if score == "fraction":
        return float(evaluation.public.fraction)
    return 1.0 if evaluation.public_pass else 0.0


class SearchRunner:
    """Runs ``config``'s search for a team of agents over a list of problems.

    ``scorer`` is duck-typed: ``evaluate_many([(problem, program | None), ...]) -> list[Evaluation]`` (the
    real one is ``mars2.sandbox.Sandbox``). After ``run``, ``stats`` holds timings for logging:
    ``generate_s``, ``score_s``, ``overhead_s`` (selection, prompts, extraction, commits), ``wall_s``,
    ``nodes``, ``generate_calls`` (= rounds), ``batch_mean``, ``batch_max``, ``parallel`` (k)."""

    def __init__(
        self,
        backend: GenerationBackend,
        scorer: Any,
        agents: Sequence[AgentSpec],
        config: SearchConfig,
        reward_tests: str = "all",
    ) -> None:
        if not agents:
            raise ValueError("SearchRunner needs at least one agent")
        if reward_tests not in REWARD_TESTS:
            raise ValueError(f"reward_tests must be one of {REWARD_TESTS}, got {reward_tests!r}")
        self.backend = backend
        self.scorer = scorer
        self.agents = list(agents)
        self.config = config
        self.reward_tests = reward_tests
        self.format_feedback = format_feedback
        self.stats: dict[str, float] = {}

    def make_searches(self, problems: Sequence[Problem], budget: int | None = None, seed: int = 0) -> list[TreeSearch]:
        """One fresh search state per problem; problem i's generator is seeded from ``(seed, i)``."""
        cfg = self.config
        if budget is not None and budget != cfg.budget:
            cfg = dataclasses.replace(cfg, budget=int(budget))
        return [make_tree_search(cfg, p, len(self.agents), seed=_seed(seed, i)) for i, p in enumerate(problems)]

    def run(
        self,
        problems: Sequence[Problem],
        budget: int | None = None,
        seed: int = 0,
        progress: Progress | None = None,
    ) -> list[Tree]:
        """Grow one tree per problem to ``budget`` nodes (``config.budget`` when None); trees in problem order."""
        searches = self.make_searches(problems, budget, seed)
        self.advance(problems, searches, progress)
        return [s.tree for s in searches]

    def advance(
        self,
        problems: Sequence[Problem],
        searches: Sequence[TreeSearch],
        progress: Progress | None = None,
    ) -> None:
        """Advance existing search states (e.g. reloaded ones) until every one has used its budget."""
        if len(problems) != len(searches):
            raise ValueError(f"{len(problems)} problems but {len(searches)} searches")
        cfg = self.config
        k = cfg.parallel
        t_start = time.perf_counter()
        gen_s = score_s = 0.0
        calls = nodes = batch_max = 0
        total = sum(s.budget if s.budget is not None else len(s.tree) for s in searches)
        while True:
            active = [i for i, s in enumerate(searches) if not s.done]
            if not active:
                break
            # up to k proposals per tree, tree by tree (k=1: one per tree, as before)
            owners: list[int] = []
            expansions = []
            for i in active:
                s = searches[i]
                for _ in range(k):
                    if not s.can_propose():
                        break
                    owners.append(i)
                    expansions.append(s.propose())
            if not expansions:
                raise RuntimeError("no tree can propose an expansion: some search has uncommitted proposals")
            requests = []
            for i, exp in zip(owners, expansions):
                problem, agent = problems[i], self.agents[exp.agent_id]
                if exp.fresh:
                    messages = fresh_messages(problem, agent)
                else:
                    parent = searches[i].tree.nodes[exp.parent_id]
                    messages = refine_messages(problem, agent, parent.program, parent.feedback,
                                               include_statement=cfg.include_statement)
                requests.append(GenerationRequest(agent.policy_id, messages))
            t0 = time.perf_counter()
            gens = self.backend.generate(requests)
            gen_s += time.perf_counter() - t0
            if len(gens) != len(requests):
                raise RuntimeError(f"backend returned {len(gens)} generations for {len(requests)} requests")
            programs = [extract_program(g.text) for g in gens]
            t0 = time.perf_counter()
            evals = self.scorer.evaluate_many([(problems[i], prog) for i, prog in zip(owners, programs)])
            score_s += time.perf_counter() - t0
            if len(evals) != len(requests):
                raise RuntimeError(f"scorer returned {len(evals)} evaluations for {len(requests)} programs")
            for i, exp, gen, prog, ev in zip(owners, expansions, gens, programs, evals):
                agent = self.agents[exp.agent_id]
                node = Node(
                    id=-1,  # set by Tree.add
                    parent_id=exp.parent_id,
                    depth=0,  # set by Tree.add
                    agent_id=exp.agent_id,
                    agent_name=agent.name,
                    policy_id=agent.policy_id,
                    text=gen.text,
                    program=prog,
                    prompt_ids=list(gen.prompt_ids),
                    response_ids=list(gen.response_ids),
                    logprobs=list(gen.logprobs),
                    truncated=bool(gen.truncated),
                    evaluation=ev,
                    score=search_score(ev, cfg.score),
                    reward=training_reward(ev, self.reward_tests),
                    # public tests only: hidden results must never leak into prompts
                    feedback=self.format_feedback(ev.public, cfg.feedback, cfg.feedback_max_chars),
                )
                searches[i].commit(exp, node)
            calls += 1
            nodes += len(requests)
            batch_max = max(batch_max, len(requests))
            if progress is not None:
                progress(sum(len(s.tree) for s in searches), total)
        wall = time.perf_counter() - t_start
        self.stats = {
            "nodes": float(nodes),
            "generate_calls": float(calls),
            "batch_mean": nodes / calls if calls else 0.0,
            "batch_max": float(batch_max),
            "parallel": float(k),
            "generate_s": gen_s,
            "score_s": score_s,
            "overhead_s": wall - gen_s - score_s,
            "wall_s": wall,
        }


def _seed(seed: SeedLike, index: int) -> list[int]:
    """Per-tree seed entropy ``(seed, problem index)``: trees get independent, reproducible streams."""
    if isinstance(seed, (int, np.integer)):
        return [int(seed) % 2**64, index]  # SeedSequence entropy must be non-negative
    return [*(int(x) % 2**64 for x in seed), index]  # type: ignore[union-attr]
