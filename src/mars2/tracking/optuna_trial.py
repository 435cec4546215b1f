"""The job side of an Optuna trial launched by the ``mars2_optuna`` Hydra sweeper: report intermediate values
to the trial and ask its pruner whether to stop (design.md "Experiment management").

The sweeper sets, per job (through ``hydra.job.env_set``, so it works with every launcher):

- ``MARS2_OPTUNA_STORAGE``: the study's storage URL (sqlite),
- ``MARS2_OPTUNA_STUDY``: the study name,
- ``MARS2_OPTUNA_TRIAL``: this job's trial number,
- ``MARS2_OPTUNA_METRIC`` (optional): the metric to report, default ``eval/pass1``;
- ``MARS2_OPTUNA_PRUNER`` (optional): the study's pruner as JSON ``{"_target_": "optuna.pruners.…", …}`` —
  a pruner is not stored with the study, and the job must decide with the sweeper's pruner, not Optuna's
  default.

Plain Python + optuna (imported lazily); the Lightning hook is :class:`mars2.tracking.pruning.OptunaPruning`.
"""
from __future__ import annotations

import importlib
import json
import math
import os
from typing import Any, Mapping

ENV_STORAGE = "MARS2_OPTUNA_STORAGE"
ENV_STUDY = "MARS2_OPTUNA_STUDY"
ENV_TRIAL = "MARS2_OPTUNA_TRIAL"
ENV_METRIC = "MARS2_OPTUNA_METRIC"
ENV_PRUNER = "MARS2_OPTUNA_PRUNER"


def build_from_spec(spec: Mapping[str, Any] | None) -> Any:
    """``{"_target_": "pkg.Class", **kwargs}`` → ``pkg.Class(**kwargs)`` (None → None)."""
    if not spec:
        return None
    kwargs = dict(spec)
    module, _, name = str(kwargs.pop("_target_")).rpartition(".")
    return getattr(importlib.import_module(module), name)(**kwargs)


def open_storage(url: str) -> Any:
    import optuna

    if url.startswith("sqlite:///"):
        # the sweeper and other jobs write to the same file: wait for its lock instead of failing at once
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    return url


class TrialReporter:
    """Reports ``metric`` of each metrics dict to trial ``trial_number`` of a stored study; raises
    ``optuna.TrialPruned`` when the study's pruner says so."""

    def __init__(self, storage: str, study_name: str, trial_number: int, metric: str = "eval/pass1",
                 pruner: Mapping[str, Any] | None = None) -> None:
        self.storage = storage
        self.study_name = study_name
        self.trial_number = int(trial_number)
        self.metric = metric
        self.pruner_spec = dict(pruner) if pruner else None
        self._trial: Any = None
        self.reported: dict[int, float] = {}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "TrialReporter | None":
        env = os.environ if env is None else env
        if not (env.get(ENV_STORAGE) and env.get(ENV_STUDY) and env.get(ENV_TRIAL)):
            return None
        pruner = json.loads(env[ENV_PRUNER]) if env.get(ENV_PRUNER) else None
        return cls(env[ENV_STORAGE], env[ENV_STUDY], int(env[ENV_TRIAL]), env.get(ENV_METRIC) or "eval/pass1", pruner)

    @property
    def trial(self) -> Any:
        if self._trial is None:
            import optuna

            study = optuna.load_study(study_name=self.study_name, storage=open_storage(self.storage),
                                      pruner=build_from_spec(self.pruner_spec))
            # Trial(study, id) is how Optuna's own integrations re-attach to a trial asked elsewhere.
            trial_id = study._storage.get_trial_id_from_study_id_trial_number(study._study_id, self.trial_number)
            self._trial = optuna.trial.Trial(study, trial_id)
        return self._trial

    def report(self, metrics: Mapping[str, Any], step: int | None) -> None:
        if self.metric not in metrics:
            return
        value = float(metrics[self.metric])
        if not math.isfinite(value):
            return
        step = int(step or 0)
        if step in self.reported:  # a resumed run re-evaluates a round: Optuna keeps the first report
            return
        self.reported[step] = value
        trial = self.trial
        trial.report(value, step)
        if trial.should_prune():
            import optuna

            raise optuna.TrialPruned(f"trial {self.trial_number} pruned at round {step}: {self.metric}={value:.4f}")
