"""Run records: the per-run `results.json` that compare.py reads (design.md "Experiment management"), and
the failure marker a failed job leaves in its run dir.

Statuses: ``running`` → ``completed`` | ``failed`` | ``pruned`` (an Optuna trial stopped early by its pruner)
| ``interrupted`` (Ctrl-C / SIGTERM: resumable, not a failure). A ``failed`` run also gets ``FAILED.json``
next to ``results.json`` so a glance at a sweep dir (``ls */FAILED.json``) shows which jobs broke."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Mapping, NoReturn

FAILED_MARKER = "FAILED.json"


def git_sha(root: str | Path) -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except Exception:
        return None


def config_summary(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The handful of keys that identify a run in a comparison table."""
    return {
        "name": cfg.get("name"),
        "seed": cfg.get("seed"),
        "paradigm": cfg["paradigm"]["name"],
        "n_agents": cfg["paradigm"]["n_agents"],
        "model": cfg["model"]["name"],
        "search": cfg["search"]["mode"],
        "train_budget": cfg["search"]["budget"],
        "posterior": cfg["search"].get("posterior"),
        # effective values: mode t_plus always means T+ feedback and a GEN discount (defaults when unset)
        "feedback": "t_plus" if cfg["search"]["mode"] == "t_plus" else cfg["search"].get("feedback"),
        "gen_discount": cfg["search"]["mode"] == "t_plus" or bool(cfg["search"].get("gen_discount")),
        "loss": cfg["rl"]["loss"],
        "shaping": cfg["rl"]["shaping"],
        "rounds": cfg.get("rounds"),
        "eval_budget": cfg["eval"]["budget"],
        "task": cfg["task"]["name"],
    }


def write_json_atomic(path: Path, data: Any) -> None:
    """Write via a temp file + rename so a killed run never leaves a truncated results.json."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


class RunRecord:
    def __init__(self, output_dir: Path, cfg: Mapping[str, Any], root: str | Path, overrides: list[str]) -> None:
        self.path = Path(output_dir) / "results.json"
        self.t0 = time.time()
        self.data: dict[str, Any] = {
            "status": "running",
            "config": config_summary(cfg),
            "overrides": overrides,
            "git_sha": git_sha(root),
            "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "initial": None,
            "final": None,
            "evals": [],
        }
        self.flush()

    def add_eval(self, round_idx: int, metrics: Mapping[str, float]) -> None:
        entry = {"round": round_idx, **metrics}
        self.data["evals"].append(entry)
        if self.data["initial"] is None:
            self.data["initial"] = entry
        self.data["final"] = entry
        self.flush()

    def finish(self, status: str, **extra: Any) -> None:
        self.data["status"] = status
        self.data["wall_s"] = time.time() - self.t0
        self.data.update(extra)
        self.flush()
        if status == "failed":
            write_failure_marker(self.path.parent, str(extra.get("error", "")), extra.get("traceback"))

    def flush(self) -> None:
        write_json_atomic(self.path, self.data)


# -- failures -------------------------------------------------------------------------------------------------
class JobFailed(RuntimeError):
    """Raised instead of ``sys.exit(2)`` inside a ``-m`` sweep: Hydra's launchers catch ``Exception`` per job
    (not ``SystemExit``), so the job is marked failed and the rest of the sweep goes on."""


def failure_status(exc: BaseException) -> str:
    """results.json status for an exception that ended a run. By class name so that optuna need not be
    importable here."""
    if type(exc).__name__ == "TrialPruned":
        return "pruned"
    # Ctrl-C, or the SystemExit(1) Lightning turns it into after its graceful shutdown: resumable, not broken
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
        return "interrupted"
    return "failed"


def write_failure_marker(run_dir: str | Path, error: str, traceback: str | None = None) -> Path:
    path = Path(run_dir) / FAILED_MARKER
    write_json_atomic(path, {
        "status": "failed", "error": error, "traceback": traceback,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    return path


def in_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:  # not under Hydra (tests, library use)
        return False


def hydra_output_dir() -> Path | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except Exception:
        return None


def fail_job(message: str, output_dir: str | Path | None = None, *, multirun: bool | None = None) -> NoReturn:
    """End a run that cannot start (bad config, missing weights/GPUs): one clear line on stderr, and
    - a single run: exit code 2, no traceback;
    - a job of a ``-m`` sweep: ``FAILED.json`` + ``results.json`` (status failed) in its run dir, then
      :class:`JobFailed`, so Hydra records the job as failed and launches the others."""
    print(f"mars2: {message}", file=sys.stderr)
    multirun = in_multirun() if multirun is None else multirun
    out = Path(output_dir) if output_dir is not None else hydra_output_dir()
    if out is not None:
        try:
            results = out / "results.json"
            data: dict[str, Any] = {}
            if results.is_file():
                try:
                    data = json.loads(results.read_text())
                except (OSError, json.JSONDecodeError):
                    data = {}
            data.update({"status": "failed", "error": message})
            write_json_atomic(results, data)
            write_failure_marker(out, message)
        except OSError:  # an unwritable run dir must not hide the real message
            pass
    if multirun:
        raise JobFailed(message) from None
    sys.exit(2)
