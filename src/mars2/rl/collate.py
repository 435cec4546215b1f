"""Samples → padded tensors for the policy loss (method.md §4.4, §5).

Alignment convention (the one place it is defined): a causal LM's logits at position t−1 predict token t, so
`mars2.rl.losses.token_logprobs` returns ``[B, T−1]`` where column j holds log p(x_{j+1} | x_{≤j}). A row is
``prompt (P tokens) + response (R tokens)``, right-padded; its response tokens sit at input positions
P … P+R−1, hence at log-prob columns P−1 … P+R−2. ``response_mask``, ``rollout_logprobs`` and
``old_logprobs`` all live in that ``[B, T−1]`` log-prob space."""
from __future__ import annotations

from typing import Sequence

import torch

from mars2.rl.samples import Sample

__all__ = ["collate"]


def collate(samples: Sequence[Sample], pad_id: int) -> dict[str, torch.Tensor]:
    """Pad a minibatch. Returns

    * ``input_ids`` [B, T] long — prompt + response, right-padded with ``pad_id``;
    * ``attention_mask`` [B, T] long — 1 on real tokens;
    * ``response_mask`` [B, T−1] float — 1 at the log-prob columns of response tokens;
    * ``advantages`` [B] float;
    * ``rollout_logprobs`` [B, T−1] float — the sampling log-probs, 0 where masked (and 0 for a sample whose
      backend reported none; ``has_rollout_logprobs`` [B] bool says which rows have them);
    * ``old_logprobs`` [B, T−1] float — only when every sample has them (set by `compute_old_logprobs`);
    * ``prompt_lens``, ``response_lens`` [B] long.

    Right padding needs no position ids: pad tokens come after every real token, so a causal model's outputs
    at real positions do not see them."""
    if not samples:
        raise ValueError("collate: empty minibatch")
    b = len(samples)
    lens = [len(s.prompt_ids) + len(s.response_ids) for s in samples]
    t = max(lens)
    if t < 2:
        raise ValueError("collate: every row needs at least one prompt and one response token")
    input_ids = torch.full((b, t), int(pad_id), dtype=torch.long)
    attention_mask = torch.zeros((b, t), dtype=torch.long)
    response_mask = torch.zeros((b, t - 1), dtype=torch.float32)
    rollout = torch.zeros((b, t - 1), dtype=torch.float32)
    has_rollout = torch.zeros(b, dtype=torch.bool)
    with_old = all(s.old_logprobs is not None for s in samples)
    old = torch.zeros((b, t - 1), dtype=torch.float32) if with_old else None
    for i, s in enumerate(samples):
        p, r = len(s.prompt_ids), len(s.response_ids)
        if p < 1 or r < 1:
            raise ValueError(f"collate: sample {s.tree_id}/{s.node_id} has {p} prompt and {r} response tokens; "
                             f"need ≥ 1 of each (the first response token is predicted from the last prompt "
                             f"token)")
        input_ids[i, :p + r] = torch.tensor(list(s.prompt_ids) + list(s.response_ids), dtype=torch.long)
        attention_mask[i, :p + r] = 1
        cols = slice(p - 1, p + r - 1)
        response_mask[i, cols] = 1.0
        if s.rollout_logprobs:
            if len(s.rollout_logprobs) != r:
                raise ValueError(f"collate: sample {s.tree_id}/{s.node_id} has {len(s.rollout_logprobs)} rollout "
                                 f"log-probs for {r} response tokens")
            rollout[i, cols] = torch.tensor(s.rollout_logprobs, dtype=torch.float32)
            has_rollout[i] = True
        if old is not None:
            old_lp = s.old_logprobs or []
            if len(old_lp) != r:
                raise ValueError(f"collate: sample {s.tree_id}/{s.node_id} has {len(old_lp)} old log-probs for "
                                 f"{r} response tokens")
            old[i, cols] = torch.tensor(old_lp, dtype=torch.float32)
    out = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "response_mask": response_mask,
        "advantages": torch.tensor([float(s.advantage) for s in samples], dtype=torch.float32),
        "rollout_logprobs": rollout,
        "has_rollout_logprobs": has_rollout,
        "prompt_lens": torch.tensor([len(s.prompt_ids) for s in samples], dtype=torch.long),
        "response_lens": torch.tensor([len(s.response_ids) for s in samples], dtype=torch.long),
    }
    if old is not None:
        out["old_logprobs"] = old
    return out
