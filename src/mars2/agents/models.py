"""Policies: tiny random-init models of the real architectures, or real checkpoints (method.md §8,
design.md "The miniature world" / "Real scale").

One code path from tiny to 32B (design.md principle 2): a tiny policy is a genuine
``Qwen3ForCausalLM`` / ``LlamaForCausalLM`` built from a transformers config with the tiny BPE tokenizer's
vocabulary, so generation, log-prob recomputation and training never special-case the miniature. A real
policy is loaded from a local folder or an existing HF cache with ``local_files_only=True``; absent weights
raise `ModelNotFoundError` with a one-line message saying where to put them — never a hub download.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

ARCHS = ("qwen3", "llama")
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16}


class ModelNotFoundError(RuntimeError):
    """The weights of a real policy are not on this machine. The message is one line: model id + where to
    put the checkpoint. Raised instead of any network access."""


@dataclass
class PolicySpec:
    """How to build one policy. Tiny (``path`` and ``hf_id`` unset): architecture + sizes, random init seeded
    by ``seed``. Real: ``path`` (a folder in the HF format) or ``hf_id`` (looked up in the local HF cache)."""

    id: str
    arch: str = "qwen3"
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    num_kv_heads: int = 2
    head_dim: int = 32
    intermediate_size: int = 384
    max_position_embeddings: int = 1024
    seed: int = 0
    hf_id: str | None = None
    path: str | None = None
    dtype: str = "float32"
    tie_embeddings: bool = True

    @property
    def is_tiny(self) -> bool:
        return not self.path and not self.hf_id


def torch_dtype(name: str) -> torch.dtype:
    try:
        return _DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; use one of {sorted(_DTYPES)}") from None


def tiny_config(spec: PolicySpec, tokenizer):
    """The transformers config of a tiny policy (vocabulary and special ids from ``tokenizer``)."""
    from transformers import LlamaConfig, Qwen3Config

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_kv_heads,
        head_dim=spec.head_dim,
        intermediate_size=spec.intermediate_size,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=spec.tie_embeddings,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    if spec.arch == "qwen3":
        return Qwen3Config(**common)
    if spec.arch == "llama":
        return LlamaConfig(**common)
    raise ValueError(f"policy {spec.id}: arch must be one of {ARCHS}, got {spec.arch!r}")


def build_policy(spec: PolicySpec, tokenizer=None):
    """Build one policy → ``(model, tokenizer)``.

    - tiny: ``tokenizer`` is required (the shared tiny BPE tokenizer); the model is random-initialised from
      ``torch.manual_seed(spec.seed)`` inside a forked RNG (the caller's global RNG is untouched);
    - real: loaded from ``spec.path`` or the HF cache for ``spec.hf_id``; the tokenizer comes from the same
      folder unless one is passed.
    The model is returned in eval mode with eos/pad ids set in both config and generation_config."""
    if spec.is_tiny:
        if tokenizer is None:
            raise ValueError(f"policy {spec.id}: a tiny policy needs the tiny tokenizer (build_tiny_tokenizer)")
        from transformers import AutoModelForCausalLM

        config = tiny_config(spec, tokenizer)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model = AutoModelForCausalLM.from_config(config, dtype=torch_dtype(spec.dtype))
    else:
        model, tokenizer = _load_real(spec, tokenizer)
    _set_special_ids(model, tokenizer)
    model.eval()
    return model, tokenizer


def _set_special_ids(model, tokenizer) -> None:
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if pad is None:  # many base checkpoints have no pad token; left padding is masked anyway
        pad = eos
    for cfg in (model.config, getattr(model, "generation_config", None)):
        if cfg is None:
            continue
        cfg.pad_token_id = pad
        if eos is not None:
            cfg.eos_token_id = eos


def _resolve_local(spec: PolicySpec) -> Path:
    """The local folder holding the checkpoint, or ModelNotFoundError. Never touches the network."""
    if spec.path:
        p = Path(spec.path).expanduser()
        if (p / "config.json").is_file():
            return p
    if spec.hf_id:
        try:
            from huggingface_hub import snapshot_download

            # local_files_only: resolves the cached snapshot or raises; never downloads.
            # HF_HUB_CACHE is read at call time (huggingface_hub reads it once at import).
            cache = os.environ.get("HF_HUB_CACHE") or None
            return Path(snapshot_download(spec.hf_id, local_files_only=True, cache_dir=cache))
        except Exception:  # noqa: BLE001 - any failure means "not here"; the message below says what to do
            pass
    name = spec.hf_id or spec.id
    where = spec.path or os.path.join(os.environ.get("MARS2_MODELS_DIR", "<models_dir>"), (spec.hf_id or spec.id).split("/")[-1])
    raise ModelNotFoundError(
        f"weights for policy '{spec.id}' ({name}) not found: put the checkpoint (config.json, *.safetensors, "
        f"tokenizer files) at {where}" + (f" or pre-fill the HF cache for {spec.hf_id}" if spec.hf_id else "")
    )


def _load_real(spec: PolicySpec, tokenizer=None):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = _resolve_local(spec)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype(spec.dtype), local_files_only=True)
    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    tokenizer.padding_side = "left"  # generation batches are left-padded
    return model, tokenizer


def ensure_pad_token(tokenizer, policy_id: str = "?"):
    """Many base checkpoints (Llama-3 style) define no pad token: use the eos token, as HF users do (padding
    is masked everywhere: left-padded prompts, right-padded training batches). Without either token: a
    ValueError naming the policy."""
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token is None:
            raise ValueError(f"policy {policy_id}: its tokenizer has neither a pad nor an eos token; "
                             "set one in its tokenizer_config.json")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (tied embeddings counted once)."""
    return sum(p.numel() for p in model.parameters())
