"""Lightning loggers from the `logger` config group (design.md "Experiment management").

- CSV always (`metrics.csv` in the run dir: what compare.py reads without any tracker).
- wandb (:class:`Mars2WandbLogger`): offline unless ``WANDB_API_KEY`` is set, skipped when
  ``WANDB_MODE=disabled``; group = the sweep (``+sweep=<name>``), else the experiment, else ``name``; tags from
  paradigm/model/search; one run per job, finished by :func:`finish_loggers` in the caller's ``finally``
  with the job's status; at the end a table of sampled tree nodes and the final metrics in the summary.
- MLflow (:class:`Mars2MLFlowLogger`) on a sqlite store: flattened config as params, metrics, and at the end
  the artifacts `results.json`, `metrics.csv`, the resolved config, this run's plots and the node table.
- the per-round log lines (:class:`mars2.tracking.progress.RoundLogLogger`) of a training run: one INFO line
  per round in ``train.log`` (and on stdout when it is not a terminal).
- Optuna pruning (:class:`mars2.tracking.pruning.OptunaPruning`) when the mars2_optuna sweeper launched this
  job (it sets ``MARS2_OPTUNA_*`` in the job's environment).

The tracker run ids are saved in ``<run dir>/logger_ids.json`` (``{"wandb": <run id>, "mlflow": <run id>, ...}``,
the file `mars2.training.checkpointing` reads too); a resumed run (``resume=auto`` or ``resume=<run dir>``)
continues the same wandb run and MLflow run instead of starting new ones.
"""
from __future__ import annotations

import json
import logging
import os
import secrets
import string
from pathlib import Path
from typing import Any, Mapping

from lightning.pytorch.loggers import MLFlowLogger, WandbLogger

from mars2.tracking.records import write_json_atomic
from mars2.tracking.trees import TREE_TABLE_COLUMNS, sample_tree_nodes

log = logging.getLogger("mars2")

TRACKING_FILE = "logger_ids.json"
# MLflow metric names allow only [A-Za-z0-9_/. -]; agent names look like "solver@qwen3_a".
_MLFLOW_SAFE = set(string.ascii_letters + string.digits + "_/. -")


# -- run identity -----------------------------------------------------------------------------------------------
def run_group(c: Mapping[str, Any]) -> str:
    """The sweep name in a ``+sweep=<name>`` multirun, else the experiment name, else the run ``name``."""
    try:
        from hydra.core.hydra_config import HydraConfig

        choices = HydraConfig.get().runtime.choices
        for key in ("sweep", "experiment"):
            if choices.get(key):
                return str(choices[key])
    except Exception:  # not under Hydra (tests, library use)
        pass
    return str(c.get("name") or "mars2")


def resume_dir(c: Mapping[str, Any]) -> Path | None:
    """The run dir a resumed run continues (same rules as training's ``resume``), or None."""
    resume = c.get("resume")
    if not resume:
        return None
    out = Path(c["paths"]["output_dir"])
    if str(resume) == "auto":
        return out
    p = Path(str(resume))
    if p.is_file():  # a checkpoint file: <run dir>/checkpoints/last.ckpt
        p = p.parent.parent if p.parent.name == "checkpoints" else p.parent
    return p


def read_tracking_ids(run_dir: str | Path | None) -> dict[str, Any]:
    if run_dir is None:
        return {}
    try:
        return json.loads((Path(run_dir) / TRACKING_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _new_wandb_id() -> str:
    # wandb ids are [a-z0-9]; choosing it here (not inside wandb.init) lets the id file be written before
    # the tracker starts, so even a run killed during start-up can be resumed into the same wandb run.
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


# -- loggers ----------------------------------------------------------------------------------------------------
class Mars2WandbLogger(WandbLogger):
    """Lightning's WandbLogger plus what a mars2 run adds at its end (:meth:`finish_run`)."""

    def __init__(self, *, tree_table_rows: int = 64, **kwargs: Any) -> None:
        self.tree_table_rows = int(tree_table_rows)
        self._mode_before = os.environ.get("WANDB_MODE")
        super().__init__(**kwargs)
        # Lightning always passes anonymous=None to wandb.init, and wandb warns that "the anonymous setting has
        # no effect" for any value it is given: leave it out.
        self._wandb_init.pop("anonymous", None)

    def tracking_ids(self) -> dict[str, Any]:
        return {"wandb": self._id, "wandb_project": self._project, "wandb_group": self._wandb_init.get("group"),
                "wandb_offline": bool(self._offline)}

    def finish_run(self, run_dir: Path, results: Mapping[str, Any], status: str) -> None:
        import wandb

        exp = self.experiment
        run_file = None
        if self._offline:
            try:
                run_file = Path(exp.dir).parent / f"run-{exp.id}.wandb"
            except Exception:
                run_file = None
        try:
            rows = sample_tree_nodes(run_dir / "trees", self.tree_table_rows, seed=int(results.get("config", {}).get("seed") or 0))
            if rows:
                table = wandb.Table(columns=list(TREE_TABLE_COLUMNS), data=[[r[k] for k in TREE_TABLE_COLUMNS] for r in rows])
                exp.log({"trees/nodes": table})
            for k, v in (results.get("final") or {}).items():
                if isinstance(v, (int, float)):
                    exp.summary[f"final/{k}"] = v
            exp.summary["status"] = status
        finally:
            exp.finish(exit_code=0 if status == "completed" else 1)
            self._experiment = None
            if run_file is not None:
                wait_for_wandb_file(run_file)
            # WandbLogger(offline=True) sets WANDB_MODE=dryrun for the whole process; restore it so the next
            # job of an in-process sweep decides for itself.
            if self._offline:
                if self._mode_before is None:
                    os.environ.pop("WANDB_MODE", None)
                else:
                    os.environ["WANDB_MODE"] = self._mode_before


def wait_for_wandb_file(run_file: Path, timeout_s: float = 30.0) -> bool:
    """Wait until the wandb service has written the offline run file to its end: ``run.finish()`` can return
    before, and a job (or compare.py right after a sweep) must find the whole run on disk."""
    import time

    from mars2.tracking.readers import wandb_run_complete

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if wandb_run_complete(run_file):
            return True
        time.sleep(0.2)
    log.warning("wandb: %s is still incomplete after %.0f s", run_file, timeout_s)
    return False


class Mars2MLFlowLogger(MLFlowLogger):
    """Lightning's MLFlowLogger on a sqlite store plus mars2's end-of-run artifacts (:meth:`finish_run`)."""

    def __init__(self, *, tree_table_rows: int = 64, plots: bool = True, **kwargs: Any) -> None:
        self.tree_table_rows = int(tree_table_rows)
        self.plots = bool(plots)
        uri = str(kwargs.get("tracking_uri") or "")
        if uri.startswith("sqlite:///"):
            Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        super().__init__(**kwargs)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        # Map characters MLflow rejects to "_" ourselves: Lightning would silently drop them
        # ("solver@qwen3_a" → "solverqwen3_a"), which reads worse and can merge distinct names.
        clean = {"".join(ch if ch in _MLFLOW_SAFE else "_" for ch in k): v for k, v in metrics.items()}
        if getattr(self, "_mars2_resumed", False) and step is not None:
            clean = self._not_yet_logged(clean, int(step))
            if not clean:
                return
        super().log_metrics(clean, step)

    def _not_yet_logged(self, metrics: dict[str, float], step: int) -> dict[str, float]:
        """On a resumed MLflow run: drop the (metric, step) pairs the interrupted run already logged. The round
        that was running at the kill is redone from the checkpoint and logged again at the same step; MLflow
        would keep both values (two points at one step). A resumed round equals the uninterrupted one
        (training reseeds every round), so the first value stands. The run's history is read once per metric."""
        seen: dict[str, set[int]] = self.__dict__.setdefault("_mars2_logged_steps", {})
        out = {}
        for k, v in metrics.items():
            if k not in seen:
                try:
                    seen[k] = {int(m.step) for m in self.experiment.get_metric_history(self.run_id, k)}
                except Exception:  # unreachable store: log it (a duplicate is better than a hole)
                    seen[k] = set()
            if step not in seen[k]:
                out[k] = v
                seen[k].add(step)
        return out

    def tracking_ids(self) -> dict[str, Any]:
        return {"mlflow": self.run_id, "mlflow_experiment_id": self.experiment_id, "mlflow_tracking_uri": self._tracking_uri}

    def finish_run(self, run_dir: Path, results: Mapping[str, Any], status: str) -> None:
        client, rid = self.experiment, self.run_id
        try:
            client.set_tag(rid, "status", status)
            for name in ("results.json", "metrics.csv", "FAILED.json", ".hydra/config.yaml", ".hydra/overrides.yaml"):
                f = run_dir / name
                if f.is_file():
                    client.log_artifact(rid, str(f), artifact_path=str(Path(name).parent) if "/" in name else None)
            if self.plots:
                from mars2.tracking.plots import run_plots

                for png in run_plots(run_dir, run_dir / "plots"):
                    client.log_artifact(rid, str(png), artifact_path="plots")
            rows = sample_tree_nodes(run_dir / "trees", self.tree_table_rows, seed=int(results.get("config", {}).get("seed") or 0))
            if rows:
                client.log_table(rid, data={k: [r[k] for r in rows] for k in TREE_TABLE_COLUMNS},
                                 artifact_file="trees/nodes.json")
        finally:
            self.finalize({"completed": "success", "pruned": "KILLED", "interrupted": "KILLED"}.get(status, "failed"))


# -- build / finish -----------------------------------------------------------------------------------------------
def build_loggers(c: Mapping[str, Any]) -> list[Any]:
    """Instantiate every logger of the `logger` group (plus Optuna pruning under the mars2_optuna sweeper)."""
    from hydra.utils import instantiate

    from mars2.cli.quiet import drop_lightning_console, quiet_progress_bars

    drop_lightning_console()  # lightning is imported by now: its own console handler doubled every INFO line
    quiet_progress_bars()
    out = Path(c["paths"]["output_dir"])
    previous = read_tracking_ids(resume_dir(c))
    loggers = []
    for key, spec in (c.get("logger") or {}).items():
        if not isinstance(spec, Mapping) or "_target_" not in spec:
            continue
        spec = dict(spec)
        try:
            if key == "wandb":
                if os.environ.get("WANDB_MODE") == "disabled":
                    continue
                if spec.get("offline") is None:
                    spec["offline"] = not os.environ.get("WANDB_API_KEY")
                if not spec.get("group"):
                    spec["group"] = run_group(c)
                spec["id"] = spec.get("id") or previous.get("wandb") or _new_wandb_id()
            resumed = False
            if key == "mlflow":
                spec.setdefault("run_id", None)
                spec["run_id"] = spec["run_id"] or previous.get("mlflow")
                resumed = bool(spec["run_id"])
                if not spec.get("tags"):
                    spec["tags"] = {}
                spec["tags"] = {**spec["tags"], "group": run_group(c)}
            lg = instantiate(spec)
        except Exception as e:  # a tracker that cannot start must not cost the run (CSV always works)
            log.warning("logger %s not started: %s: %s", key, type(e).__name__, e)
            continue
        lg._mars2_run_dir = out
        lg._mars2_resumed = resumed
        loggers.append(lg)
    if "rounds" in c and "resume" in c:  # a training run (train.py's config): one log line per round
        from mars2.tracking.progress import RoundLogLogger

        ev = c.get("eval") or {}
        lg = RoundLogLogger(rounds=int(c["rounds"]), eval_every=int(ev.get("every", 1) or 1),
                            eval_at_start=bool(ev.get("at_start", True)))
        lg._mars2_run_dir = None  # nothing to finish but its pending line (finalize)
        loggers.append(lg)
    from mars2.tracking.pruning import OptunaPruning

    pruning = OptunaPruning.from_env()
    if pruning is not None:
        loggers.append(pruning)
    params = flatten(c)
    for lg in loggers:  # hyperparameters: the flattened resolved config
        if getattr(lg, "_mars2_resumed", False):  # MLflow refuses to change a logged param (e.g. `resume`)
            continue
        try:
            lg.log_hyperparams(params)
        except Exception as e:  # a logger that rejects some value must not end the run
            log.warning("%s.log_hyperparams failed: %s", type(lg).__name__, e)
    save_tracking_ids(out, loggers)
    return loggers


def save_tracking_ids(out: Path, loggers: list[Any]) -> None:
    ids = read_tracking_ids(out)
    for lg in loggers:
        if isinstance(lg, (Mars2WandbLogger, Mars2MLFlowLogger)):
            try:
                ids.update(lg.tracking_ids())
            except Exception as e:  # an unreachable tracking server: the run goes on without resume ids
                log.warning("no run id from %s: %s", type(lg).__name__, e)
    if ids:
        write_json_atomic(out / TRACKING_FILE, ids)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (list, tuple)):
            out[key] = str(v)
        else:
            out[key] = v
    return out


def _run_results(run_dir: Path | None) -> dict[str, Any]:
    if run_dir is None:
        return {}
    try:
        return json.loads((run_dir / "results.json").read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def finish_loggers(loggers: list[Any], status: str | None = None) -> None:
    """End every tracker run of this job (called from ``finally``). The status comes from the run's
    results.json (completed / failed / pruned / interrupted) unless given; a run that never wrote one is
    reported as failed."""
    for lg in loggers:
        run_dir = getattr(lg, "_mars2_run_dir", None)
        results = _run_results(run_dir)
        st = status or results.get("status") or "failed"
        if st == "running":  # finish_loggers runs in `finally`: still "running" means the run is ending abnormally
            st = "failed"
        try:
            if hasattr(lg, "finish_run") and run_dir is not None:
                lg.finish_run(Path(run_dir), results, st)
            else:
                lg.finalize("success" if st == "completed" else "failed")
                exp = getattr(lg, "_experiment", None)  # a plain WandbLogger: end its run too
                if exp is not None and hasattr(exp, "finish"):
                    exp.finish()
        except Exception as e:  # one tracker failing to close must not hide the run's own outcome
            log.warning("closing %s failed: %s: %s", type(lg).__name__, type(e).__name__, e)
