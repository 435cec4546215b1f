"""Build the team of agents for a paradigm (method.md §1, §8) from plain config dicts."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from mars2.agents.base import AgentSpec

PARADIGMS = ("single", "homogeneous", "heterogeneous")  # paradigm.name (method.md §8)


def build_team(paradigm: Mapping[str, Any], roster: Sequence[str], roles: Sequence[Mapping[str, str]]) -> list[AgentSpec]:
    """single: 1 agent on roster[0]; homogeneous: N roles sharing roster[0]; heterogeneous: agent i on roster[i].

    Agent i always gets roles[i % len(roles)], so homogeneous and heterogeneous teams of the same size
    differ only in weight sharing (our choice)."""
    n = int(paradigm["n_agents"])
    name = paradigm["name"]
    if name == "heterogeneous" and n > len(roster):
        raise ValueError(f"heterogeneous team of {n} agents needs {n} policies, roster has {len(roster)}")
    agents = []
    for i in range(n):
        role = roles[i % len(roles)]
        policy = roster[i] if name == "heterogeneous" else roster[0]
        agent_name = f"{role['name']}" if name != "heterogeneous" else f"{role['name']}@{policy}"
        agents.append(AgentSpec(name=agent_name, role_prompt=role["prompt"], policy_id=policy))
    return agents


def team_policies(agents: Sequence[AgentSpec]) -> list[str]:
    """Distinct policy ids in first-use order."""
    return list(dict.fromkeys(a.policy_id for a in agents))
