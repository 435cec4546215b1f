"""R_θ in the training pipeline (method.md §6.3, issue 20.6): fit on every round's tree nodes, saved with the
run, used by evaluate.py for the final answer.

* **Data.** Each training round adds one example per evaluated node with a program of that round's trees
  (`examples_from_trees`: label = the node passes the public and hidden tests). Examples accumulate over the
  run (all rounds so far).
* **Fit.** After each round R_θ is *updated*, not refit: ``epochs`` epochs over the round's new examples plus
  as many older ones (a seeded replay sample), continuing the previous rounds' weights and AdamW moments, so
  a round costs in proportion to its own nodes (about a second on the miniature's hashed n-gram classifier),
  not to the run's history. ``holdout_frac`` of the problems (a seeded hash of the problem id, so a problem
  stays on one side as problems arrive; by problem because the nodes of one tree are near duplicates) are
  never trained on and give ``rm/held_out_auc`` / ``rm/held_out_accuracy`` over all their nodes so far.
  Building and training R_θ runs inside ``torch.random.fork_rng`` and shuffles with its own seeded
  generators: it draws nothing from the global RNGs the policies' sampling uses, so enabling R_θ leaves the
  training run's trees, samples and updates unchanged.
* **Files and resume.** ``<run dir>/reward_model/rm.pt`` (`save_reward_model` format) and ``fit.json`` (the
  per-round fit records), rewritten after every round; the examples, weights and optimiser moments are in
  every training checkpoint, so a resumed run continues R_θ exactly.
* **Selection.** `selection_values`: per problem, whether the final answer passes the hidden tests under the
  public-test rule and under R_θ (`mars2.search.select.final_answer`), the oracle (some node passes) and
  whether the two choices differ — "selection accuracy" of each rule on the same trees.

Only the hashed n-gram model is wired into the pipeline: a value-head R_θ needs a backbone and tokenizer
(a policy checkpoint) that train.py does not build for it."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import random
import time
import zlib
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from mars2.reward_model.data import RMExample, examples_from_trees
from mars2.reward_model.model import HashedNgramRM
from mars2.reward_model.trainer import (
    RMTrainConfig, evaluate_reward_model, load_reward_model, make_optimizer, save_reward_model,
    train_reward_model,
)
from mars2.search.select import candidates, final_answer
from mars2.search.tree import Tree
from mars2.tasks.problem import Problem

__all__ = ["RoundwiseRM", "RUN_DIR_NAME", "MODEL_FILE", "run_reward_model_path", "load_run_reward_model",
           "selection_values", "selection_report", "add_selection_metrics"]

RUN_DIR_NAME = "reward_model"  # <run dir>/reward_model/, next to policies/
MODEL_FILE = "rm.pt"
PIPELINE_MODELS = ("hashed_ngram",)


class RoundwiseRM:
    """The run's R_θ: the examples of every round so far, the model and its optimiser (both kept across rounds),
    and the per-round fit records."""

    def __init__(self, fit: RMTrainConfig, holdout_frac: float = 0.2, mode: str = "tiebreak",
                 model_kwargs: Mapping[str, Any] | None = None) -> None:
        self.fit_cfg = fit
        self.holdout_frac = float(holdout_frac)
        self.mode = mode
        self.model_kwargs = dict(model_kwargs or {})
        self.examples: list[RMExample] = []
        self.history: list[dict[str, float]] = []
        self._features: dict = {}  # shared feature cache: each program is featurised once
        with torch.random.fork_rng(devices=[]):  # module construction draws from the global RNG
            self.model = HashedNgramRM(**{"seed": fit.seed, **self.model_kwargs})
        self.model.feature_cache = self._features
        self.optimizer = make_optimizer(self.model, fit)
        self.fitted = False

    @classmethod
    def from_config(cls, rm: Mapping[str, Any] | None, seed: int) -> "RoundwiseRM | None":
        """The ``rm:`` block of experiment=reward_model (None when absent or ``train: false``). The fit seed
        is a function of the run seed and ``rm.seed``."""
        if not rm or not rm.get("train", False):
            return None
        if rm.get("model", "hashed_ngram") not in PIPELINE_MODELS:
            from mars2.resources import SetupError

            raise SetupError(f"rm.model={rm.get('model')}: only {'|'.join(PIPELINE_MODELS)} is trained by train.py "
                             "(a value-head R_θ needs a policy backbone; train it with mars2.reward_model directly)")
        names = {f.name for f in dataclasses.fields(RMTrainConfig)}
        kw = {k: v for k, v in rm.items() if k in names}
        kw["seed"] = int(seed) * 1_000_003 + int(kw.get("seed", 0))
        return cls(RMTrainConfig(**kw), holdout_frac=float(rm.get("holdout_frac", 0.2)),
                   mode=str(rm.get("mode", "tiebreak")))

    def held_out(self, problem_id: str) -> bool:
        """Whether a problem's nodes are held out: a seeded hash of its id, so the assignment never changes as
        problems arrive (round after round) and a problem is on one side only."""
        h = zlib.crc32(f"{self.fit_cfg.seed}:{problem_id}".encode()) / 2**32
        return h < self.holdout_frac

    # -- one round ---------------------------------------------------------------------------------------------
    def add_round(self, trees: Sequence[Tree], problems: Sequence[Problem], round_idx: int) -> dict[str, float]:
        """Add the round's nodes, update R_θ on them (`update`); the ``rm/...`` metrics."""
        new = examples_from_trees(trees, problems)
        self.examples.extend(new)
        rec = self.update(new, round_idx)
        rec.update({"round": float(round_idx + 1), "new_examples": float(len(new))})
        self.history.append(rec)
        return {f"rm/{k}": v for k, v in rec.items() if k != "round" and not _nan(v)}

    def update(self, new: Sequence[RMExample], round_idx: int) -> dict[str, float]:
        """``epochs`` epochs over the round's new training examples plus as many older ones (a seeded replay
        sample, so earlier rounds are not forgotten), continuing the model and optimiser of the previous
        rounds; then held-out metrics over every held-out example so far. Cost per round ∝ the round's nodes."""
        t0 = time.perf_counter()
        train = [e for e in self.examples if not self.held_out(e.problem_id)]
        fresh = [e for e in new if not self.held_out(e.problem_id)]
        old = train[: len(train) - len(fresh)]
        rng = random.Random(self.fit_cfg.seed * 7_919 + round_idx)
        batch = fresh + rng.sample(old, min(len(old), len(fresh)))
        rec: dict[str, float] = {"examples": float(len(self.examples)), "train_examples": float(len(train)),
                                 "pos_frac": _mean([e.label for e in self.examples])}
        if batch:
            with torch.random.fork_rng(devices=[]):
                cfg = dataclasses.replace(self.fit_cfg, seed=self.fit_cfg.seed + round_idx)
                hist = train_reward_model(self.model, batch, cfg, optimizer=self.optimizer)
            self.fitted = True
            rec["train_loss"] = hist[-1]["train_loss"]
        held = [e for e in self.examples if self.held_out(e.problem_id)]
        if held and self.fitted:
            ho = evaluate_reward_model(self.model, held)
            rec.update({"held_out_auc": ho["auc"], "held_out_accuracy": ho["accuracy"], "held_out_n": ho["n"]})
        rec["fit_s"] = time.perf_counter() - t0
        return rec

    # -- files and checkpoint state ----------------------------------------------------------------------------
    def save(self, run_dir: Path) -> Path | None:
        """``<run_dir>/reward_model/rm.pt`` and ``fit.json`` (atomically replaced); None before the first fit."""
        if not self.fitted:
            return None
        d = Path(run_dir) / RUN_DIR_NAME
        d.mkdir(parents=True, exist_ok=True)
        path = d / MODEL_FILE
        tmp = d / f".{MODEL_FILE}.tmp{os.getpid()}"
        save_reward_model(self.model, tmp)
        os.replace(tmp, path)
        info = {"mode": self.mode, "holdout_frac": self.holdout_frac, "fit": dataclasses.asdict(self.fit_cfg),
                "examples": len(self.examples), "history": [_json_safe(h) for h in self.history]}
        tmp = d / f".fit.json.tmp{os.getpid()}"
        tmp.write_text(json.dumps(info, indent=2))
        os.replace(tmp, d / "fit.json")
        return path

    def state_dict(self) -> dict[str, Any]:
        return {"examples": [dataclasses.asdict(e) for e in self.examples], "history": list(self.history),
                "fit": dataclasses.asdict(self.fit_cfg), "holdout_frac": self.holdout_frac, "mode": self.mode,
                "model_kwargs": dict(self.model_kwargs), "fitted": self.fitted,
                # copies: a state must not alias the live tensors it will be restored into (AdamW's moments)
                "model": copy.deepcopy(self.model.state_dict()), "optimizer": copy.deepcopy(self.optimizer.state_dict())}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Examples, records, weights and optimiser moments of a checkpoint: the next round continues exactly."""
        self.examples = [RMExample(**e) for e in state.get("examples", [])]
        self.history = list(state.get("history", []))
        self.fitted = bool(state.get("fitted", False))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> "RoundwiseRM":
        fit = cls(RMTrainConfig(**state["fit"]), holdout_frac=state["holdout_frac"], mode=state.get("mode", "tiebreak"),
                  model_kwargs=state.get("model_kwargs"))
        fit.load_state_dict(state)
        return fit


def run_reward_model_path(run_dir: Path) -> Path | None:
    """``<run_dir>/reward_model/rm.pt`` when the run trained R_θ, else None."""
    p = Path(run_dir) / RUN_DIR_NAME / MODEL_FILE
    return p if p.is_file() else None


def load_run_reward_model(run_dir: Path, checkpoint: Path | None = None) -> Any:
    """The R_θ of a train.py run: the one in ``checkpoint`` (a killed run evaluated at its last checkpoint: the
    R_θ of that round exactly) when it holds one, else ``<run_dir>/reward_model/rm.pt``; None when the run
    trained none."""
    if checkpoint is not None and Path(checkpoint).is_file():
        state = _checkpoint_rm_state(Path(checkpoint))
        if state is not None and state.get("fitted"):
            return RoundwiseRM.from_state(state).model
    path = run_reward_model_path(run_dir)
    return load_reward_model(path) if path is not None else None


def _checkpoint_rm_state(checkpoint: Path) -> dict[str, Any] | None:
    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    for key, state in (ck.get("callbacks") or {}).items():
        if "TreeSearchRollout" in key and isinstance(state, dict) and state.get("reward_model"):
            return state["reward_model"]
    return None


def selection_values(trees: Sequence[Tree], rm_scores: Sequence[Mapping[int, float]], mode: str = "tiebreak",
                     budget: int | None = None) -> dict[str, list[float]]:
    """Per tree (problem): ``select/rule`` (the public-test rule's final answer passes the hidden tests),
    ``select/rm`` (R_θ's, ``mode`` tiebreak|rerank), ``select/oracle`` (some candidate passes) and
    ``select/changed`` (R_θ picked another node than the rule). Trees without candidates count 0."""
    out: dict[str, list[float]] = {"select/rule": [], "select/rm": [], "select/oracle": [], "select/changed": []}
    for tree, scores in zip(trees, rm_scores):
        cands = candidates(tree, budget)
        if not cands:
            for k in out:
                out[k].append(0.0)
            continue
        rule = final_answer(tree, None, budget=budget)
        rm = final_answer(tree, scores, mode=mode, budget=budget)
        out["select/rule"].append(float(rule.hidden_pass))
        out["select/rm"].append(float(rm.hidden_pass))
        out["select/oracle"].append(float(any(n.hidden_pass for n in cands)))
        out["select/changed"].append(float(rm.id != rule.id))
    return out


def selection_report(reward_model: Any, problems: Sequence[Problem], trees_by: Mapping[str, Sequence[Tree]],
                     mode: str = "tiebreak", budget: int | None = None) -> dict[str, list[float]]:
    """`selection_values` of every searcher's trees (the team in system mode, each agent in agent mode),
    per problem averaged over the searchers (each solo search is one attempt), keys ``eval/select/...``."""
    from mars2.evaluation import reward_model_scores

    per: dict[str, list[list[float]]] = {}
    for trees in trees_by.values():
        scores = reward_model_scores(reward_model, problems, trees)
        for k, v in selection_values(trees, scores, mode, budget).items():
            per.setdefault(k, []).append(v)
    return {f"eval/{k}": [sum(col) / len(col) for col in zip(*rows)] for k, rows in per.items()}


def add_selection_metrics(result: Any, reward_model: Any, problems: Sequence[Problem], mode: str,
                          budget: int) -> None:
    """Add `selection_report` to an evaluation result (`mars2.evaluation.EvalResult`): the per-problem
    values (so several seeds aggregate with intervals) and their means with 95 % intervals."""
    from mars2.evaluation import flat_metrics

    values = selection_report(reward_model, problems, result.trees, mode, budget)
    result.values.update(values)
    result.metrics.update(flat_metrics(values))


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _nan(x: Any) -> bool:
    return isinstance(x, float) and math.isnan(x)


def _json_safe(d: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (None if _nan(v) else v) for k, v in d.items()}
