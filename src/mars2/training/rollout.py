"""The TreeSearchRollout callback: each round (= Lightning epoch) grows one tree per problem of the rollout
batch with the current policies, turns the trees into samples for the per-policy buffers, and evaluates on
held-out problems every few rounds (design.md "Data flow").

Round = epoch. The rollout of a round runs when the epoch's data stream is first iterated (see `run_round`);
logging, evaluation and checkpointed state are handled by the epoch-end hook.

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

import contextlib
import json
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Sequence

import lightning.pytorch as pl
import numpy as np
import torch

from mars2.agents.base import AgentSpec
from mars2.evaluation import evaluate_team
from mars2.rl.buffers import PolicyBuffers
from mars2.rl.samples import Sample, SampleConfig, samples_stats, tree_to_samples
from mars2.search.factory import SearchConfig
from mars2.rollout.runner import SearchRunner
from mars2.search.tree import Tree
from mars2.tasks.problem import Problem
from mars2.training.checkpointing import plain, restore_metrics_csv, rng_state, set_rng_state


def dist_info() -> tuple[int, int]:
    """(global rank, world size); (0, 1) outside torch.distributed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (no-op outside torch.distributed)."""
    import torch.distributed as dist

    if dist_info()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather(obj: Any) -> list[Any]:
    import torch.distributed as dist

    world = dist_info()[1]
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def search_stats(trees: Sequence[Tree], agents: Sequence[AgentSpec]) -> dict[str, float]:
    """Per-round search metrics: score/reward means, depth and width, per-agent node counts, pass rates,
    response lengths."""
    nodes = [n for t in trees for n in t.real_nodes()]
    out: dict[str, float] = {}
    if not nodes:
        return out
    out["search/nodes"] = float(len(nodes))
    out["search/score_mean"] = float(np.mean([n.score for n in nodes]))
    out["search/reward_mean"] = float(np.mean([n.reward for n in nodes]))
    out["search/pass_rate"] = float(np.mean([_passes(n) for n in nodes]))
    out["search/depth_mean"] = float(np.mean([n.depth for n in nodes]))
    out["search/depth_max"] = float(max(n.depth for n in nodes))
    out["search/root_width_mean"] = float(np.mean([len(t.root.children) for t in trees]))
    # width: children per expanded node (root included), i.e. the branching the search chose
    widths = [len(n.children) for t in trees for n in t.nodes if n.children]
    out["search/width_mean"] = float(np.mean(widths)) if widths else 0.0
    out["search/width_max"] = float(max(widths)) if widths else 0.0
    out["search/solved_frac"] = float(np.mean([any(n.reward >= 1.0 for n in t.real_nodes()) for t in trees]))
    out["search/no_code_frac"] = float(np.mean([n.program is None for n in nodes]))
    out["search/response_len"] = float(np.mean([len(n.response_ids) for n in nodes]))
    counts = Counter(n.agent_id for n in nodes)
    for i, agent in enumerate(agents):
        mine = [n for n in nodes if n.agent_id == i]
        out[f"agent/{agent.name}/nodes"] = float(counts.get(i, 0))
        if mine:
            out[f"agent/{agent.name}/reward"] = float(np.mean([n.reward for n in mine]))
            out[f"agent/{agent.name}/pass_rate"] = float(np.mean([_passes(n) for n in mine]))
            out[f"agent/{agent.name}/public_pass_rate"] = float(np.mean([n.score >= 1.0 for n in mine]))
            out[f"agent/{agent.name}/refine_frac"] = float(np.mean([n.depth > 1 for n in mine]))
            out[f"agent/{agent.name}/depth_mean"] = float(np.mean([n.depth for n in mine]))
            out[f"agent/{agent.name}/response_len"] = float(np.mean([len(n.response_ids) for n in mine]))
    return out


def _passes(node: Any) -> bool:
    """Node passes public and hidden tests (the evaluation's notion of correct, method.md §7)."""
    ev = node.evaluation
    return bool(ev.all_pass) if ev is not None else False


def policy_sample_stats(samples: Sequence[Sample], policy_ids: Sequence[str]) -> dict[str, float]:
    """Per-policy statistics the shared `samples_stats` does not give: advantage spread, pass rate (reward
    = 1), response length."""
    out: dict[str, float] = {}
    for pid in policy_ids:
        mine = [s for s in samples if s.policy_id == pid]
        if not mine:
            continue
        adv = np.array([s.advantage for s in mine], dtype=float)
        out[f"rl/policy/{pid}/advantage_std"] = float(adv.std())
        out[f"rl/policy/{pid}/advantage_min"] = float(adv.min())
        out[f"rl/policy/{pid}/advantage_max"] = float(adv.max())
        out[f"rl/policy/{pid}/pass_rate"] = float(np.mean([s.reward >= 1.0 for s in mine]))
        out[f"rl/policy/{pid}/response_len"] = float(np.mean([len(s.response_ids) for s in mine]))
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
        on_restore: Callable[[list[dict[str, float]], int], None] | None = None,
        progress: Any = None,
        train_split: str = "train",
    ) -> None:
        super().__init__()
        self.train_split = train_split
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
        self.on_restore = on_restore
        self.progress = progress
        # data position: an epoch-wise seeded permutation of the train problems
        self.data_epoch = 0
        self.data_pos = 0
        self.rounds_done = 0
        self.history: list[dict[str, float]] = []
        self.evals: list[dict[str, float]] = []
        self.restored_from: int | None = None  # rounds done in the checkpoint this run resumed from
        self.last_trees: list[Tree] = []
        self._round_metrics: dict[str, float] = {}
        self._buffer_before: dict[str, int] = {}
        self._t_round = 0.0
        self._rounds_task = None
        self._trainer: pl.Trainer | None = None

    # -- data -------------------------------------------------------------------------------------------------
    def _order(self, epoch: int) -> list[int]:
        idx = list(range(len(self.train_problems)))
        random.Random(self.seed * 100003 + epoch).shuffle(idx)
        return idx

    def next_batch(self) -> list[Problem]:
        if not self.train_problems:  # the loop below would never fill a batch
            from mars2.resources import SetupError

            raise SetupError(f"the training split {self.train_split!r} has no problems: pick another "
                             f"train_split or a task whose {self.train_split!r} split is not empty")
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

    # -- distributed helpers ----------------------------------------------------------------------------------
    def full_params(self, all_ranks: bool = False, for_backend: bool = True) -> Any:
        """Context in which the policies' modules hold their full weights. Only FSDP shards them; there it is
        ``summon_full_params`` on the strategy's root module — a collective, so every rank must enter it.
        ``all_ranks=False``: only rank 0 materialises them (rollout / evaluation run on rank 0).
        ``for_backend``: only a backend that generates with the trainer's own modules
        (``capabilities.shares_trainer_modules``: HFBackend) needs them; vLLM / API engines hold their own weights. The test
        must give the same answer on every rank (it decides whether a collective happens)."""
        trainer = self._trainer
        if trainer is None or type(trainer.strategy).__name__ != "FSDPStrategy":
            return contextlib.nullcontext()
        if for_backend and not self.backend.capabilities.shares_trainer_modules:
            return contextlib.nullcontext()
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        return FSDP.summon_full_params(trainer.model, writeback=False, rank0_only=not all_ranks)

    def sync_policies(self) -> None:
        """Every rank, before rank 0 generates: the module publishes updated policies to an engine that holds
        its own weights (`MarsModule.sync_policies`: a collective gather under FSDP, so it must happen here,
        where all ranks are, and not inside rank 0's generation)."""
        trainer = self._trainer
        module = trainer.lightning_module if trainer is not None else None
        if module is not None and hasattr(module, "sync_policies"):
            module.sync_policies()

    def _reseed(self, round_idx: int) -> None:
        """Global RNGs as a function of (seed, round): nothing in a round depends on draws made before it, so
        a resumed round equals the uninterrupted one whatever Lightning drew in between."""
        s = (self.seed * 1_000_003 + round_idx * 7_919 + 17) % (2**32)
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)

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
        self._reseed(round_idx)
        self._t_round = time.perf_counter()
        problems = self.next_batch()  # every rank: the data position stays identical everywhere
        rank, _ = dist_info()
        payload: tuple[list[Sample], dict[str, float]] = ([], {})
        self.sync_policies()
        with self.full_params():
            if rank == 0:
                payload = self._rollout(problems, round_idx)
        samples, m = broadcast(payload)
        self.buffers.route(samples)
        self._buffer_before = {pid: len(self.buffers[pid]) for pid in self.buffers}
        for pid in self.buffers:
            m[f"policy/{pid}/buffer"] = float(len(self.buffers[pid]))
        self._round_metrics = m

    def _rollout(self, problems: list[Problem], round_idx: int) -> tuple[list[Sample], dict[str, float]]:
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
        m = search_stats(trees, self.agents)
        m.update({f"rl/{k}": v for k, v in samples_stats(samples).items()})
        m.update(policy_sample_stats(samples, list(self.buffers)))
        stats = getattr(runner, "stats", {})
        for k, v in stats.items():
            if isinstance(v, (int, float)):
                m[f"search/{k}"] = float(v)
        gen_tokens = sum(len(n.response_ids) for t in trees for n in t.real_nodes())
        m["search/gen_tokens"] = float(gen_tokens)
        if stats.get("generate_s"):
            m["search/gen_tokens_per_s"] = gen_tokens / float(stats["generate_s"])
        self.last_trees = trees
        return samples, m

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.rounds_done += 1
        round_idx = self.rounds_done
        m = dict(self._round_metrics)
        # every rank trained on its slice of each minibatch: gather all ranks' step stats
        per_rank = all_gather(pl_module.drain_round_stats())
        train_s = 0.0
        for pid in self.buffers:
            mine = [s for stats in per_rank for s in stats.get(pid, [])]
            if not mine:
                continue
            m[f"policy/{pid}/updates"] = float(len(per_rank[0].get(pid, [])))
            keys = [k for k in mine[0] if k not in ("train_tokens", "train_s")]
            for key in keys:
                vals = [s[key] for s in mine if key in s]
                m[f"policy/{pid}/{key}"] = float(np.mean(vals))
            tokens = sum(s.get("train_tokens", 0.0) for s in mine)
            secs = sum(s.get("train_s", 0.0) for s in per_rank[0].get(pid, []))
            train_s += secs
            if secs > 0:
                m[f"policy/{pid}/train_tokens_per_s"] = tokens / secs
        for pid in self.buffers:
            buf = self.buffers[pid]
            before = self._buffer_before.get(pid, len(buf))
            m[f"policy/{pid}/step"] = float(pl_module.policy_steps.get(pid, 0))
            m[f"policy/{pid}/buffer_after"] = float(len(buf))
            m[f"policy/{pid}/dropped"] = float(buf.last_dropped)
            m[f"policy/{pid}/taken"] = float(max(0, before - len(buf) - buf.last_dropped))
        round_s = time.perf_counter() - self._t_round
        m["time/round_s"] = round_s
        m["time/train_s"] = train_s
        if round_s > 0:
            m["time/sandbox_share"] = m.get("search/score_s", 0.0) / round_s
            m["time/generate_share"] = m.get("search/generate_s", 0.0) / round_s
            m["time/train_share"] = train_s / round_s
        m["round"] = float(round_idx)
        self.history.append(m)
        if self.progress is not None and self._rounds_task is not None:
            self.progress.update(self._rounds_task, completed=round_idx)
        if trainer.is_global_zero:
            self._log(trainer, m, round_idx)
        every = int(self.eval_cfg.get("every", 1))
        if round_idx % every == 0 or round_idx == trainer.max_epochs:
            self.evaluate(trainer, round_idx)

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
        rank, _ = dist_info()
        metrics: dict[str, float] = {}
        self.sync_policies()
        with self.full_params():
            if rank == 0:
                metrics = self._evaluate(round_idx)
        metrics = broadcast(metrics)
        self.evals.append(metrics)
        if rank == 0:
            self._log(trainer, metrics, round_idx)
            if self.on_eval is not None:
                self.on_eval(round_idx, metrics)
        return metrics

    def _evaluate(self, round_idx: int) -> dict[str, float]:
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
        self._save_trees(trees, round_idx)
        return metrics

    def _save_trees(self, trees: dict[str, list[Tree]], round_idx: int) -> None:
        from mars2.search.serialize import tree_to_dict

        path = self.output_dir / "trees" / f"eval_round{round_idx:04d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({k: [tree_to_dict(t) for t in ts] for k, ts in trees.items()}))

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
            "data_epoch": self.data_epoch,
            "data_pos": self.data_pos,
            "rounds_done": self.rounds_done,
            "history": plain(self.history),
            "evals": plain(self.evals),
            "buffers": plain(self.buffers.state_dict()),
            "rng": rng_state(),
            "backend": plain(self.backend.state_dict()),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.data_epoch = state["data_epoch"]
        self.data_pos = state["data_pos"]
        self.rounds_done = state["rounds_done"]
        self.history = state["history"]
        self.evals = state["evals"]
        self.buffers.load_state_dict(state["buffers"])
        if "rng" in state:
            set_rng_state(state["rng"])
        if state.get("backend"):  # (checkpoints before the rollout package nested it under "state_dict")
            self.backend.load_state_dict(state["backend"].get("state_dict", state["backend"]))
        self.restored_from = self.rounds_done
