"""Per-round training metrics (design.md "Experiment management": ``search/…``, ``agent/<name>/…``,
``rl/policy/<id>/…``, ``policy/<id>/…``, ``time/…``), computed from a round's trees, samples and update
statistics. Plain Python/numpy: the rollout callback (`mars2.training.rollout`) gathers the inputs and logs
the outputs.

A node "passes" / a tree is "solved" by the one rule, ``Evaluation.solved`` (every public and hidden test;
``Node.hidden_pass``), as in the evaluation; ``…/reward`` and ``rl/policy/<id>/pass_rate`` are the training
reward's view (``rl.reward_tests``), equal to it under the default ``reward_tests: all``."""
from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

import numpy as np

from mars2.rl.samples import Sample
from mars2.search.tree import Tree

__all__ = ["round_search_stats", "policy_sample_stats", "runner_stats", "policy_update_stats",
           "buffer_stats", "round_time_stats"]


def _passes(node: Any) -> bool:
    """Node is correct: ``Evaluation.solved`` (the evaluation's notion of correct, method.md §7)."""
    return bool(node.hidden_pass)


def round_search_stats(trees: Sequence[Tree], agent_names: Sequence[str]) -> dict[str, float]:
    """Search metrics of a round's trees: score/reward means, depth and width, per-agent node counts, pass
    rates, response lengths. ``agent_names[i]`` names the agent with ``agent_id`` i. Empty without nodes."""
    nodes = [n for t in trees for n in t.real_nodes()]
    out: dict[str, float] = {}
    if not nodes:
        return out
    out["search/nodes"] = float(len(nodes))
    out["search/score_mean"] = float(np.mean([n.score for n in nodes]))
    out["search/reward_mean"] = float(np.mean([n.reward for n in nodes]))
    out["search/pass_rate"] = float(np.mean([_passes(n) for n in nodes]))
    out["search/depth_mean"] = float(np.mean([n.depth for n in nodes]))
    out["search/depth_max"] = float(max(n.depth for n in nodes))
    out["search/root_width_mean"] = float(np.mean([len(t.root.children) for t in trees]))
    # width: children per expanded node (root included), i.e. the branching the search chose
    widths = [len(n.children) for t in trees for n in t.nodes if n.children]
    out["search/width_mean"] = float(np.mean(widths)) if widths else 0.0
    out["search/width_max"] = float(max(widths)) if widths else 0.0
    out["search/solved_frac"] = float(np.mean([any(_passes(n) for n in t.real_nodes()) for t in trees]))
    out["search/no_code_frac"] = float(np.mean([n.program is None for n in nodes]))
    out["search/response_len"] = float(np.mean([len(n.response_ids) for n in nodes]))
    counts = Counter(n.agent_id for n in nodes)
    for i, name in enumerate(agent_names):
        mine = [n for n in nodes if n.agent_id == i]
        out[f"agent/{name}/nodes"] = float(counts.get(i, 0))
        if mine:
            out[f"agent/{name}/reward"] = float(np.mean([n.reward for n in mine]))
            out[f"agent/{name}/pass_rate"] = float(np.mean([_passes(n) for n in mine]))
            out[f"agent/{name}/public_pass_rate"] = float(np.mean([n.score >= 1.0 for n in mine]))
            out[f"agent/{name}/refine_frac"] = float(np.mean([n.depth > 1 for n in mine]))
            out[f"agent/{name}/depth_mean"] = float(np.mean([n.depth for n in mine]))
            out[f"agent/{name}/response_len"] = float(np.mean([len(n.response_ids) for n in mine]))
    return out


def policy_sample_stats(samples: Sequence[Sample], policy_ids: Sequence[str]) -> dict[str, float]:
    """Per-policy statistics the shared `samples_stats` does not give: advantage spread, pass rate (reward
    = 1), response length."""
    out: dict[str, float] = {}
    for pid in policy_ids:
        mine = [s for s in samples if s.policy_id == pid]
        if not mine:
            continue
        adv = np.array([s.advantage for s in mine], dtype=float)
        out[f"rl/policy/{pid}/advantage_std"] = float(adv.std())
        out[f"rl/policy/{pid}/advantage_min"] = float(adv.min())
        out[f"rl/policy/{pid}/advantage_max"] = float(adv.max())
        out[f"rl/policy/{pid}/pass_rate"] = float(np.mean([s.reward >= 1.0 for s in mine]))
        out[f"rl/policy/{pid}/response_len"] = float(np.mean([len(s.response_ids) for s in mine]))
    return out


def runner_stats(stats: Mapping[str, Any], trees: Sequence[Tree]) -> dict[str, float]:
    """The tree runner's numeric counters and timings as ``search/<key>``, the round's generated tokens and,
    when generation was timed, its throughput."""
    out = {f"search/{k}": float(v) for k, v in stats.items() if isinstance(v, (int, float))}
    gen_tokens = sum(len(n.response_ids) for t in trees for n in t.real_nodes())
    out["search/gen_tokens"] = float(gen_tokens)
    if stats.get("generate_s"):
        out["search/gen_tokens_per_s"] = gen_tokens / float(stats["generate_s"])
    return out


def policy_update_stats(per_rank: Sequence[Mapping[str, Sequence[Mapping[str, float]]]],
                        policy_ids: Sequence[str]) -> tuple[dict[str, float], float]:
    """(metrics, training seconds) of a round's optimiser steps. ``per_rank[r][pid]`` is rank r's list of
    per-step statistics of policy ``pid`` (`MarsModule.drain_round_stats`): every rank trained on its slice
    of each minibatch, so losses are averaged over all ranks' steps and tokens summed; the number of updates
    and the seconds are rank 0's (ranks step in lockstep)."""
    out: dict[str, float] = {}
    train_s = 0.0
    for pid in policy_ids:
        mine = [s for stats in per_rank for s in stats.get(pid, [])]
        if not mine:
            continue
        out[f"policy/{pid}/updates"] = float(len(per_rank[0].get(pid, [])))
        keys = [k for k in mine[0] if k not in ("train_tokens", "train_s")]
        for key in keys:
            vals = [s[key] for s in mine if key in s]
            out[f"policy/{pid}/{key}"] = float(np.mean(vals))
        tokens = sum(s.get("train_tokens", 0.0) for s in mine)
        secs = sum(s.get("train_s", 0.0) for s in per_rank[0].get(pid, []))
        train_s += secs
        if secs > 0:
            out[f"policy/{pid}/train_tokens_per_s"] = tokens / secs
    return out, train_s


def buffer_stats(before: Mapping[str, int], after: Mapping[str, int], dropped: Mapping[str, int],
                 steps: Mapping[str, int]) -> dict[str, float]:
    """Per policy after the round's updates: optimiser steps so far, samples left in its buffer, dropped (too
    old) and taken for training (``before`` = size after the round's samples were routed)."""
    out: dict[str, float] = {}
    for pid in after:
        n_before = before.get(pid, after[pid])
        out[f"policy/{pid}/step"] = float(steps.get(pid, 0))
        out[f"policy/{pid}/buffer_after"] = float(after[pid])
        out[f"policy/{pid}/dropped"] = float(dropped[pid])
        out[f"policy/{pid}/taken"] = float(max(0, n_before - after[pid] - dropped[pid]))
    return out


def round_time_stats(round_s: float, train_s: float, score_s: float, generate_s: float) -> dict[str, float]:
    """Wall time of the round and the shares of it spent in the sandbox, in generation and in training."""
    out = {"time/round_s": round_s, "time/train_s": train_s}
    if round_s > 0:
        out["time/sandbox_share"] = score_s / round_s
        out["time/generate_share"] = generate_s / round_s
        out["time/train_share"] = train_s / round_s
    return out
