"""Tree-level group advantage (method.md §4.3): one normalisation over all nodes of one tree, of all agents
and depths, before samples are split by policy. For `iid` search the tree is N fresh solutions of one prompt,
so this is GRPO's group advantage (§4.5)."""
from __future__ import annotations

import math
from typing import Sequence

__all__ = ["tree_advantages"]


def tree_advantages(values: Sequence[float], eps: float = 1e-9) -> list[float]:
    """A_v = (x_v − mean) / (std + eps) with the unbiased (n − 1) standard deviation (method.md §4.3).

    One node has no spread (the unbiased std is undefined): its advantage is 0. All-equal values give std 0
    and therefore advantages 0 — such a group carries no preference signal. An empty input gives []."""
    n = len(values)
    if n == 0:
        return []
    if n == 1:
        return [0.0]
    x = [float(v) for v in values]
    if max(x) == min(x):  # exact zeros, not the float noise of (x − mean) / eps
        return [0.0] * n
    mean = sum(x) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in x) / (n - 1))
    return [(v - mean) / (std + eps) for v in x]
