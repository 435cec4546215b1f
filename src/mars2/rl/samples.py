"""From a finished search tree to per-policy training samples (method.md §4).

Order of operations, all on the *whole* tree: overlong penalty (§4.1) → tree-consistent shaping (§4.2) →
tree-level advantage over every node of every agent and depth (§4.3) → one sample per node for the policy
of the agent that wrote it (§4.4). Normalising before the split is what makes a policy whose nodes are all
below the team's mean receive only negative advantages."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from mars2.rl.advantages import tree_advantages
from mars2.rl.shaping import overlong_penalty, shape_rewards
from mars2.search.tree import ROOT_ID, Tree

__all__ = ["Sample", "SampleConfig", "tree_to_samples", "samples_stats", "SHAPINGS"]

SHAPINGS = ("tree", "none")


@dataclass
class Sample:
    """One node of one tree as a training example for the policy ``policy_id`` (method.md §4.4).

    ``reward`` is the node's training reward as scored (§2); ``shaped_reward`` is after the overlong penalty
    and the tree shaping; ``advantage`` is the tree-level normalised ``shaped_reward``, constant over the
    response tokens. ``rollout_logprobs[i]`` is the sampling log-prob of ``response_ids[i]`` from the rollout
    engine; ``old_logprobs`` is filled by the trainer just before the update (§5 "Old log-probs")."""

    policy_id: str
    agent_id: int | None
    agent_name: str
    tree_id: str
    node_id: int
    step: int
    prompt_ids: list[int]
    response_ids: list[int]
    reward: float
    shaped_reward: float
    advantage: float
    rollout_logprobs: list[float]
    old_logprobs: list[float] | None = None
    # extras for logging / analysis (defaults keep the constructor above stable)
    depth: int = 0
    parent_id: int = ROOT_ID
    overlong_penalty: float = 0.0
    truncated: bool = False


@dataclass
class SampleConfig:
    """Tree → samples settings (method.md §4). ``shaping``: ``tree`` (MARS², default) or ``none`` (the released
    MARTI behaviour, whose shaping never receives parent ids). ``max_new_tokens`` / ``overlong_buffer`` are
    DAPO's L_max and B (MARTI: 32768 and 2048); ``overlong=False`` turns the penalty off."""

    shaping: str = "tree"
    lam: float = 0.5
    gamma: float = 0.5
    max_new_tokens: int = 32768
    overlong_buffer: int = 2048
    overlong_factor: float = 1.0
    overlong: bool = True

    def __post_init__(self) -> None:
        if self.shaping not in SHAPINGS:
            raise ValueError(f"SampleConfig.shaping must be one of {SHAPINGS}, got {self.shaping!r}")
        if self.overlong and self.overlong_buffer > self.max_new_tokens:
            raise ValueError(f"SampleConfig: overlong_buffer {self.overlong_buffer} exceeds max_new_tokens "
                             f"{self.max_new_tokens}")


def tree_to_samples(tree: Tree, cfg: SampleConfig, step: int) -> list[Sample]:
    """All samples of one tree, in expand order (method.md §4.1–4.4).

    Every real node takes part in shaping and normalisation. A node with an empty response (nothing was
    generated) yields no sample — there is no token to train — but still counts in its tree's statistics."""
    nodes = list(tree.real_nodes())
    if not nodes:
        return []
    for i, node in enumerate(nodes):
        if node.id != i + 1:  # shape_rewards relies on id = expand_idx + 1
            raise ValueError(f"tree {tree.problem_id}: node at position {i} has id {node.id}, expected {i + 1}")

    penalties = [
        overlong_penalty(len(n.response_ids), cfg.max_new_tokens, cfg.overlong_buffer, cfg.overlong_factor)
        if cfg.overlong else 0.0
        for n in nodes
    ]
    rewards = [float(n.reward) + p for n, p in zip(nodes, penalties)]
    if cfg.shaping == "tree":
        shaped = shape_rewards([int(n.parent_id) for n in nodes], rewards, cfg.lam, cfg.gamma, root_id=ROOT_ID)
    else:
        shaped = rewards
    advantages = tree_advantages(shaped)

    samples = []
    for node, pen, r_hat, adv in zip(nodes, penalties, shaped, advantages):
        if not node.response_ids:
            continue
        if node.logprobs and len(node.logprobs) != len(node.response_ids):
            raise ValueError(f"tree {tree.problem_id} node {node.id}: {len(node.logprobs)} log-probs for "
                             f"{len(node.response_ids)} response tokens")
        samples.append(Sample(
            policy_id=node.policy_id,
            agent_id=node.agent_id,
            agent_name=node.agent_name,
            tree_id=tree.problem_id,
            node_id=node.id,
            step=step,
            prompt_ids=list(node.prompt_ids),
            response_ids=list(node.response_ids),
            reward=float(node.reward),
            shaped_reward=float(r_hat),
            advantage=float(adv),
            rollout_logprobs=list(node.logprobs),
            depth=node.depth,
            parent_id=int(node.parent_id),
            overlong_penalty=float(pen),
            truncated=bool(node.truncated),
        ))
    return samples


def _summary(samples: list[Sample], prefix: str) -> dict[str, float]:
    adv = np.array([s.advantage for s in samples], dtype=float)
    return {
        f"{prefix}samples": float(len(samples)),
        f"{prefix}reward_mean": float(np.mean([s.reward for s in samples])),
        f"{prefix}shaped_reward_mean": float(np.mean([s.shaped_reward for s in samples])),
        f"{prefix}advantage_mean": float(adv.mean()),
        f"{prefix}advantage_pos_frac": float((adv > 0).mean()),
    }


def samples_stats(samples: Iterable[Sample]) -> dict[str, float]:
    """Logging summary of a round's samples: reward / shaped reward / advantage statistics overall, per policy
    (``policy/<id>/…``) and per agent (``agent/<name>/…``); empty input → {}."""
    samples = list(samples)
    if not samples:
        return {}
    adv = np.array([s.advantage for s in samples], dtype=float)
    out = _summary(samples, "")
    out.update({
        "advantage_std": float(adv.std()),
        "advantage_abs_mean": float(np.abs(adv).mean()),
        "zero_advantage_frac": float((adv == 0).mean()),
        "response_len_mean": float(np.mean([len(s.response_ids) for s in samples])),
        "prompt_len_mean": float(np.mean([len(s.prompt_ids) for s in samples])),
        "overlong_frac": float(np.mean([s.overlong_penalty < 0 for s in samples])),
        "overlong_penalty_mean": float(np.mean([s.overlong_penalty for s in samples])),
        "truncated_frac": float(np.mean([s.truncated for s in samples])),
        "depth_mean": float(np.mean([s.depth for s in samples])),
    })
    by_policy: dict[str, list[Sample]] = defaultdict(list)
    by_agent: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_policy[s.policy_id].append(s)
        by_agent[s.agent_name or str(s.agent_id)].append(s)
    for pid, group in by_policy.items():
        out.update(_summary(group, f"policy/{pid}/"))
    for name, group in by_agent.items():
        out.update(_summary(group, f"agent/{name}/"))
    return out
