"""Distributed helpers (design.md "Real scale": Lightning DDP / FSDP, no home-made runtime): the Lightning
strategy from the ``trainer.strategy`` config (conf/trainer/{ddp,fsdp}.yaml), the process's rank before a
Trainer exists, and a per-policy gradient-norm clip that is correct when gradients are sharded (FSDP).

Hydra cannot write a set of classes, so the FSDP spec names layer classes by import path:
``auto_wrap_layers`` → ``auto_wrap_policy`` and ``activation_checkpointing_layers`` →
``activation_checkpointing_policy`` (classes that do not import — another architecture's — are skipped).

Full weights of a sharded policy (saving, weight sync to a rollout engine): `gather_full_state_dict`, a
collective every rank enters, and `FullWeights`, the unsharded stand-in handed to rank 0's engine.

Collectives of the rank-0 rollout (`mars2.training.rollout`, `mars2.training.data`): `dist_info`, `broadcast`,
`all_gather` (no-ops outside torch.distributed), `uses_fsdp` (an ``isinstance`` test on Lightning's
``FSDPStrategy``) and `full_params` (the policies' full weights inside a context, FSDP only)."""
from __future__ import annotations

import contextlib
import importlib
import os
from typing import Any, ContextManager, Mapping

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


def dist_info() -> tuple[int, int]:
    """(global rank, world size); (0, 1) outside torch.distributed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (no-op outside torch.distributed)."""
    import torch.distributed as dist

    if dist_info()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_gather(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` outside torch.distributed)."""
    import torch.distributed as dist

    world = dist_info()[1]
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def uses_fsdp(trainer: Any) -> bool:
    """True when ``trainer`` shards its modules with Lightning's FSDP strategy (``trainer=fsdp``)."""
    from lightning.pytorch.strategies import FSDPStrategy

    return trainer is not None and isinstance(getattr(trainer, "strategy", None), FSDPStrategy)


def full_params(trainer: Any, all_ranks: bool = False) -> ContextManager[Any]:
    """Context in which the trainer's modules hold their full weights. Only FSDP shards them; there it is
    ``summon_full_params`` on the strategy's root module — a collective, so every rank must enter it (the
    caller's decision to call it must be the same on every rank). ``all_ranks=False``: only rank 0
    materialises them (the rollout and the evaluation run on rank 0)."""
    if not uses_fsdp(trainer):
        return contextlib.nullcontext()
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    return FSDP.summon_full_params(trainer.model, writeback=False, rank0_only=not all_ranks)


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


def _owning_units(root: nn.Module, sub: nn.Module) -> list[nn.Module]:
    """The FSDP units holding ``sub``'s parameters: those enclosing it (outermost first: they hold its top-level
    parameters, e.g. a Lightning root holds every policy's embeddings) and those inside it (its layers)."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    inside = {id(m) for m in sub.modules()}
    enclosing = [m for m in root.modules() if isinstance(m, FSDP) and id(m) not in inside
                 and any(x is sub for x in m.modules())]
    return enclosing + [m for m in sub.modules() if isinstance(m, FSDP)]


def _persistent_buffers(module: nn.Module):
    for mod_name, mod in module.named_modules(remove_duplicate=False):
        for name, buf in mod.named_buffers(recurse=False):
            if buf is not None and name not in mod._non_persistent_buffers_set:
                yield (f"{mod_name}.{name}" if mod_name else name), buf


@torch.no_grad()
def gather_full_state_dict(root: nn.Module, sub: nn.Module | None = None) -> dict[str, torch.Tensor]:
    """The complete, unsharded state dict of ``sub`` (default: ``root``), keys relative to ``sub``.

    Unsharded ``root``: ``sub.state_dict()`` (no communication). FSDP-sharded ``root``: a **collective** —
    every rank must call it, with the same arguments, at the same point. Each FSDP unit holding ``sub``'s
    parameters is unsharded with ``summon_full_params(recurse=False, rank0_only=True)`` (outermost first, so
    the root is initialised as the root), and rank 0 copies ``sub``'s parameters and persistent buffers under
    their names without wrapper parts; other ranks get ``{}``. Only ``sub``'s own units are gathered (plus the
    enclosing units, e.g. the Lightning root with the top-level weights of every policy), never the other
    policies' layers or the references. On accelerators the copies go to the CPU (``offload_to_cpu``).
    Reading ``sub`` directly is wrong under a Lightning FSDP root: ``get_model_state_dict(policy)`` returns
    the root unit's 1-D local shards for the embeddings (tests/test_distributed.py)."""
    sub = root if sub is None else sub
    if not is_sharded(root):
        return {k: v.detach() for k, v in sub.state_dict().items()}
    import contextlib

    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    first = next(root.parameters(), None)
    offload = first is not None and first.device.type != "cpu"
    rank = dist.get_rank() if dist.is_initialized() else 0
    out: dict[str, torch.Tensor] = {}
    with contextlib.ExitStack() as stack:
        for unit in _owning_units(root, sub):
            stack.enter_context(FSDP.summon_full_params(unit, recurse=False, writeback=False, rank0_only=True,
                                                        offload_to_cpu=offload))
        if rank == 0:
            copies: dict[int, torch.Tensor] = {}  # tied weights (embeddings = lm_head) stay one shared tensor
            for name, t in list(sub.named_parameters(remove_duplicate=False)) + list(_persistent_buffers(sub)):
                if id(t) not in copies:
                    copies[id(t)] = t.detach().to("cpu", copy=True)
                out[clean_name(name)] = copies[id(t)]
    return out


class FullWeights(nn.Module):
    """An unsharded stand-in of a policy: its full state dict as (persistent) buffers under the same names, so
    ``state_dict()`` / `mars2.rollout.vllm_backend.full_state_dict` read the gathered weights without any
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
