"""``hydra/sweeper=mars2_optuna``: hyperparameter search with Optuna ≥4 (design.md "Experiment management").

Why our own plugin: the official ``hydra-optuna-sweeper`` (1.2.0, the last release) requires ``optuna<3``
and pip then downgrades optuna to 2.10, which crashes on sqlite storage with SQLAlchemy 2. This sweeper is
the part of it mars2 needs, on the current Optuna API (ask/tell):

- search space from ``hydra.sweeper.params`` and/or the command line, in Hydra's override grammar:
  ``a,b,c`` / ``choice(a,b)`` → categorical; ``range(1,5)`` → int steps (stop excluded, as in Hydra; float
  ranges → categorical); ``interval(0.1,0.9)`` → float; ``tag(int, interval(2,9))`` → int;
  ``tag(log, interval(1e-5,1e-3))`` → log scale. Plain ``key=value``
  arguments are passed unchanged to every trial.
- storage (default sqlite, a stable path: not the time-stamped sweep dir) + a study name + ``load_if_exists``.
  The study name is ``<study_name>-<8 hex digits of the search space>`` (``space_in_name: true``, the
  default): two sweeps of one team over different search spaces get two studies instead of mixing their
  trials; ``space_in_name: false`` uses ``study_name`` as is. Re-running the same command re-running the same command **resumes** the study and runs trials until
  ``n_trials`` trials have finished in total. Trials left RUNNING by an interrupted sweep are marked FAIL
  (user attr ``interrupted``), do not count, and their parameters are enqueued again (``retry_interrupted``).
  One sweeper process per study at a time (it is the one driver; parallelism is ``n_jobs`` per batch).
- each batch of ``n_jobs`` trials goes to the configured Hydra launcher (basic, submitit local/SLURM);
  the objective is the job's return value (``train.py`` returns the final ``eval/pass1``) or, with
  ``metric: <key>``, that key of the final evaluation in the job's ``results.json``.
- a trial whose overrides do not compose (e.g. a misspelt search-space key) aborts the sweep before anything
  is launched: one line on stderr, exit code 2; the trial is marked FAIL with user attr ``not_composed``
  and does not count towards ``n_trials``.
- a job that raises is told FAIL (the study goes on); ``optuna.TrialPruned`` raised inside the job (see
  :class:`mars2.tracking.pruning.OptunaPruning`, which reports every evaluation; or
  :class:`mars2.tracking.optuna_trial.TrialReporter` in any other task function) is told PRUNED.
- sampler: ``hydra/sweeper/sampler=tpe|random`` (TPE default, seeded; re-seeded on resume so it does not
  replay its first points); pruner: ``hydra/sweeper/pruner=median|threshold|hyperband|nop`` — passed to the
  jobs as JSON (``MARS2_OPTUNA_PRUNER``) since a pruner is not stored with the study.
- the best trial is written to ``<sweep dir>/optimization_results.yaml``.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, MutableMapping, Optional, Sequence

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import IntervalSweep, Override, RangeSweep, Transformer
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger(__name__)

# the variables mars2.tracking.optuna_trial reads in the job (literal here: plugin modules stay import-light)
ENV_STORAGE = "MARS2_OPTUNA_STORAGE"
ENV_STUDY = "MARS2_OPTUNA_STUDY"
ENV_TRIAL = "MARS2_OPTUNA_TRIAL"
ENV_METRIC = "MARS2_OPTUNA_METRIC"
ENV_PRUNER = "MARS2_OPTUNA_PRUNER"


def _number(s: str) -> Any:
    for cast in (int, float):
        try:
            return cast(s)
        except ValueError:
            pass
    return s


def distribution_from_override(override: Override) -> Any:
    """An Optuna distribution for a sweep override (see the module docstring for the grammar)."""
    import optuna.distributions as od

    value = override.value()
    if override.is_choice_sweep():
        return od.CategoricalDistribution([_number(x) for x in override.sweep_iterator(transformer=Transformer.encode)])
    if override.is_range_sweep():
        assert isinstance(value, RangeSweep)
        values = list(override.sweep_iterator())
        if not values:
            raise ValueError(f"{override.input_line}: empty range")
        if value.shuffle:
            return od.CategoricalDistribution(values)
        if all(isinstance(v, int) for v in values):
            return od.IntDistribution(values[0], values[-1], step=int(value.step)) if len(values) > 1 else od.CategoricalDistribution(values)
        return od.CategoricalDistribution([float(v) for v in values])
    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep) and value.start is not None and value.end is not None
        log_scale = "log" in value.tags
        if "int" in value.tags:  # Hydra parses interval ends as floats: integers are asked for with a tag
            return od.IntDistribution(int(value.start), int(value.end), log=log_scale)
        return od.FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ValueError(f"{override.input_line}: not a sweep this sweeper can search (glob sweeps are not supported)")


def space_digest(space: Mapping[str, Any]) -> str:
    """8 hex digits identifying a search space (keys and distributions, order-independent)."""
    import optuna.distributions as od

    text = json.dumps({k: od.distribution_to_json(v) for k, v in sorted(space.items())}, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def study_name_for(base: str, space: Mapping[str, Any], space_in_name: bool = True) -> str:
    """The Optuna study a sweep uses: ``<base>-<space digest>`` (or ``base`` with ``space_in_name=False``)."""
    return f"{base}-{space_digest(space)}" if space_in_name else str(base)


def _one_line(e: BaseException) -> str:
    """An exception as one line: its first line, plus Hydra's "Key '...' is not in struct" line if any
    (compose errors span several lines; the 'To append ... use +key=' hint is left out)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    keep = lines[:1] + [ln for ln in lines[1:] if ln.startswith("Key ")][:1]
    return " ".join(keep) or type(e).__name__


def _quote(s: str) -> str:
    """A string as a quoted override value (paths and URLs contain ':' and '/')."""
    return "'" + str(s).replace("\\", "\\\\").replace("'", "\\'") + "'"


def _storage(url: str) -> Any:
    from mars2.tracking.optuna_trial import open_storage

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return open_storage(url)  # sqlite with a lock timeout: jobs report into the same file


def _spec(node: Any) -> Optional[Dict[str, Any]]:
    """A ``_target_`` config node as a plain dict (None when absent)."""
    if node is None:
        return None
    spec = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    return spec if isinstance(spec, dict) and spec.get("_target_") else None


class Mars2OptunaSweeper(Sweeper):
    def __init__(
        self,
        study_name: str,
        storage: str,
        n_trials: int = 20,
        n_jobs: int = 1,
        direction: str = "maximize",
        metric: Optional[str] = None,
        pruning_metric: str = "eval/pass1",
        sampler: Any = None,  # noqa: ARG002 - read from the config in setup()
        pruner: Any = None,  # noqa: ARG002
        params: Optional[Mapping[str, str]] = None,
        retry_interrupted: bool = True,
        space_in_name: bool = True,
    ) -> None:
        self.base_study_name = str(study_name)
        self.study_name = str(study_name)  # + the search space's digest once sweep() has parsed it
        self.space_in_name = bool(space_in_name)
        self.storage_url = str(storage)
        self.n_trials = int(n_trials)
        self.n_jobs = max(1, int(n_jobs))
        self.direction = str(direction)
        self.metric = metric
        self.pruning_metric = pruning_metric
        # Hydra hands sampler/pruner over already instantiated; setup() keeps their configs instead, to
        # re-seed the sampler on resume and to give the jobs the same pruner.
        self.sampler_spec: Optional[Dict[str, Any]] = None
        self.pruner_spec: Optional[Dict[str, Any]] = None
        self.params: Dict[str, str] = {str(k): str(v) for k, v in (params or {}).items()}
        self.retry_interrupted = bool(retry_interrupted)
        self.config: Optional[DictConfig] = None
        self.hydra_context: Optional[HydraContext] = None
        self.launcher: Any = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.sampler_spec = _spec(OmegaConf.select(config, "hydra.sweeper.sampler"))
        self.pruner_spec = _spec(OmegaConf.select(config, "hydra.sweeper.pruner"))
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    # -- study ------------------------------------------------------------------------------------------------
    def create_study(self) -> Any:
        """Create or load the study. On resume the sampler's seed is offset by the number of trials already
        in the study: a seeded sampler re-created with its original seed would propose the same first points
        again (TPE's random start-up trials, RandomSampler)."""
        import optuna

        from mars2.tracking.optuna_trial import build_from_spec

        study = optuna.create_study(
            study_name=self.study_name,
            storage=_storage(self.storage_url),
            sampler=build_from_spec(self.sampler_spec) or optuna.samplers.TPESampler(),
            pruner=build_from_spec(self.pruner_spec) or optuna.pruners.NopPruner(),
            direction=self.direction,
            load_if_exists=True,
        )
        n = len(study.get_trials(deepcopy=False))
        if n and self.sampler_spec and self.sampler_spec.get("seed") is not None:
            study.sampler = build_from_spec({**self.sampler_spec, "seed": int(self.sampler_spec["seed"]) + n})
        return study

    def recover_interrupted(self, study: Any) -> int:
        """Trials an interrupted sweep left RUNNING: FAIL + ``interrupted``; their params enqueued again."""
        from optuna.trial import TrialState

        n = 0
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            # No public API ends a stale trial (Optuna's own route is heartbeats, which need study.optimize).
            study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
            if self.retry_interrupted and t.params:
                study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number})
            n += 1
        if n:
            log.info(f"mars2_optuna: {n} trial(s) of an interrupted sweep marked failed (interrupted) and re-queued")
        return n

    @staticmethod
    def finished_trials(study: Any) -> List[Any]:
        """Trials that count towards ``n_trials``: complete, pruned, or failed — but not interrupted and not
        the ones whose overrides did not compose (nothing ran)."""
        from optuna.trial import TrialState

        done = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        return [t for t in study.get_trials(deepcopy=False, states=done)
                if not t.user_attrs.get("interrupted") and not t.user_attrs.get("not_composed")]

    # -- search space -------------------------------------------------------------------------------------------
    def parse(self, arguments: Sequence[str]) -> tuple[Dict[str, Any], List[str]]:
        """(search space: override key → distribution, fixed override strings)."""
        assert self.hydra_context is not None
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        merged: Dict[str, Override] = {}
        for o in parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments)):
            merged[o.get_key_element()] = o  # the command line wins over hydra.sweeper.params
        space, fixed = {}, []
        for key, o in merged.items():
            if o.is_sweep_override():
                space[key] = distribution_from_override(o)
            else:
                assert o.input_line is not None
                fixed.append(o.input_line)
        return space, fixed

    def trial_overrides(self, trial: Any, space: Mapping[str, Any], fixed: Sequence[str]) -> List[str]:
        """The job's overrides: fixed ones, the trial's parameters (``study.ask(space)`` suggested them all),
        and the ``MARS2_OPTUNA_*`` variables the job's pruning hook reads (set through
        ``hydra.job.env_set`` so they reach the job with every launcher and stay out of the run dir name)."""
        out = list(fixed)
        for key in space:
            out.append(f"{key}={trial.params[key]}")
        out += [
            f"++hydra.job.env_set.{ENV_STORAGE}={_quote(self.storage_url)}",
            f"++hydra.job.env_set.{ENV_STUDY}={_quote(self.study_name)}",
            f"++hydra.job.env_set.{ENV_TRIAL}={trial.number}",
            f"++hydra.job.env_set.{ENV_METRIC}={_quote(self.pruning_metric)}",
        ]
        if self.pruner_spec:
            out.append(f"++hydra.job.env_set.{ENV_PRUNER}={_quote(json.dumps(self.pruner_spec))}")
        return out

    # -- results ------------------------------------------------------------------------------------------------
    def objective_value(self, ret: JobReturn) -> float:
        if self.metric:
            out = Path(str(ret.hydra_cfg.hydra.runtime.output_dir)) if ret.hydra_cfg is not None else None
            if out is None:
                raise ValueError("no run dir to read the metric from")
            data = json.loads((out / "results.json").read_text())
            value = (data.get("final") or {}).get(self.metric)
        else:
            value = ret.return_value
        if value is None or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
            raise ValueError(f"objective {self.metric or 'return value'} is {value!r}")
        return float(value)

    def tell(self, study: Any, trial: Any, ret: JobReturn) -> str:
        from optuna.trial import TrialState

        if ret.status == JobStatus.COMPLETED:
            try:
                value = self.objective_value(ret)
            except Exception as e:
                trial.set_user_attr("error", f"{type(e).__name__}: {e}")
                study.tell(trial, state=TrialState.FAIL)
                return "failed"
            study.tell(trial, value)
            return "complete"
        exc = ret._return_value
        if type(exc).__name__ == "TrialPruned":
            study.tell(trial, state=TrialState.PRUNED)
            return "pruned"
        trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
        study.tell(trial, state=TrialState.FAIL)
        return "failed"

    def sweep(self, arguments: List[str]) -> Any:
        from optuna.trial import TrialState

        assert self.config is not None and self.launcher is not None and self.hydra_context is not None
        space, fixed = self.parse(arguments)
        if not space:
            raise ValueError("mars2_optuna: no search space (give hydra.sweeper.params or sweep overrides like "
                             "'model.optim.lr=tag(log,interval(1e-5,1e-3))')")
        self.study_name = study_name_for(self.base_study_name, space, self.space_in_name)
        study = self.create_study()
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        self.recover_interrupted(study)
        done = len(self.finished_trials(study))
        log.info(f"mars2_optuna: study {self.study_name!r} at {self.storage_url}: {done}/{self.n_trials} trials done")
        returns: List[Sequence[JobReturn]] = []
        while done < self.n_trials:
            n = min(self.n_jobs, self.n_trials - done)
            trials = [study.ask(space) for _ in range(n)]
            batch, launched = [], []
            for trial in trials:
                overrides = self.trial_overrides(trial, space, fixed)
                try:  # every trial of the batch must compose before anything is launched
                    self.validate_batch_is_legal([overrides])
                except Exception as e:
                    self.abort_not_composed(study, trials, trial, e)
                batch.append(overrides)
                launched.append(trial)
            if batch:
                results = self.launcher.launch(batch, initial_job_idx=launched[0].number)
                for trial, ret in zip(launched, results):
                    outcome = self.tell(study, trial, ret)
                    log.info(f"mars2_optuna: trial {trial.number} ({', '.join(f'{k}={v}' for k, v in trial.params.items())}): {outcome}")
                returns.append(results)
            done = len(self.finished_trials(study))
        self.write_results(study, sweep_dir)
        return returns

    def abort_not_composed(self, study: Any, trials: Sequence[Any], bad: Any, error: BaseException) -> None:
        """A trial's overrides do not compose (a typo in a search-space key, an unknown group option): the
        same mistake would fail every trial, so the sweep stops — one line on stderr, exit code 2. The asked
        trials of this batch are marked FAIL + ``not_composed`` (not counted: nothing ran)."""
        from optuna.trial import TrialState

        for t in trials:
            study._storage.set_trial_user_attr(t._trial_id, "not_composed", True)
            study._storage.set_trial_user_attr(t._trial_id, "error", f"{type(error).__name__}: {error}"[:2000])
            study.tell(t, state=TrialState.FAIL)
        params = ", ".join(f"{k}={v}" for k, v in bad.params.items())
        print(f"mars2_optuna: trial {bad.number} ({params}) does not compose: {_one_line(error)} "
              f"-- sweep aborted, nothing launched", file=sys.stderr, flush=True)
        raise SystemExit(2)

    def write_results(self, study: Any, sweep_dir: Path) -> None:
        from optuna.trial import TrialState

        counts: MutableMapping[str, int] = {}
        for t in study.get_trials(deepcopy=False):
            key = "interrupted" if t.user_attrs.get("interrupted") else t.state.name.lower()
            counts[key] = counts.get(key, 0) + 1
        results: Dict[str, Any] = {"name": "mars2_optuna", "study_name": self.study_name, "storage": self.storage_url,
                                   "trials": dict(counts)}
        if study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            best = study.best_trial
            results.update({"best_trial": best.number, "best_value": best.value, "best_params": dict(best.params)})
            log.info(f"mars2_optuna: best trial {best.number}: {best.value} with {best.params}")
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
