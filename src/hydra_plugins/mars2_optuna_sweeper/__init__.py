"""mars2's Hydra plugins (found by Hydra's plugin scan of the ``hydra_plugins`` namespace package).

- :mod:`.optuna_sweeper`: ``hydra/sweeper=mars2_optuna``, an Optuna ≥4 sweeper (the official
  hydra-optuna-sweeper 1.2 pins ``optuna<3``; optuna 2.10 then crashes on sqlite with SQLAlchemy 2).
- OmegaConf resolvers used by the SLURM launcher preset (``conf/hydra/launcher/submitit_slurm.yaml``) to
  derive tasks/GPUs per node from the trainer and team settings. Registered here because Hydra imports every
  plugin module before it composes any config, so the resolvers exist when the launcher config resolves —
  also in a ``--cfg hydra`` dry run.

- No transformers / huggingface_hub progress bars ("Loading weights", "Writing model shards") when stderr is
  not a terminal, for every mars2 entry point (train.py, evaluate.py, study.py): huggingface_hub reads
  ``HF_HUB_DISABLE_PROGRESS_BARS`` when it is imported, and Hydra imports this module before the task runs
  (the same rule as :func:`mars2.cli.quiet.quiet_progress_bars`; an explicit setting wins).

Kept import-light: Hydra imports these modules on every start-up (optuna is imported only when a sweep runs).
"""
from __future__ import annotations

import os
import sys
from typing import Any

from omegaconf import OmegaConf

try:
    if not sys.stderr.isatty():
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
except Exception:  # a closed / replaced stderr: leave the bars alone
    pass


def _is_gpu(accelerator: Any) -> bool:
    return str(accelerator).lower() in ("gpu", "cuda")


def slurm_gpus_per_node(accelerator: Any, devices: Any, team_gpus: Any = None) -> int:
    """GPUs to request per node: 0 on CPU; ``trainer.devices`` when it is a number; for ``devices: auto``
    (FSDP over the whole node) the GPUs the team needs (sum of ``model.policies.<id>.gpus``, what the
    resource pre-flight requires), else ``MARS2_SLURM_GPUS_PER_NODE`` (default 8)."""
    if not _is_gpu(accelerator):
        return 0
    try:
        return int(devices)
    except (TypeError, ValueError):
        pass
    try:
        if team_gpus is not None and int(team_gpus) > 0:
            return int(team_gpus)
    except (TypeError, ValueError):
        pass
    return int(os.environ.get("MARS2_SLURM_GPUS_PER_NODE", "8"))


def slurm_tasks_per_node(accelerator: Any, devices: Any, team_gpus: Any = None) -> int:
    """Lightning on SLURM runs one task (process) per device: tasks per node = GPUs per node (1 on CPU)."""
    return max(1, slurm_gpus_per_node(accelerator, devices, team_gpus))


def team_gpus(model: Any, paradigm: Any) -> int:
    """Sum of ``gpus`` over the policies the team uses (heterogeneous: roster[:n_agents]; else roster[0])."""
    try:
        roster = list(model["roster"])
        n = int(paradigm["n_agents"]) if paradigm["name"] == "heterogeneous" else 1
        return sum(int(model["policies"][pid].get("gpus", 1) or 1) for pid in roster[:n])
    except Exception:  # tiny models have no `gpus`; any odd config falls back to trainer.devices / the default
        return 0


OmegaConf.register_new_resolver("mars2.slurm_gpus", slurm_gpus_per_node, replace=True)
OmegaConf.register_new_resolver("mars2.slurm_tasks", slurm_tasks_per_node, replace=True)
OmegaConf.register_new_resolver("mars2.team_gpus", team_gpus, replace=True)
