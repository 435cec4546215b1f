"""Builders shared by train.py and evaluate.py: config dict → problems, team, policies, sandbox, backend."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from mars2.agents.base import AgentSpec
from mars2.agents.team import build_team, team_policies
from mars2.resources import SetupError, check_real_scale
from mars2.search.factory import SearchConfig
from mars2.tasks.problem import Problem

log = logging.getLogger("mars2")


def pick(cls: type, d: Mapping[str, Any], **extra: Any):
    """Instantiate a dataclass from the keys of ``d`` it knows (config files may carry more keys)."""
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in {**d, **extra}.items() if k in names}
    return cls(**kwargs)


def load_problems(cfg: Mapping[str, Any]) -> dict[str, list[Problem]]:
    from mars2.tasks.registry import load_task

    task = dict(cfg["task"])
    name = task.pop("name")
    return load_task(name, **task)


def make_team(cfg: Mapping[str, Any]) -> list[AgentSpec]:
    return build_team(cfg["paradigm"], cfg["model"]["roster"], cfg["roles"])


def search_config(search: Mapping[str, Any]) -> SearchConfig:
    return pick(SearchConfig, search)


def preflight(cfg: Mapping[str, Any], agents: Sequence[AgentSpec]) -> None:
    if cfg["model"].get("scale") == "real":
        problems = check_real_scale(cfg, team_policies(agents))
        if problems:
            raise SetupError("cannot start this run here:\n  - " + "\n  - ".join(problems))


def build_policies(
    cfg: Mapping[str, Any],
    policy_ids: Sequence[str],
    problems: Mapping[str, list[Problem]],
    sandbox: Any,
    weights_dir: Path | None = None,
    progress: bool = True,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """Build (and warm-start, cached) every policy of the team. With ``weights_dir`` (a finished run's
    `policies/` folder) the trained weights are loaded from there instead, in the real HF format."""
    from mars2.agents.models import PolicySpec, build_policy

    model_cfg = cfg["model"]
    cache_dir = Path(cfg["paths"]["cache_dir"])
    models: dict[str, Any] = {}
    tokenizers: dict[str, Any] = {}
    warm_stats: dict[str, Any] = {}
    shared_tok = None
    if model_cfg.get("scale") == "mini" and weights_dir is None:
        from mars2.agents.tokenizer import build_tiny_tokenizer
        from mars2.tasks.minicode import corpus_texts

        shared_tok = build_tiny_tokenizer(
            corpus_texts(problems["warmup"]), vocab_size=int(model_cfg["tokenizer"]["vocab_size"]),
            cache_dir=cache_dir / "tokenizers",
        )
    for pid in policy_ids:
        spec_d = dict(model_cfg["policies"][pid])
        if weights_dir is not None:
            spec_d = {"path": str(Path(weights_dir) / pid), "dtype": spec_d.get("dtype", "float32")}
        spec = pick(PolicySpec, spec_d, id=pid)
        model, tok = build_policy(spec, shared_tok)
        if weights_dir is None and model_cfg.get("scale") == "mini":
            from mars2.training.warm_start import WarmStartConfig, warm_start

            ws = {**model_cfg.get("warm_start_defaults", {}), **spec_d.get("warm_start", {})}
            ws_cfg = pick(WarmStartConfig, ws)
            if ws_cfg.enabled and ws_cfg.steps > 0:
                warm_stats[pid] = warm_start(
                    model, tok, problems["warmup"], ws_cfg, cache_dir=cache_dir / "warm_start", sandbox=sandbox,
                    progress=progress, tag=pid, role_prompts=[r["prompt"] for r in cfg["roles"]],
                )
        models[pid] = model
        tokenizers[pid] = tok
    return models, tokenizers, warm_stats


def build_sandbox(cfg: Mapping[str, Any]):
    from mars2.sandbox import Sandbox, SandboxConfig

    return Sandbox(pick(SandboxConfig, cfg["sandbox"]))


def build_backend(cfg: Mapping[str, Any], models: Mapping[str, Any], tokenizers: Mapping[str, Any], seed: int):
    rollout = cfg["rollout"]
    if rollout["backend"] == "hf":
        from mars2.agents.hf_backend import HFBackend

        return HFBackend(
            dict(models), dict(tokenizers), max_new_tokens=int(rollout["max_new_tokens"]),
            temperature=float(rollout["temperature"]), top_p=float(rollout["top_p"]),
            max_batch_size=int(rollout["max_batch_size"]), seed=seed,
        )
    raise SetupError(f"rollout={rollout['backend']} is not available in this build yet (issue 6); use rollout=hf")
