"""Agents and the one interface every generation backend implements (method.md §1, §5)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence


@dataclass(frozen=True)
class AgentSpec:
    """An agent: a name, a role (system) prompt and the id of the policy that writes for it.

    Several agents may share one ``policy_id`` (homogeneous multi-role)."""

    name: str
    role_prompt: str
    policy_id: str


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


class GenerationBackend(Protocol):
    """Batch of prompts (possibly for several policies) in, one Generation per prompt out, in order."""

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]: ...


def group_by_policy(requests: Sequence[GenerationRequest], known: Any, backend: str) -> dict[str, list[int]]:
    """Request indices per policy id, in order of first appearance (deterministic batching and seeding).
    An id not in ``known`` (the backend's policies) is a KeyError naming the backend and what it has."""
    by_policy: dict[str, list[int]] = {}
    for i, r in enumerate(requests):
        if r.policy_id not in known:
            raise KeyError(f"{backend}: unknown policy id {r.policy_id!r} (have {sorted(known)})")
        by_policy.setdefault(r.policy_id, []).append(i)
    return by_policy
