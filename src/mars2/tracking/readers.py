"""Read finished runs back from wherever they were tracked, into one shape (design.md "Experiment
management": compare.py reads run dirs, an MLflow store or wandb).

A *run* is a dict::

    {"source": "dir" | "mlflow" | "wandb", "ref": <path or run id>, "status": "completed" | "failed" | ...,
     "config": {"name", "seed", "paradigm", "n_agents", "model", "search", "train_budget", ...},
     "evals":   [{"round": r, "eval/pass1": ..., "eval/tts/4": ..., ...}, ...],   # one per evaluation
     "history": [{"round": r, "agent/<name>/reward": ..., ...}, ...],              # one per training round
     "initial": <first eval>, "final": <last eval>,
     "per_problem": [<entries of eval_per_problem.json>] | None}                   # run dirs only (paired stats)

- run dirs: ``results.json`` (what ``train.py`` writes), with ``metrics.csv`` filling in the per-round history
  of runs that did not finish;
- MLflow (``sqlite:///…/mlflow.db``): params (the flattened config) and metric histories;
- wandb: offline run folders (``…/wandb/offline-run-*/run-<id>.wandb``, read with the record format wandb
  itself writes: no network, no account) or ``entity/project`` through the public API (needs a login).
"""
from __future__ import annotations

import csv
import json
import math
import struct
from pathlib import Path
from typing import Any, Iterable, Mapping

# config summary key → flattened config key (what loggers receive as hyperparameters)
SUMMARY_FROM_FLAT = {
    "name": "name",
    "seed": "seed",
    "paradigm": "paradigm.name",
    "n_agents": "paradigm.n_agents",
    "model": "model.name",
    "search": "search.mode",
    "train_budget": "search.budget",
    "loss": "rl.loss",
    "shaping": "rl.shaping",
    "rounds": "rounds",
    "eval_budget": "eval.budget",
    "task": "task.name",
}


def _coerce(v: Any) -> Any:
    """Tracker params come back as strings ("2", "0.5", "None"): turn them into numbers where they are."""
    if not isinstance(v, str):
        return v
    if v in ("None", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return v


def _num(v: Any) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def summary_from_flat(flat: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _coerce(flat.get(src)) for k, src in SUMMARY_FROM_FLAT.items() if src in flat}


def _finish(run: dict[str, Any]) -> dict[str, Any]:
    evals = sorted(run.get("evals") or [], key=lambda e: e.get("round", 0))
    run["evals"] = evals
    run.setdefault("history", [])
    run.setdefault("per_problem", None)  # per-problem outcomes: run dirs with eval_per_problem.json only
    run["initial"] = run.get("initial") or (evals[0] if evals else None)
    run["final"] = run.get("final") or (evals[-1] if evals else None)
    return run


def split_rows(rows: Iterable[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Per-step metric rows → (evaluation rows, training-round rows), merging rows of the same step."""
    evals: dict[int, dict[str, Any]] = {}
    hist: dict[int, dict[str, Any]] = {}
    for row in rows:
        step = row.get("round", row.get("step"))
        r = int(float(step)) if _num(step) is not None else 0
        for k, v in row.items():
            x = _num(v)
            if x is None or k in ("step", "round", "epoch", "trainer/global_step", "_step", "_runtime", "_timestamp"):
                continue
            target = evals if k.startswith("eval/") else hist
            target.setdefault(r, {"round": float(r)})[k] = x
    return [evals[r] for r in sorted(evals)], [hist[r] for r in sorted(hist)]


# -- run dirs -----------------------------------------------------------------------------------------------------
def read_metrics_csv(path: str | Path) -> list[dict[str, Any]]:
    try:
        with open(path, newline="") as f:
            return [dict(row) for row in csv.DictReader(f)]
    except OSError:
        return []


def read_run_dir(run_dir: str | Path) -> dict[str, Any] | None:
    d = Path(run_dir)
    try:
        data = json.loads((d / "results.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    run = {
        "source": "dir", "ref": str(d), "status": data.get("status", "unknown"), "config": data.get("config") or {},
        "evals": [e for e in data.get("evals") or [] if isinstance(e, dict)],
        "history": list(data.get("history") or []),
        "initial": data.get("initial"), "final": data.get("final"), "error": data.get("error"),
        "warm_start": data.get("warm_start") if isinstance(data.get("warm_start"), dict) else None,
    }
    if not run["evals"] and isinstance(data.get("final"), dict):  # evaluate.py: one evaluation, no rounds
        run["evals"] = [{"round": 0.0, **data["final"]}]
    if not run["history"] or not run["evals"]:
        ev, hist = split_rows(read_metrics_csv(d / "metrics.csv"))
        run["history"] = run["history"] or hist
        run["evals"] = run["evals"] or ev
    if (d / "FAILED.json").is_file() and run["status"] in ("running", "unknown"):
        run["status"] = "failed"
    from mars2.tracking.per_problem import read as read_per_problem

    pp = read_per_problem(d)
    run["per_problem"] = pp["evals"] if pp and pp["evals"] else None
    return _finish(run)


def find_run_dirs(paths: Iterable[str | Path]) -> list[Path]:
    dirs: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_file() and p.name == "results.json":
            dirs.append(p.parent)
        elif p.is_dir():
            dirs.extend(sorted(f.parent for f in p.rglob("results.json")))
    seen: set[Path] = set()
    return [d for d in dirs if not (d.resolve() in seen or seen.add(d.resolve()))]


def read_run_dirs(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    return [r for r in (read_run_dir(d) for d in find_run_dirs(paths)) if r is not None]


# -- MLflow -------------------------------------------------------------------------------------------------------
def _mlflow_uri(store: str) -> str:
    if "://" in store:
        return store
    return f"sqlite:///{Path(store).resolve()}"


def read_mlflow(store: str, experiment: str | None = None) -> list[dict[str, Any]]:
    """Every run of an MLflow store (``sqlite:///path.db`` or a ``.db`` path), optionally of one experiment."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=_mlflow_uri(store))
    if experiment:
        exp = client.get_experiment_by_name(experiment)
        exp_ids = [exp.experiment_id] if exp is not None else []
    else:
        exp_ids = [e.experiment_id for e in client.search_experiments()]
    runs = []
    if not exp_ids:
        return runs
    for r in client.search_runs(exp_ids, max_results=10000):
        rows: dict[int, dict[str, Any]] = {}
        for key in r.data.metrics:
            for m in client.get_metric_history(r.info.run_id, key):
                rows.setdefault(int(m.step), {"round": float(m.step)})[key] = m.value
        evals, hist = split_rows(rows[s] for s in sorted(rows))
        status = r.data.tags.get("status") or {"FINISHED": "completed", "FAILED": "failed", "KILLED": "interrupted"}.get(
            r.info.status, r.info.status.lower())
        runs.append(_finish({
            "source": "mlflow", "ref": r.info.run_id, "status": status, "config": summary_from_flat(r.data.params),
            "evals": evals, "history": hist, "params": dict(r.data.params), "tags": dict(r.data.tags),
        }))
    return runs


# -- wandb --------------------------------------------------------------------------------------------------------
_LOG_BLOCK = 32768  # wandb's run file is a LevelDB-style log: 32 KiB blocks of (crc32, length, type) records
_FULL, _FIRST, _MIDDLE, _LAST = 1, 2, 3, 4


def wandb_records(path: str | Path) -> Iterable[bytes]:
    """The raw protobuf records of a ``run-<id>.wandb`` file (format: a 7-byte ``:W&B`` header, then
    records with a 7-byte header ``<crc32:u32, length:u16, type:u8>`` that never straddle a 32 KiB block)."""
    data = Path(path).read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a wandb run file")
    pos, pending = 7, b""
    while pos + 7 <= len(data):
        left = _LOG_BLOCK - pos % _LOG_BLOCK
        if left < 7:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if pos + length > len(data):  # the last record is still being written (a live run): stop before it
            return
        if length == 0 and kind == 0:  # zero padding at the end of a block
            pos += left - 7
            continue
        chunk = data[pos:pos + length]
        pos += length
        if kind == _FULL:
            yield chunk
        elif kind == _FIRST:
            pending = chunk
        elif kind == _MIDDLE:
            pending += chunk
        elif kind == _LAST:
            yield pending + chunk
            pending = b""


def wandb_run_complete(run_file: str | Path) -> bool:
    """Whether an offline run file holds its final ``exit`` record (the wandb service writes it a moment
    after ``run.finish()`` returns)."""
    from google.protobuf.message import DecodeError
    from wandb.proto import wandb_internal_pb2 as pb

    try:
        for raw in wandb_records(run_file):
            rec = pb.Record()
            rec.ParseFromString(raw)
            if rec.WhichOneof("record_type") == "exit":
                return True
    except (OSError, ValueError, struct.error, DecodeError):  # a file the service is still writing
        return False
    return False


def _items(items: Iterable[Any]) -> dict[str, Any]:
    out = {}
    for it in items:
        key = it.key or "/".join(it.nested_key)
        try:
            out[key] = json.loads(it.value_json)
        except (json.JSONDecodeError, TypeError):
            out[key] = it.value_json
    return out


def read_wandb_offline_run(run_file: str | Path) -> dict[str, Any]:
    """One offline wandb run (its ``run-<id>.wandb`` file or its folder)."""
    from wandb.proto import wandb_internal_pb2 as pb

    p = Path(run_file)
    if p.is_dir():
        p = next(iter(sorted(p.glob("run-*.wandb"))))
    info: dict[str, Any] = {}
    config: dict[str, Any] = {}
    summary: dict[str, Any] = {}
    history: list[dict[str, Any]] = []
    exit_code = None
    for raw in wandb_records(p):
        rec = pb.Record()
        rec.ParseFromString(raw)
        kind = rec.WhichOneof("record_type")
        if kind == "run":
            r = rec.run
            info = {"id": r.run_id, "project": r.project, "group": r.run_group, "name": r.display_name,
                    "tags": list(r.tags)}
            config.update(_items(r.config.update))
        elif kind == "config":
            config.update(_items(rec.config.update))
        elif kind == "history":
            history.append(_items(rec.history.item))
        elif kind == "summary":
            summary.update({k: v for k, v in _items(rec.summary.update).items() if k})
        elif kind == "exit":
            exit_code = rec.exit.exit_code
    config.pop("_wandb", None)
    rows = []
    for h in history:  # Lightning logs the step as trainer/global_step (= the round for mars2)
        step = h.get("trainer/global_step")
        rows.append({**h, "round": step if step is not None else h.get("_step", 0)})
    evals, hist = split_rows(rows)
    status = summary.get("status") or ("completed" if exit_code == 0 else "failed" if exit_code else "unknown")
    return _finish({"source": "wandb", "ref": str(p), "status": status, "config": summary_from_flat(config),
                    "evals": evals, "history": hist, "wandb": info, "summary": summary, "params": config})


def read_wandb_offline(paths: Iterable[str | Path]) -> list[dict[str, Any]]:
    files: list[Path] = []
    for p in paths:
        p = Path(p)
        files.extend([p] if p.is_file() else sorted(p.rglob("run-*.wandb")))
    return [read_wandb_offline_run(f) for f in files]


def read_wandb_project(path: str) -> list[dict[str, Any]]:  # pragma: no cover - needs a wandb account
    """Runs of ``entity/project`` through the wandb public API (online)."""
    import wandb

    runs = []
    for r in wandb.Api().runs(path):
        rows = [dict(row) for row in r.scan_history()]
        for row in rows:
            row["round"] = row.get("trainer/global_step", row.get("_step", 0))
        evals, hist = split_rows(rows)
        summary = dict(r.summary)
        runs.append(_finish({
            "source": "wandb", "ref": r.path and "/".join(r.path), "config": summary_from_flat(dict(r.config)),
            "status": summary.get("status") or {"finished": "completed", "crashed": "failed", "failed": "failed"}.get(r.state, r.state),
            "evals": evals, "history": hist,
        }))
    return runs
