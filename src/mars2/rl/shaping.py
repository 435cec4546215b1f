"""Reward shaping on a search tree: the DAPO overlong penalty and MARS² tree-consistent shaping
(method.md §4.1 and §4.2).

Both are pure functions of plain numbers so a test can check them against hand-computed values; the
tree → samples plumbing lives in `mars2.rl.samples`."""
from __future__ import annotations

from typing import Sequence

__all__ = ["overlong_penalty", "shape_rewards"]


def overlong_penalty(length: int, max_new_tokens: int, buffer: int, factor: float = 1.0) -> float:
    """DAPO's soft overlong penalty (method.md §4.1); returns the (≤ 0) amount to *add* to the reward.

    With expected length E = L_max − B: a response of ``length`` L ≤ E gets 0; E < L gets
    −min(L − E, B) / B · factor, i.e. a linear ramp from 0 to −factor over the buffer, flat at −factor beyond
    L_max (a response cannot be longer than L_max when L_max is the generation limit, but the clamp keeps the
    function total). ``buffer <= 0`` disables the penalty (there is no ramp to speak of)."""
    if buffer <= 0:
        return 0.0
    expected = max_new_tokens - buffer
    if length <= expected:
        return 0.0
    return -min(length - expected, buffer) / buffer * factor


def shape_rewards(
    parent_ids: Sequence[int],
    rewards: Sequence[float],
    lam: float = 0.5,
    gamma: float = 0.5,
    root_id: int = 0,
) -> list[float]:
    """Tree-consistent reward shaping of MARS² (method.md §4.2).

    Nodes are given in expand order: node ``i`` (0-based) has node id ``i + 1`` and its parent's node id is
    ``parent_ids[i]`` (``root_id`` — the virtual root, 0 — for a fresh solution). For each node v, in expand
    order::

        b(v) = (1 − λ) · r̂_parent(v) + λ · mean(r_s for s in siblings(v))
        r̂_v  = r_v + γ · (r_v − b(v))

    Readings of method.md we fix here (the formula alone leaves them open):

    * **Parent term uses the parent's shaped reward r̂.** method.md says the nodes are "processed in expand
      order so a parent is already shaped when its children are" — that sentence only matters if the parent
      term reads r̂_parent, so it does. A parent always precedes its children in expand order (checked).
    * **Sibling term uses raw rewards r of ALL other children of the same parent**, including siblings
      created *after* v (the tree is complete when it is turned into samples, and "v's siblings" names no
      time cut-off). Raw rather than shaped, because siblings are not ancestors: using r̂ of earlier siblings
      only would make the baseline depend on creation order among peers.
    * **Parent term only if the parent is not the root** (the root is virtual, it has no reward).
    * **Sibling term only with ≥ 1 sibling.**
    * **One term alone is the whole baseline** (not scaled by (1 − λ) or λ): b(v) = r̂_parent or
      b(v) = mean(siblings). λ only weighs the two terms against each other when both exist.
    * **Neither term** (a lone child of the root): r̂_v = r_v.

    Children of the root are siblings of one another, so fresh solutions are shaped against each other. For a
    flat tree (every node a child of the root — `iid` search) the shaping is an increasing affine map of r
    with one offset for all nodes, so after tree-level normalisation (§4.3) the advantages equal plain GRPO's.
    """
    n = len(rewards)
    if len(parent_ids) != n:
        raise ValueError(f"shape_rewards: {len(parent_ids)} parent ids for {n} rewards")
    if 1 <= root_id <= n:
        raise ValueError(f"shape_rewards: root id {root_id} collides with a real node id (real ids are 1..{n})")
    r = [float(x) for x in rewards]
    children: dict[int, list[int]] = {}  # parent node id -> 0-based indices of its children
    for i, p in enumerate(parent_ids):
        p = int(p)
        if p != root_id and not (1 <= p <= i):
            # A parent must be a real node created before its child (or the root): expand order.
            raise ValueError(f"shape_rewards: node {i + 1} has parent {p}, which is neither the root nor an "
                             f"earlier node")
        children.setdefault(p, []).append(i)

    shaped: list[float] = []
    for i, p in enumerate(parent_ids):
        p = int(p)
        terms: list[tuple[float, float]] = []  # (weight, value)
        if p != root_id:
            terms.append((1.0 - lam, shaped[p - 1]))  # parent already shaped: p − 1 < i
        siblings = [j for j in children[p] if j != i]
        if siblings:
            terms.append((lam, sum(r[j] for j in siblings) / len(siblings)))
        if not terms:
            shaped.append(r[i])
            continue
        baseline = terms[0][1] if len(terms) == 1 else sum(w * v for w, v in terms)
        shaped.append(r[i] + gamma * (r[i] - baseline))
    return shaped
