"""An agent (method.md §1): a name, a role prompt and the policy that writes for it. The generation
interface the agents' policies are sampled through lives in ``mars2.rollout.backend``."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AgentSpec:
    """An agent: a name, a role (system) prompt and the id of the policy that writes for it.

    Several agents may share one ``policy_id`` (homogeneous multi-role)."""

    name: str
    role_prompt: str
    policy_id: str
