"""The one interface every generation backend implements (method.md §1, §5), with its capabilities explicit.

A backend turns a batch of chat prompts — possibly for several policies — into one sampled ``Generation`` per
prompt, in order. What the trainer must do around it depends on where the weights live, and that is stated by
the backend (``capabilities``), never guessed from its class name or probed with ``hasattr``:

- ``shares_trainer_modules``: it samples with the trainer's own ``nn.Module`` objects (HF ``generate``). Under
  FSDP the modules are sharded, so every rank must enter the full-parameter gather before rank 0 generates.
- ``holds_own_weights``: it keeps its own copy (a vLLM engine): after each optimiser step of a policy the
  trainer calls ``on_policy_updated(policy_id, module)`` so the copy is refreshed before the next generation.
  An API endpoint (``openai``) has neither: its weights are the server's business.

``BackendBase`` gives the counters (``calls`` seeds each call's sampling, so it is checkpointed) and no-op
hooks; a backend overrides what it needs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence


@dataclass
class GenerationRequest:
    """One prompt for one policy. ``messages`` are chat messages ({"role", "content"})."""

    policy_id: str
    messages: list[dict[str, str]]


@dataclass
class Generation:
    """One sampled response. ``logprobs[i]`` is the sampling log-prob of ``response_ids[i]``."""

    text: str
    prompt_ids: list[int]
    response_ids: list[int]
    logprobs: list[float]
    truncated: bool = False  # hit max_new_tokens without an end-of-turn token
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class BackendCapabilities:
    """What the trainer must do around a backend (see the module docstring)."""

    shares_trainer_modules: bool = False
    holds_own_weights: bool = False


class GenerationBackend(Protocol):
    """Batch of prompts (possibly for several policies) in, one Generation per prompt out, in order."""

    capabilities: BackendCapabilities

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]: ...

    def on_policy_updated(self, policy_id: str, module: Any = None) -> None: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


class BackendBase:
    """Defaults for the protocol: call/token counters as the checkpointed state, no-op hooks."""

    capabilities = BackendCapabilities()

    def __init__(self) -> None:
        self.calls = 0  # generate() calls so far; part of each call's sampling seed, hence checkpointed
        self.tokens_generated = 0

    def _local_policies(self, name: str, models: Any, tokenizers: Any, max_new_tokens: int, temperature: float,
                        top_p: float, max_batch_size: int, seed: int, greedy: bool, enable_thinking: bool) -> None:
        """The settings every backend that tokenizes locally (hf, vllm) shares: one model and tokenizer per
        policy id, sampling parameters, batching. MARTI disables Qwen3's thinking block
        (``enable_thinking=False``); templates without that switch ignore the keyword."""
        if set(models) != set(tokenizers):
            raise ValueError(f"{name}: models and tokenizers must have the same policy ids; "
                             f"mismatch: {sorted(set(models) ^ set(tokenizers))}")
        if max_batch_size < 1 or max_new_tokens < 1:
            raise ValueError(f"{name}: max_batch_size and max_new_tokens must be >= 1")
        self.models = dict(models)
        self.tokenizers = dict(tokenizers)
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_batch_size = int(max_batch_size)
        self.seed = int(seed)
        self.greedy = bool(greedy)
        self.enable_thinking = bool(enable_thinking)

    def prompt_ids(self, policy_id: str, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of the chat-templated prompt, ending with the assistant generation prompt (backends that
        tokenize locally: the same function for hf and vllm)."""
        return chat_prompt_ids(self.tokenizers[policy_id], messages, self.enable_thinking)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        raise NotImplementedError

    def on_policy_updated(self, policy_id: str, module: Any = None) -> None:
        """Refresh this backend's copy of ``policy_id``'s weights (only backends that hold their own)."""

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls, "tokens_generated": self.tokens_generated}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.calls = int(state.get("calls", self.calls))
        self.tokens_generated = int(state.get("tokens_generated", self.tokens_generated))

    def close(self) -> None:
        """Release engines / sessions; idempotent."""


def chat_prompt_ids(tokenizer, messages: list[dict[str, str]], enable_thinking: bool = False) -> list[int]:
    """Token ids of ``messages`` rendered with the tokenizer's chat template, ending with the assistant
    generation prompt (method.md §1 "Prompts"). Every backend that tokenizes locally (hf, vllm) builds its
    prompts here, so the token ids the trainer sees are the same whichever engine sampled the response.
    MARTI disables Qwen3's thinking block (``enable_thinking=False``); templates without that switch ignore
    the keyword."""
    text = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, enable_thinking=enable_thinking
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def group_by_policy(requests: Sequence[GenerationRequest], known: Any, backend: str) -> dict[str, list[int]]:
    """Request indices per policy id, in order of first appearance (deterministic batching and seeding).
    An id not in ``known`` (the backend's policies) is a KeyError naming the backend and what it has."""
    by_policy: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        if r.policy_id not in known:
            raise KeyError(f"{backend}: unknown policy id {r.policy_id!r} (have {sorted(known)})")
        by_policy.setdefault(r.policy_id, []).append(i)
    return by_policy
