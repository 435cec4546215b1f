"""Lightning loggers from the `logger` config group: CSV always; wandb offline without an API key;
MLflow on a sqlite store. Every logger is finished in `finally` by the caller."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping


def build_loggers(c: Mapping[str, Any]) -> list[Any]:
    from hydra.utils import instantiate

    loggers = []
    for key, spec in (c.get("logger") or {}).items():
        if not isinstance(spec, Mapping) or "_target_" not in spec:
            continue
        spec = dict(spec)
        if key == "wandb":
            if os.environ.get("WANDB_MODE") == "disabled":
                continue
            if spec.get("offline") is None:
                spec["offline"] = not os.environ.get("WANDB_API_KEY")
        if key == "mlflow":
            uri = str(spec.get("tracking_uri", ""))
            if uri.startswith("sqlite:///"):
                Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        loggers.append(instantiate(spec))
    for lg in loggers:  # hyperparameters: the flattened resolved config
        try:
            lg.log_hyperparams(flatten(c))
        except Exception:  # a logger that rejects some value must not end the run
            pass
    return loggers


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


def finish_loggers(loggers: list[Any]) -> None:
    for lg in loggers:
        try:
            lg.finalize("success")
        except Exception:
            pass
        exp = getattr(lg, "_experiment", None)
        if exp is not None and hasattr(exp, "finish"):
            try:
                exp.finish()
            except Exception:
                pass
