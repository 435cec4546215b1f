"""The TreeSearchRollout callback: each round (= Lightning epoch) grows one tree per problem of the rollout
batch with the current policies, turns the trees into samples for the per-policy buffers, and evaluates on
held-out problems every few rounds (design.md "Data flow").

Round = epoch. The rollout of a round runs when the epoch's data stream is first iterated (see `run_round`);
logging, evaluation and checkpointed state are handled by the epoch-end hook.

The callback only sequences: which problems (`mars2.training.sampler.ProblemSampler`), the collectives
(`mars2.training.strategy`), the round's metrics (`mars2.metrics.rounds`), the held-out evaluation
(`mars2.evaluation`) and the tree files (`mars2.training.tree_files`) live in their own modules.

Distributed runs (``trainer=ddp`` / ``trainer=fsdp``): the rollout and the evaluation run on **global rank 0
only**; rank 0 broadcasts the round's samples, every rank routes them into its own (hence identical) buffers,
and the data stream gives each rank its slice of every minibatch (`mars2.training.data`). Why rank 0 rather
than a rollout sharded over ranks: (1) the trees of a round are then the same whatever the world size — the
search seeds, the backend's per-call generator and the Thompson sampling are one stream — so ``trainer=ddp``
changes throughput, never the experiment, and a resumed or re-sharded run reproduces the same rollouts;
(2) at real scale the rollout is vLLM (one engine per policy, on its own GPUs) driven by one process anyway;
(3) the buffers are consistent by construction (one broadcast per round, no merge order to agree on). The
cost is that in the HF miniature the other ranks wait during generation. Under FSDP the HF backend needs the
full weights: the rollout runs inside ``summon_full_params(rank0_only=True)``; an engine with its own weights
(vLLM) gets them from `MarsModule.sync_policies`, which every rank enters before each rollout and evaluation.

Exact resume: the callback's state (data position, buffers, history, evals, RNG and backend counters) is in
every checkpoint; at the start of each round the global RNGs are re-seeded from (seed, round), so a round's
randomness does not depend on how many draws happened before it (Lightning's loops draw too)."""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, Sequence

import lightning.pytorch as pl
import numpy as np
import torch

from mars2.agents.base import AgentSpec
from mars2.evaluation import run_evaluation
from mars2.metrics.rounds import (
    buffer_stats, policy_sample_stats, policy_update_stats, round_search_stats, round_time_stats, runner_stats,
)
from mars2.reward_model.online import RoundwiseRM, selection_report
from mars2.rl.buffers import PolicyBuffers
from mars2.rl.samples import Sample, SampleConfig, samples_stats, tree_to_samples
from mars2.search.factory import SearchConfig
from mars2.rollout.runner import SearchRunner
from mars2.search.tree import Tree
from mars2.tasks.problem import Problem
from mars2.training import strategy
from mars2.training.checkpointing import plain, restore_metrics_csv, rng_state, set_rng_state
from mars2.training.sampler import ProblemSampler
from mars2.training.tree_files import save_eval_trees
from mars2.tracking import per_problem


def reseed(seed: int, round_idx: int) -> None:
    """Global RNGs as a function of (seed, round): nothing in a round depends on draws made before it, so
    a resumed round equals the uninterrupted one whatever Lightning drew in between."""
    s = (seed * 1_000_003 + round_idx * 7_919 + 17) % (2**32)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


class TreeSearchRollout(pl.Callback):
    """Lightning hooks of a MARS² training run; each hook calls small named steps (module docstring)."""

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
        on_restore: Callable[[list[dict[str, float]], int], None] | None = None,
        progress: Any = None,
        train_split: str = "train",
        extra_splits: dict[str, Sequence[Problem]] | None = None,
        reward_model: RoundwiseRM | None = None,
    ) -> None:
        super().__init__()
        self.extra_splits = dict(extra_splits or {})  # eval.extra_splits: fresh Pass@1 on each (e.g. test_iid)
        self.agents = list(agents)
        self.backend = backend
        self.scorer = scorer
        self.sampler = ProblemSampler(train_problems, rollout_batch_size, seed, split=train_split)
        self.test_problems = list(test_problems)
        self.buffers = buffers
        self.search = search
        self.sample_cfg = sample_cfg
        self.reward_tests = reward_tests
        self.eval_cfg = eval_cfg
        self.eval_search = eval_search
        self.seed = seed
        self.output_dir = Path(output_dir)
        self.on_eval = on_eval
        self.on_restore = on_restore
        self.progress = progress
        self.reward_model = reward_model  # R_θ fit on each round's nodes (experiment=reward_model), or None
        self.rounds_done = 0
        self.history: list[dict[str, float]] = []
        self.evals: list[dict[str, float]] = []
        self.restored_from: int | None = None  # rounds done in the checkpoint this run resumed from
        self.last_trees: list[Tree] = []
        self._round_metrics: dict[str, float] = {}
        self._buffer_before: dict[str, int] = {}
        self._t_round = 0.0
        self._rounds_task = None
        self._task = None  # the rich task of the search in progress
        self._trainer: pl.Trainer | None = None

    def next_batch(self) -> list[Problem]:
        return self.sampler.next_batch()

    # -- distributed steps (helpers in mars2.training.strategy) ---------------------------------------------
    def full_params(self, all_ranks: bool = False, for_backend: bool = True) -> ContextManager[Any]:
        """Context in which the policies' modules hold their full weights (`strategy.full_params`: FSDP only,
        a collective). ``for_backend``: only a backend that generates with the trainer's own modules
        (``capabilities.shares_trainer_modules``: HFBackend) needs them; vLLM / API engines hold their own
        weights. The capability is the same on every rank, so every rank makes the same choice."""
        if for_backend and not self.backend.capabilities.shares_trainer_modules:
            return strategy.full_params(None)
        return strategy.full_params(self._trainer, all_ranks=all_ranks)

    def sync_policies(self) -> None:
        """Every rank, before rank 0 generates: the module publishes updated policies to an engine that holds
        its own weights (`MarsModule.sync_policies`: a collective gather under FSDP, so it must happen here,
        where all ranks are, and not inside rank 0's generation)."""
        trainer = self._trainer
        module = trainer.lightning_module if trainer is not None else None
        if module is not None and hasattr(module, "sync_policies"):
            module.sync_policies()

    def on_rank0(self, fn: Callable[[], Any], default: Any) -> Any:
        """``fn()`` on rank 0 with the policies' full weights (every rank publishes weights and enters the
        context), its result broadcast to every rank."""
        self.sync_policies()
        out = default
        with self.full_params():
            if strategy.dist_info()[0] == 0:
                out = fn()
        return strategy.broadcast(out)

    # -- hooks ------------------------------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._trainer = trainer
        if self.restored_from is not None and trainer.is_global_zero:
            # The checkpoint is the source of truth: rows / evals after it belong to the round being redone.
            restore_metrics_csv(list(trainer.loggers), self.output_dir, self.restored_from, self.logged_rows())
            if self.on_restore is not None:
                self.on_restore(list(self.evals), self.restored_from)
        if self.progress is not None:
            self._rounds_task = self.progress.add_task("rounds", total=trainer.max_epochs, completed=self.rounds_done)
        if self.eval_cfg.get("at_start", True) and self.rounds_done == 0 and not self.evals:
            self.evaluate(trainer, round_idx=0)

    def run_round(self) -> None:
        """Grow the trees of one round and fill the buffers. Called by the BufferStream when Lightning starts
        iterating an epoch: for the first epoch Lightning pre-fetches a batch *before* `on_train_epoch_start`,
        so the rollout must be triggered by the data stream itself, not by an epoch hook."""
        round_idx = self.rounds_done
        reseed(self.seed, round_idx)
        self._t_round = time.perf_counter()
        problems = self.next_batch()  # every rank: the data position stays identical everywhere
        samples, m = self.on_rank0(lambda: self._rollout(problems, round_idx), ([], {}))
        self.buffers.route(samples)
        self._buffer_before = {pid: len(self.buffers[pid]) for pid in self.buffers}
        for pid in self.buffers:
            m[f"policy/{pid}/buffer"] = float(len(self.buffers[pid]))
        self._round_metrics = m

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.rounds_done += 1
        round_idx = self.rounds_done
        m = self._round_end_metrics(pl_module, round_idx)
        self.history.append(m)
        if self.progress is not None and self._rounds_task is not None:
            self.progress.update(self._rounds_task, completed=round_idx)
        if trainer.is_global_zero:
            self._log(trainer, m, round_idx)
            if self.reward_model is not None:
                self.reward_model.save(self.output_dir)
        every = int(self.eval_cfg.get("every", 1))
        if round_idx % every == 0 or round_idx == trainer.max_epochs:
            self.evaluate(trainer, round_idx)

    # -- the round's steps ------------------------------------------------------------------------------------
    def _rollout(self, problems: list[Problem], round_idx: int) -> tuple[list[Sample], dict[str, float]]:
        """Rank 0: grow one tree per problem, turn the trees into samples, and the round's search metrics."""
        runner = SearchRunner(self.backend, self.scorer, self.agents, self.search, reward_tests=self.reward_tests)
        trees = runner.run(problems, budget=self.search.budget, seed=self.seed * 1_000_003 + round_idx,
                           progress=self._progress_bar(f"round {round_idx + 1} rollout",
                                                       len(problems) * self.search.budget))
        self._close_progress_bar()
        samples = [s for t in trees for s in tree_to_samples(t, self.sample_cfg, step=round_idx)]
        m = round_search_stats(trees, [a.name for a in self.agents])
        m.update({f"rl/{k}": v for k, v in samples_stats(samples).items()})
        m.update(policy_sample_stats(samples, list(self.buffers)))
        m.update(runner_stats(getattr(runner, "stats", {}), trees))
        if self.reward_model is not None:  # R_θ learns from the round's nodes labelled by hidden tests
            m.update(self.reward_model.add_round(trees, problems, round_idx))
        self.last_trees = trees
        return samples, m

    def _round_end_metrics(self, pl_module: pl.LightningModule, round_idx: int) -> dict[str, float]:
        """The rollout's metrics plus the round's updates (every rank's step statistics: each trained on its
        slice of every minibatch), buffers and timing."""
        m = dict(self._round_metrics)
        updates, train_s = policy_update_stats(strategy.all_gather(pl_module.drain_round_stats()), list(self.buffers))
        m.update(updates)
        m.update(buffer_stats(self._buffer_before, {pid: len(self.buffers[pid]) for pid in self.buffers},
                              {pid: self.buffers[pid].last_dropped for pid in self.buffers}, pl_module.policy_steps))
        m.update(round_time_stats(time.perf_counter() - self._t_round, train_s, m.get("search/score_s", 0.0),
                                  m.get("search/generate_s", 0.0)))
        m["round"] = float(round_idx)
        return m

    def _progress_bar(self, label: str, total: int) -> Callable[[int, int], None] | None:
        """A rich task for one search (rank 0's bar); the runner's progress callback, or None without a bar."""
        self._task = None
        if self.progress is None:
            return None
        self._task = self.progress.add_task(label, total=total)
        return lambda done, _total: self.progress.update(self._task, completed=done)

    def _close_progress_bar(self) -> None:
        if self.progress is not None and self._task is not None:
            self.progress.remove_task(self._task)
        self._task = None

    @staticmethod
    def _log(trainer: pl.Trainer, metrics: dict[str, float], step: int) -> None:
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=step)
            # flush now: a killed run keeps every row up to its last checkpoint (metrics.csv continuity)
            try:
                logger.save()
            except Exception:
                pass

    # -- evaluation -------------------------------------------------------------------------------------------
    def evaluate(self, trainer: pl.Trainer, round_idx: int) -> dict[str, float]:
        """Held-out evaluation on rank 0 (every rank enters the full-weights context, a collective under
        FSDP); the metrics are broadcast so every rank's `evals` agree."""
        metrics = self.on_rank0(lambda: self._evaluate(round_idx), {})
        self.evals.append(metrics)
        if strategy.dist_info()[0] == 0:
            self._log(trainer, metrics, round_idx)
            if self.on_eval is not None:
                self.on_eval(round_idx, metrics)
        return metrics

    def _evaluate(self, round_idx: int) -> dict[str, float]:
        """Rank 0: the held-out evaluation after ``round_idx`` rounds (`mars2.evaluation`); its trees to disk."""
        n = int(self.eval_cfg.get("n_problems", 0) or 0)
        problems = self.test_problems[:n] if n else self.test_problems
        budget = int(self.eval_cfg["budget"])
        n_searches = 1 if self.eval_cfg.get("mode", "system") == "system" else len(self.agents)
        result = run_evaluation(
            self.backend,
            self.scorer,
            self.agents,
            problems,
            self.eval_search,
            budget=budget,
            mode=self.eval_cfg.get("mode", "system"),
            pass1_samples=int(self.eval_cfg.get("pass1_samples", 1)),
            tts_budgets=list(self.eval_cfg.get("tts_budgets", [])),
            seed=self.seed + 7919,  # same eval search seed at every round: curves differ only by the policies
            progress=self._progress_bar(f"eval @ round {round_idx}", len(problems) * budget * n_searches),
            extra_splits=self.extra_splits,
        )
        metrics, trees = result.metrics, result.trees
        per_problem.record(self.output_dir, result, round_idx, self.seed)  # for paired comparisons (compare.py)
        self._close_progress_bar()
        if self.reward_model is not None and self.reward_model.fitted:  # after the first round
            metrics.update(self._selection_metrics(problems, trees, budget))
        metrics["round"] = float(round_idx)
        save_eval_trees(self.output_dir, trees, round_idx)
        return metrics

    def _selection_metrics(self, problems: Sequence[Problem], trees: dict[str, list[Tree]],
                           budget: int) -> dict[str, float]:
        """Selection accuracy on the evaluation's trees of the public-test rule and of the current R_θ
        (``eval/select/rule``, ``eval/select/rm``, ``eval/select/oracle``, ``eval/select/changed``)."""
        rows = selection_report(self.reward_model.model, problems, trees, self.reward_model.mode, budget)
        return {k: sum(v) / len(v) for k, v in rows.items() if v}

    def logged_rows(self) -> list[tuple[int, dict[str, float]]]:
        """(step, metrics) in the order they were logged: eval at 0, then per round its metrics and its eval."""
        rows: list[tuple[float, int, int, dict[str, float]]] = []
        for i, h in enumerate(self.history):
            rows.append((float(h.get("round", i + 1)), 0, i, h))
        for i, e in enumerate(self.evals):
            rows.append((float(e.get("round", 0)), 1, i, e))
        return [(int(r), m) for r, _, _, m in sorted(rows, key=lambda x: x[:3])]

    # -- checkpointed state -----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **self.sampler.state_dict(),  # data_epoch, data_pos
            "rounds_done": self.rounds_done,
            "history": plain(self.history),
            "evals": plain(self.evals),
            "buffers": plain(self.buffers.state_dict()),
            "rng": rng_state(),
            "backend": plain(self.backend.state_dict()),
            **({"reward_model": plain(self.reward_model.state_dict())} if self.reward_model is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)
        self.rounds_done = state["rounds_done"]
        self.history = state["history"]
        self.evals = state["evals"]
        self.buffers.load_state_dict(state["buffers"])
        if "rng" in state:
            set_rng_state(state["rng"])
        if state.get("backend"):  # (checkpoints before the rollout package nested it under "state_dict")
            self.backend.load_state_dict(state["backend"].get("state_dict", state["backend"]))
        if self.reward_model is not None and state.get("reward_model"):
            self.reward_model.load_state_dict(state["reward_model"])
        self.restored_from = self.rounds_done
