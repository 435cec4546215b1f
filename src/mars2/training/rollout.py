"""The TreeSearchRollout callback: each round (= Lightning epoch) grows one tree per problem of the rollout
batch with the current policies, turns the trees into samples for the per-policy buffers, and evaluates on
held-out problems every few rounds (design.md "Data flow").

Round = epoch. The rollout of a round runs when the epoch's data stream is first iterated (see `run_round`);
logging, evaluation and checkpointed state are handled by the epoch-end hook."""
from __future__ import annotations

import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import lightning.pytorch as pl
import numpy as np

from mars2.agents.base import AgentSpec
from mars2.evaluation import evaluate_team
from mars2.rl.buffers import PolicyBuffers
from mars2.rl.samples import SampleConfig, samples_stats, tree_to_samples
from mars2.search.factory import SearchConfig
from mars2.search.runner import SearchRunner
from mars2.search.tree import Tree
from mars2.tasks.problem import Problem


def search_stats(trees: Sequence[Tree], agents: Sequence[AgentSpec]) -> dict[str, float]:
    """Per-round search metrics: score/reward means, depth and width, per-agent node counts and pass rates."""
    nodes = [n for t in trees for n in t.real_nodes()]
    out: dict[str, float] = {}
    if not nodes:
        return out
    out["search/nodes"] = float(len(nodes))
    out["search/score_mean"] = float(np.mean([n.score for n in nodes]))
    out["search/reward_mean"] = float(np.mean([n.reward for n in nodes]))
    out["search/depth_mean"] = float(np.mean([n.depth for n in nodes]))
    out["search/depth_max"] = float(max(n.depth for n in nodes))
    out["search/root_width_mean"] = float(np.mean([len(t.root.children) for t in trees]))
    out["search/solved_frac"] = float(np.mean([any(n.reward >= 1.0 for n in t.real_nodes()) for t in trees]))
    out["search/no_code_frac"] = float(np.mean([n.program is None for n in nodes]))
    out["search/response_len"] = float(np.mean([len(n.response_ids) for n in nodes]))
    counts = Counter(n.agent_id for n in nodes)
    for i, agent in enumerate(agents):
        mine = [n for n in nodes if n.agent_id == i]
        out[f"agent/{agent.name}/nodes"] = float(counts.get(i, 0))
        if mine:
            out[f"agent/{agent.name}/reward"] = float(np.mean([n.reward for n in mine]))
            out[f"agent/{agent.name}/refine_frac"] = float(np.mean([n.depth > 1 for n in mine]))
    return out


class TreeSearchRollout(pl.Callback):
    def __init__(
        self,
        *,
        agents: Sequence[AgentSpec],
        backend: Any,
        scorer: Any,
        train_problems: Sequence[Problem],
        test_problems: Sequence[Problem],
        buffers: PolicyBuffers,
        search: SearchConfig,
        sample_cfg: SampleConfig,
        rollout_batch_size: int,
        reward_tests: str,
        eval_cfg: dict[str, Any],
        eval_search: SearchConfig,
        seed: int,
        output_dir: Path,
        on_eval: Callable[[int, dict[str, float]], None] | None = None,
        progress: Any = None,
    ) -> None:
        super().__init__()
        self.agents = list(agents)
        self.backend = backend
        self.scorer = scorer
        self.train_problems = list(train_problems)
        self.test_problems = list(test_problems)
        self.buffers = buffers
        self.search = search
        self.sample_cfg = sample_cfg
        self.rollout_batch_size = rollout_batch_size
        self.reward_tests = reward_tests
        self.eval_cfg = eval_cfg
        self.eval_search = eval_search
        self.seed = seed
        self.output_dir = Path(output_dir)
        self.on_eval = on_eval
        self.progress = progress
        # data position: an epoch-wise seeded permutation of the train problems
        self.data_epoch = 0
        self.data_pos = 0
        self.rounds_done = 0
        self.history: list[dict[str, float]] = []
        self.evals: list[dict[str, float]] = []
        self._round_metrics: dict[str, float] = {}
        self._t_round = 0.0
        self._rounds_task = None

    # -- data -------------------------------------------------------------------------------------------------
    def _order(self, epoch: int) -> list[int]:
        idx = list(range(len(self.train_problems)))
        random.Random(self.seed * 100003 + epoch).shuffle(idx)
        return idx

    def next_batch(self) -> list[Problem]:
        batch = []
        while len(batch) < self.rollout_batch_size:
            order = self._order(self.data_epoch)
            if self.data_pos >= len(order):
                self.data_epoch += 1
                self.data_pos = 0
                continue
            batch.append(self.train_problems[order[self.data_pos]])
            self.data_pos += 1
        return batch

    # -- hooks ------------------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.progress is not None:
            self._rounds_task = self.progress.add_task("rounds", total=trainer.max_epochs, completed=self.rounds_done)
        if self.eval_cfg.get("at_start", True) and self.rounds_done == 0 and not self.evals:
            self.evaluate(trainer, round_idx=0)

    def run_round(self) -> None:
        """Grow the trees of one round and fill the buffers. Called by the BufferStream when Lightning starts
        iterating an epoch: for the first epoch Lightning pre-fetches a batch *before* `on_train_epoch_start`,
        so the rollout must be triggered by the data stream itself, not by an epoch hook."""
        round_idx = self.rounds_done
        self._t_round = time.perf_counter()
        problems = self.next_batch()
        runner = SearchRunner(self.backend, self.scorer, self.agents, self.search, reward_tests=self.reward_tests)
        task = None
        if self.progress is not None:
            total = len(problems) * self.search.budget
            task = self.progress.add_task(f"round {round_idx + 1} rollout", total=total)
        trees = runner.run(
            problems,
            budget=self.search.budget,
            seed=self.seed * 1_000_003 + round_idx,
            progress=(lambda done, total: self.progress.update(task, completed=done)) if task is not None else None,
        )
        if task is not None:
            self.progress.remove_task(task)
        samples = [s for t in trees for s in tree_to_samples(t, self.sample_cfg, step=round_idx)]
        self.buffers.route(samples)
        m = search_stats(trees, self.agents)
        m.update({f"rl/{k}": v for k, v in samples_stats(samples).items()})
        for pid in self.buffers:
            m[f"policy/{pid}/buffer"] = float(len(self.buffers[pid]))
        for k, v in getattr(runner, "stats", {}).items():
            if isinstance(v, (int, float)):
                m[f"search/{k}"] = float(v)
        self._round_metrics = m
        self.last_trees = trees

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.rounds_done += 1
        round_idx = self.rounds_done
        m = dict(self._round_metrics)
        for pid, stats in pl_module.drain_round_stats().items():
            m[f"policy/{pid}/updates"] = float(len(stats))
            for key in stats[0]:
                m[f"policy/{pid}/{key}"] = float(np.mean([s[key] for s in stats]))
        for pid in self.buffers:
            m[f"policy/{pid}/step"] = float(pl_module.policy_steps.get(pid, 0))
        m["time/round_s"] = time.perf_counter() - self._t_round
        m["round"] = float(round_idx)
        self.history.append(m)
        if self.progress is not None and self._rounds_task is not None:
            self.progress.update(self._rounds_task, completed=round_idx)
        for logger in trainer.loggers:
            logger.log_metrics(m, step=round_idx)
        every = int(self.eval_cfg.get("every", 1))
        if round_idx % every == 0 or round_idx == trainer.max_epochs:
            self.evaluate(trainer, round_idx)

    # -- evaluation -------------------------------------------------------------------------------------------
    def evaluate(self, trainer: pl.Trainer, round_idx: int) -> dict[str, float]:
        n = int(self.eval_cfg.get("n_problems", 0) or 0)
        problems = self.test_problems[:n] if n else self.test_problems
        task = None
        if self.progress is not None:
            budget = int(self.eval_cfg["budget"])
            n_searches = 1 if self.eval_cfg.get("mode", "system") == "system" else len(self.agents)
            task = self.progress.add_task(f"eval @ round {round_idx}", total=len(problems) * budget * n_searches)
        metrics, trees = evaluate_team(
            self.backend,
            self.scorer,
            self.agents,
            problems,
            self.eval_search,
            budget=int(self.eval_cfg["budget"]),
            mode=self.eval_cfg.get("mode", "system"),
            pass1_samples=int(self.eval_cfg.get("pass1_samples", 1)),
            tts_budgets=list(self.eval_cfg.get("tts_budgets", [])),
            seed=self.seed + 7919,  # same eval search seed at every round: curves differ only by the policies
            progress=(lambda done, total: self.progress.update(task, completed=done)) if task is not None else None,
        )
        if task is not None:
            self.progress.remove_task(task)
        metrics["round"] = float(round_idx)
        self.evals.append(metrics)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=round_idx)
        self._save_trees(trees, round_idx)
        if self.on_eval is not None:
            self.on_eval(round_idx, metrics)
        return metrics

    def _save_trees(self, trees: dict[str, list[Tree]], round_idx: int) -> None:
        from mars2.search.serialize import tree_to_dict

        path = self.output_dir / "trees" / f"eval_round{round_idx:04d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({k: [tree_to_dict(t) for t in ts] for k, ts in trees.items()}))

    # -- checkpointed state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "data_epoch": self.data_epoch,
            "data_pos": self.data_pos,
            "rounds_done": self.rounds_done,
            "history": self.history,
            "evals": self.evals,
            "buffers": self.buffers.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data_epoch = state["data_epoch"]
        self.data_pos = state["data_pos"]
        self.rounds_done = state["rounds_done"]
        self.history = state["history"]
        self.evals = state["evals"]
        self.buffers.load_state_dict(state["buffers"])
