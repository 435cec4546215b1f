"""Distributed helpers (design.md "Real scale": Lightning DDP / FSDP, no home-made runtime): the Lightning
strategy from the ``trainer.strategy`` config (conf/trainer/{ddp,fsdp}.yaml), the process's rank before a
Trainer exists, and a per-policy gradient-norm clip that is correct when gradients are sharded (FSDP).

Hydra cannot write a set of classes, so the FSDP spec names layer classes by import path:
``auto_wrap_layers`` → ``auto_wrap_policy`` and ``activation_checkpointing_layers`` →
``activation_checkpointing_policy`` (classes that do not import — another architecture's — are skipped).

Full weights of a sharded policy (saving, weight sync to a rollout engine): `gather_full_state_dict`, a
collective every rank enters, and `FullWeights`, the unsharded stand-in handed to rank 0's engine."""
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


# -- full weights of a (possibly FSDP-sharded) policy ------------------------------------------------------------
_WRAPPER_PARTS = frozenset({"_fsdp_wrapped_module", "_checkpoint_wrapped_module", "_orig_mod"})


def is_sharded(module: nn.Module) -> bool:
    """True when ``module`` is or contains a torch FSDP unit (its parameters are shards outside forward)."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    return any(isinstance(m, FSDP) for m in module.modules())


def clean_name(name: str) -> str:
    """A module / parameter name without FSDP, activation-checkpointing and torch.compile wrapper parts."""
    return ".".join(part for part in name.split(".") if part and part not in _WRAPPER_PARTS)


def module_prefix(root: nn.Module, sub: nn.Module) -> str:
    """``sub``'s state-dict key prefix inside ``root`` (``""`` when it is ``root``), wrapper parts removed."""
    for name, m in root.named_modules(remove_duplicate=False):
        if m is sub:
            name = clean_name(name)
            return f"{name}." if name else ""
    raise ValueError("module is not inside the given root module")


@torch.no_grad()
def gather_full_state_dict(root: nn.Module, sub: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The complete, unsharded state dict of ``sub`` (default: ``root``), keys relative to ``sub``.

    Unsharded ``root``: ``sub.state_dict()`` (no communication). FSDP-sharded ``root``: a **collective** —
    every rank must call it, with the same arguments, at the same point. It gathers through the FSDP root
    (``get_model_state_dict(root, full_state_dict=True)``): a policy inside a Lightning FSDP wrapper is not
    itself an FSDP root, and ``get_model_state_dict(policy)`` returns the root unit's 1-D local shards for its
    embeddings (measured: tests/test_distributed.py). On accelerators the result is offloaded to the CPU of
    rank 0 only (others get ``{}``); on CPU (gloo tests) every rank gets it (torch's CPU offload of CPU
    tensors crashes). Cost: the whole root is gathered (all policies and references), one unit at a time."""
    sub = root if sub is None else sub
    if not is_sharded(root):
        return {k: v.detach() for k, v in sub.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    first = next(root.parameters(), None)
    on_cpu = first is None or first.device.type == "cpu"
    full = get_model_state_dict(root, options=StateDictOptions(full_state_dict=True, cpu_offload=not on_cpu))
    prefix = module_prefix(root, sub)
    return {k[len(prefix):]: v for k, v in full.items() if k.startswith(prefix)}


class FullWeights(nn.Module):
    """An unsharded stand-in of a policy: its full state dict as (persistent) buffers under the same names, so
    ``state_dict()`` / `mars2.agents.vllm_backend.full_state_dict` read the gathered weights without any
    collective. It has no parameters and no forward; ``config`` is the policy's config (for engines that
    look at it)."""

    def __init__(self, state: dict[str, torch.Tensor], config: Any = None) -> None:
        super().__init__()
        self.config = config
        for name, tensor in state.items():
            *path, leaf = name.split(".")
            mod: nn.Module = self
            for part in path:
                if part not in mod._modules:
                    mod.add_module(part, nn.Module())
                mod = mod._modules[part]
            mod.register_buffer(leaf, tensor, persistent=True)
