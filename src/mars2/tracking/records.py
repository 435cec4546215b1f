"""Run records: the per-run `results.json` that compare.py reads (design.md "Experiment management")."""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping


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

    def flush(self) -> None:
        write_json_atomic(self.path, self.data)
