"""Policy-gradient losses of method.md §5: GSPO (default), GRPO (option), k3 KL, truncated importance sampling.

All tensors live in the ``[B, T−1]`` log-prob space defined in `mars2.rl.collate` (column j ↔ token j+1);
``mask`` is 1 on response tokens. Losses return ``(loss, stats)`` with plain-float stats for logging."""
from __future__ import annotations

import inspect
import math

import torch
from torch.utils.checkpoint import checkpoint

__all__ = ["token_logprobs", "gspo_loss", "grpo_loss", "k3_kl", "tis_weights", "masked_mean"]


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over ``mask``; an all-masked row (or batch) gives 0, not NaN."""
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def _gather_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float) -> torch.Tensor:
    """log softmax(logits / T)[target] as gather − logsumexp, in float32, without a [.., V] log-softmax."""
    lg = logits.float()
    if temperature != 1.0:
        lg = lg / temperature
    return lg.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(lg, dim=-1)


def _accepts(model: torch.nn.Module, name: str) -> bool:
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def token_logprobs(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    temperature: float = 1.0,
    first_col: int = 0,
    chunk_rows: int = 4,
) -> torch.Tensor:
    """``[B, T−1]``: column j = log p(x_{j+1} | x_{≤j}) under ``softmax(logits / temperature)``.

    Memory: the full ``[B, T, V]`` log-softmax is never built — per chunk of ``chunk_rows`` rows we take
    gather(logits) − logsumexp(logits), upcast to float32 (bf16 log-probs are too coarse for ratios near 1).
    When the logits are not float32 and need grad, each chunk is checkpointed so backward does not keep the
    float32 copies of all chunks alive. Columns ``< first_col`` (prompt positions nobody needs) are returned
    as 0 and, if the model supports HF's ``logits_to_keep``, their logits are not computed at all.

    ``temperature`` must match the rollout's sampling temperature for ratios against rollout log-probs to be
    meaningful (MARTI: 1.0)."""
    t = input_ids.shape[1]
    if t < 2:
        raise ValueError("token_logprobs: need sequences of at least 2 tokens")
    first_col = max(0, min(int(first_col), t - 2))
    kwargs: dict = {"input_ids": input_ids, "attention_mask": attention_mask}
    if _accepts(model, "use_cache"):
        kwargs["use_cache"] = False  # no KV cache during training/scoring: pure memory cost
    keep = first_col > 0 and _accepts(model, "logits_to_keep")
    if keep:
        kwargs["logits_to_keep"] = t - first_col  # logits at positions first_col … T−1
    out = model(**kwargs)
    logits = out.logits if hasattr(out, "logits") else (out[0] if isinstance(out, (tuple, list)) else out)
    # The last T − first_col positions, whether or not the model honoured logits_to_keep (a wrapper with
    # **kwargs may accept and ignore it).
    logits = logits[:, logits.shape[1] - (t - first_col):]
    logits = logits[:, :-1]  # positions first_col … T−2 predict tokens first_col+1 … T−1
    targets = input_ids[:, first_col + 1:]
    use_ckpt = logits.requires_grad and logits.dtype != torch.float32
    parts = []
    for start in range(0, logits.shape[0], max(1, chunk_rows)):
        lg, tg = logits[start:start + chunk_rows], targets[start:start + chunk_rows]
        if use_ckpt:
            parts.append(checkpoint(_gather_logprobs, lg, tg, temperature, use_reentrant=False))
        else:
            parts.append(_gather_logprobs(lg, tg, temperature))
    lp = torch.cat(parts, dim=0)
    if first_col > 0:
        lp = torch.cat([lp.new_zeros(lp.shape[0], first_col), lp], dim=1)
    return lp


def _clipped_objective(ratio: torch.Tensor, adv: torch.Tensor, eps_low: float, eps_high: float):
    """PPO's −min(ratio·A, clip(ratio, 1−ε_low, 1+ε_high)·A) and where the clipped branch is strictly active
    (that is where the gradient through the ratio is zero)."""
    unclipped = -ratio * adv
    clipped = -ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * adv
    return torch.maximum(unclipped, clipped), clipped > unclipped


def gspo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    tis_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GSPO (method.md §5): s_i = exp(mean_t (log π_θ − log π_old)) over response tokens,
    L_i = −min(s_i A_i, clip(s_i, 1−ε_low, 1+ε_high) A_i), loss = mean over sequences.

    TIS (our reading): method.md's TIS weight is per token, but GSPO's loss is per sequence, so the sequence
    is weighted by the mean of its per-token TIS weights over response tokens (a vetoed sequence has all
    weights 0 → weight 0). Stats: ``clip_frac`` (fraction of sequences on the clipped branch), ``ratio_mean``
    (mean s_i), ``ratio_max``, ``ratio_min``."""
    mask = mask.to(logp.dtype)
    log_ratio = masked_mean(logp - old_logp, mask, dim=-1)
    ratio = torch.exp(log_ratio)
    per_seq, is_clipped = _clipped_objective(ratio, advantages.to(ratio.dtype), eps_low, eps_high)
    if tis_weights is not None:
        per_seq = per_seq * masked_mean(tis_weights.detach().to(ratio.dtype), mask, dim=-1)
    loss = per_seq.mean()
    r = ratio.detach()
    stats = {
        "clip_frac": float(is_clipped.float().mean()),
        "ratio_mean": float(r.mean()),
        "ratio_max": float(r.max()),
        "ratio_min": float(r.min()),
    }
    return loss, stats


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    tis_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """GRPO option (method.md §5): per-token ratio r_t = exp(log π_θ − log π_old), per-token clipped objective
    with the sequence advantage, TIS weight multiplied per token, token-mean aggregation over all response
    tokens of the batch (Σ L_t·m_t / Σ m_t, DAPO / verl "token-mean"). Stats as in `gspo_loss`, over tokens."""
    mask = mask.to(logp.dtype)
    ratio = torch.exp(logp - old_logp)
    per_tok, is_clipped = _clipped_objective(ratio, advantages.to(ratio.dtype).unsqueeze(-1), eps_low, eps_high)
    if tis_weights is not None:
        per_tok = per_tok * tis_weights.detach().to(ratio.dtype)
    loss = masked_mean(per_tok, mask)
    r = ratio.detach()
    on = mask > 0
    stats = {
        "clip_frac": float(masked_mean(is_clipped.to(mask.dtype), mask)),
        "ratio_mean": float(masked_mean(r, mask)),
        "ratio_max": float(r[on].max()) if bool(on.any()) else 1.0,
        "ratio_min": float(r[on].min()) if bool(on.any()) else 1.0,
    }
    return loss, stats


def k3_kl(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, clamp: float = 20.0) -> torch.Tensor:
    """k3 estimator of KL(π_θ ‖ π_ref) per sequence (method.md §5): mean over response tokens of
    exp(d) − d − 1 with d = log π_ref − log π_θ. ≥ 0, and 0 iff the log-probs agree. d is clamped to
    ±``clamp`` so one wild token cannot produce inf (exp(20) ≈ 5e8 is still a huge penalty)."""
    d = (ref_logp.detach() - logp).clamp(-clamp, clamp)
    return masked_mean(torch.exp(d) - d - 1.0, mask.to(logp.dtype), dim=-1)


def tis_weights(
    old_logp: torch.Tensor,
    rollout_logp: torch.Tensor,
    mask: torch.Tensor,
    cap: float = 2.0,
    veto: float = 1e-4,
) -> torch.Tensor:
    """Truncated importance sampling weights (method.md §5), detached, ``[B, T−1]``:
    w_t = min(exp(log π_old − log π_rollout), cap); a sequence with any response-token ratio < ``veto`` gets
    weight 0 on every token. Masked positions are 0."""
    with torch.no_grad():
        mask = mask.to(old_logp.dtype)
        log_ratio = (old_logp - rollout_logp) * mask
        w = torch.exp(log_ratio.clamp(max=math.log(cap)))  # = min(ratio, cap), overflow-safe
        vetoed = ((log_ratio < math.log(veto)) & (mask > 0)).any(dim=-1, keepdim=True)
        w = w * mask * (~vetoed).to(w.dtype)
    return w.detach()
