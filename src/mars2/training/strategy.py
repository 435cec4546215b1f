"""Distributed helpers (design.md "Real scale": Lightning DDP / FSDP, no home-made runtime): the Lightning
strategy from the ``trainer.strategy`` config (conf/trainer/{ddp,fsdp}.yaml), the process's rank before a
Trainer exists, and a per-policy gradient-norm clip that is correct when gradients are sharded (FSDP).

Hydra cannot write a set of classes, so the FSDP spec names layer classes by import path:
``auto_wrap_layers`` → ``auto_wrap_policy`` and ``activation_checkpointing_layers`` →
``activation_checkpointing_policy`` (classes that do not import — another architecture's — are skipped)."""
from __future__ import annotations

import importlib
import os
from typing import Any, Mapping

import torch
from torch import nn

LAYER_KEYS = {"auto_wrap_layers": "auto_wrap_policy", "activation_checkpointing_layers": "activation_checkpointing_policy"}


def import_class(path: str) -> type | None:
    module, _, name = str(path).rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None


def strategy_kwargs(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The spec with layer-class paths turned into sets of classes (``_target_`` kept)."""
    kwargs = dict(spec)
    for key, arg in LAYER_KEYS.items():
        paths = kwargs.pop(key, None)
        if isinstance(paths, str):
            paths = [paths]
        if paths:
            classes = {c for c in (import_class(p) for p in paths) if c is not None}
            if classes:
                kwargs[arg] = classes
    return kwargs


def build_strategy(spec: Any) -> Any:
    """``None`` / a string (``"ddp"``, ``"auto"``) pass through; a mapping with ``_target_`` is instantiated."""
    if not isinstance(spec, Mapping):
        return spec
    from hydra.utils import instantiate

    kwargs = strategy_kwargs(spec)
    target = kwargs.pop("_target_")
    layer_args = {k: kwargs.pop(k) for k in list(kwargs) if k in LAYER_KEYS.values()}
    return instantiate({"_target_": target, **kwargs}, **layer_args)


def global_rank_from_env() -> int:
    """Global rank of this process as the launchers announce it (0 when not distributed). Lightning's
    subprocess launcher sets LOCAL_RANK / NODE_RANK; torchrun RANK; SLURM SLURM_PROCID."""
    for key in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    local = int(os.environ.get("LOCAL_RANK", "0") or 0)
    node = int(os.environ.get("NODE_RANK", os.environ.get("GROUP_RANK", "0")) or 0)
    return local if node == 0 else node * 1_000 + local  # any non-zero value means "not rank 0"


@torch.no_grad()
def clip_grad_norm(model: nn.Module, max_norm: float, sharded: bool = False) -> float:
    """Clip the gradients of one policy to global L2 norm ``max_norm``; returns the norm before clipping.

    Unsharded (single process, DDP: gradients are already averaged and identical on every rank) this is
    ``torch.nn.utils.clip_grad_norm_``. Under FSDP each rank holds a disjoint shard of every gradient
    (``use_orig_params=True``), so the squared norms are summed over ranks first. Only this policy's
    parameters count: FSDP's own ``clip_grad_norm_`` on the root would mix in the other policies."""
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not sharded:
        return float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    import torch.distributed as dist

    dev = grads[0].device if grads else next(model.parameters()).device
    sq = torch.zeros((), device=dev, dtype=torch.float32)
    for g in grads:
        sq += g.detach().float().pow(2).sum()
    dist.all_reduce(sq, op=dist.ReduceOp.SUM)
    total = float(sq.sqrt())
    coef = max_norm / (total + 1e-6)
    if coef < 1.0:
        for g in grads:
            g.mul_(coef)
    return total
