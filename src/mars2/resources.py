"""Pre-flight checks for real-scale runs (design.md "Real scale"): weights present, GPUs present, vLLM
installed. Each failure is one clear sentence saying what to put where — never a traceback."""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any, Mapping, Sequence


class SetupError(RuntimeError):
    """The machine or the files do not allow this run; the message says what is missing."""


def hf_cache_has(hf_id: str) -> bool:
    home = Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")
    snap = home / f"models--{hf_id.replace('/', '--')}" / "snapshots"
    return snap.is_dir() and any(snap.iterdir())


def check_real_scale(cfg: Mapping[str, Any], policy_ids: Sequence[str]) -> list[str]:
    """Problems found for a real-scale run (empty list: good to go)."""
    problems: list[str] = []
    gpus_needed = 0
    for pid in policy_ids:
        spec = cfg["model"]["policies"][pid]
        path = spec.get("path")
        found = bool(path) and (Path(path) / "config.json").is_file()
        if not found and spec.get("hf_id") and hf_cache_has(spec["hf_id"]):
            found = True
        if not found:
            problems.append(
                f"no weights found for {pid} ({spec.get('hf_id')}): put the checkpoint (config.json, *.safetensors, "
                f"tokenizer files) at {path} or set paths.models_dir / MARS2_MODELS_DIR, or pre-fill the HF cache"
            )
        gpus_needed += int(spec.get("gpus", 1) or 1)
    try:
        import torch

        have = torch.cuda.device_count()
    except Exception:  # pragma: no cover - torch import problems are reported elsewhere
        have = 0
    if cfg["trainer"].get("accelerator") in ("gpu", "cuda") or cfg["rollout"]["backend"] == "vllm":
        if have < gpus_needed:
            problems.append(
                f"{gpus_needed} GPU(s) needed for model={cfg['model']['name']} with this team "
                f"(sum of model.policies.*.gpus), {have} visible"
            )
    if cfg["rollout"]["backend"] == "vllm" and importlib.util.find_spec("vllm") is None:
        problems.append("rollout=vllm needs the optional extra: pip install -e '.[vllm]'")
    return problems


def cuda_device_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # pragma: no cover - torch import problems are reported elsewhere
        return 0


def check_trainer(trainer: Mapping[str, Any], n_gpus: int | None = None) -> list[str]:
    """Problems of the `trainer` group on this machine (any model scale): a GPU trainer (trainer=gpu/fsdp,
    or ``accelerator: gpu``) where no CUDA device is visible, or more ``devices`` than visible GPUs.
    Lightning would otherwise stop with a traceback after the models have loaded."""
    accel = str(trainer.get("accelerator") or "").lower()
    if accel not in ("gpu", "cuda"):
        return []
    have = cuda_device_count() if n_gpus is None else n_gpus
    strategy = (trainer.get("strategy") or {}).get("_target_", "") if isinstance(trainer.get("strategy"), Mapping) else ""
    kind = "FSDP" if "FSDP" in str(strategy) else "GPU"
    if have == 0:
        return [f"the {kind} trainer needs CUDA GPUs and none is visible on this machine; on CPU use trainer=cpu "
                "(or trainer=ddp to test the distributed wiring)"]
    devices = trainer.get("devices")
    if isinstance(devices, int) and not isinstance(devices, bool) and devices > have:
        return [f"trainer.devices={devices} but {have} GPU(s) visible"]
    return []
