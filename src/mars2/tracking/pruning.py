"""Optuna pruning of a training run launched by the ``mars2_optuna`` sweeper, as a Lightning hook
(design.md "Experiment management").

Held-out evaluation metrics reach Lightning through its loggers (the rollout callback calls
``logger.log_metrics`` for every evaluation, at its round), so the pruning hook is a Lightning *logger*: it
sees exactly the evaluation dicts, reports ``eval/pass1`` (``MARS2_OPTUNA_METRIC``) as the trial's
intermediate value for that round and raises ``optuna.TrialPruned`` when the pruner says so; the run then
ends with status ``pruned`` and the sweeper records the trial as PRUNED. Being a logger it needs no line in
the training code: :func:`mars2.tracking.loggers.build_loggers` adds it when the sweeper's ``MARS2_OPTUNA_*``
variables are set (:mod:`mars2.tracking.optuna_trial`).
"""
from __future__ import annotations

from typing import Any, Mapping

from lightning.pytorch.loggers.logger import Logger

from mars2.tracking.optuna_trial import TrialReporter


class OptunaPruning(Logger):
    def __init__(self, reporter: TrialReporter) -> None:
        super().__init__()
        self.reporter = reporter

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "OptunaPruning | None":
        reporter = TrialReporter.from_env(env)
        return None if reporter is None else cls(reporter)

    @property
    def name(self) -> str:
        return "optuna"

    @property
    def version(self) -> str:
        return f"{self.reporter.study_name}/{self.reporter.trial_number}"

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self.reporter.report(metrics, step)
