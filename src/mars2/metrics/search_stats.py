"""Shape and per-agent statistics of searched trees (for logging and the evaluation table)."""
from __future__ import annotations

from typing import Sequence

from mars2.search.tree import Tree


def search_stats(trees: Sequence[Tree], agent_names: Sequence[str] | None = None) -> dict[str, float]:
    """Means over all real nodes of all ``trees``: ``nodes``, ``depth_mean``, ``depth_max``,
    ``root_width_mean`` (children of the root, per tree), ``refine_frac`` (share of nodes at depth > 1),
    ``public_pass_rate`` (score 1), ``hidden_pass_rate``; and per agent ``agent/<name>/nodes``,
    ``agent/<name>/public_pass_rate``, ``agent/<name>/hidden_pass_rate``. Agents are named by
    ``agent_names[agent_id]``, else by the node's ``agent_name``, else by the id."""
    nodes = [n for t in trees for n in t.real_nodes()]
    out: dict[str, float] = {"nodes": float(len(nodes))}
    if trees:
        out["root_width_mean"] = sum(len(t.root.children) for t in trees) / len(trees)
    if not nodes:
        return out
    out["depth_mean"] = sum(n.depth for n in nodes) / len(nodes)
    out["depth_max"] = float(max(n.depth for n in nodes))
    out["refine_frac"] = sum(n.depth > 1 for n in nodes) / len(nodes)
    out["public_pass_rate"] = sum(n.score >= 1.0 for n in nodes) / len(nodes)
    out["hidden_pass_rate"] = sum(n.hidden_pass for n in nodes) / len(nodes)
    by_agent: dict[str, list] = {}
    if agent_names is not None:
        for name in agent_names:
            by_agent[name] = []
    for n in nodes:
        if agent_names is not None and n.agent_id is not None and 0 <= n.agent_id < len(agent_names):
            name = agent_names[n.agent_id]
        else:
            name = n.agent_name or str(n.agent_id)
        by_agent.setdefault(name, []).append(n)
    for name, mine in by_agent.items():
        out[f"agent/{name}/nodes"] = float(len(mine))
        if mine:
            out[f"agent/{name}/public_pass_rate"] = sum(n.score >= 1.0 for n in mine) / len(mine)
            out[f"agent/{name}/hidden_pass_rate"] = sum(n.hidden_pass for n in mine) / len(mine)
    return out
