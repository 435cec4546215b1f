"""The MARS² policy objective on one collated minibatch (method.md §5): policy-gradient loss (GSPO or GRPO),
optional TIS correction, k3 KL to a frozen reference; plus the old-log-prob pass the trainer runs before a
policy's update. Plain torch: the Lightning module only calls `policy_loss` and steps the optimiser."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import torch

from mars2.rl.collate import collate
from mars2.rl.losses import grpo_loss, gspo_loss, k3_kl, masked_mean, tis_weights, token_logprobs
from mars2.rl.samples import Sample

__all__ = ["LossConfig", "policy_loss", "compute_old_logprobs", "LOSSES"]

LOSSES = ("gspo", "grpo")


@dataclass
class LossConfig:
    """method.md §5 knobs. ``tis`` on when the rollout engine is not the trainer (vLLM); ``kl_coef`` 0 → no KL
    term (and the trainer keeps no reference model). ``temperature``: the rollout sampling temperature, used
    to score tokens under the same distribution that was sampled (MARTI: 1.0)."""

    loss: str = "gspo"
    eps_low: float = 0.2
    eps_high: float = 0.2
    kl_coef: float = 1e-3
    tis: bool = False
    tis_cap: float = 2.0
    tis_veto: float = 1e-4
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"LossConfig.loss must be one of {LOSSES}, got {self.loss!r}")


def _device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _first_col(batch: Mapping[str, Any]) -> int:
    """First log-prob column anyone needs: the earliest response token's column, min(prompt_len) − 1."""
    lens = batch.get("prompt_lens")
    return int(lens.min()) - 1 if isinstance(lens, torch.Tensor) and lens.numel() else 0


def policy_loss(
    model: torch.nn.Module,
    ref_model: torch.nn.Module | None,
    batch: Mapping[str, Any],
    cfg: LossConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """total = pg_loss + kl_coef · mean_i KL_i (method.md §5) on a batch from `mars2.rl.collate.collate`.

    ``old_logprobs`` missing from the batch → the current log-probs, detached, are used (ratio ≡ 1: exactly
    what recomputing them right before a single on-policy update gives). KL is computed only with a
    reference model and ``kl_coef > 0``. Stats (floats): loss, pg_loss, kl, clip_frac, ratio_mean,
    tis_weight_mean, tis_veto_frac, adv_mean, resp_len, logp_mean, and rollout_logp_gap (mean |old − rollout|
    over response tokens — the engine mismatch TIS corrects) when rollout log-probs are present."""
    dev = _device(model)
    input_ids = batch["input_ids"].to(dev)
    attention_mask = batch["attention_mask"].to(dev)
    mask = batch["response_mask"].to(dev).float()
    adv = batch["advantages"].to(dev).float()
    first = _first_col(batch)

    logp = token_logprobs(model, input_ids, attention_mask, cfg.temperature, first_col=first)
    old = batch["old_logprobs"].to(dev).float() if "old_logprobs" in batch else logp.detach()

    stats: dict[str, float] = {}
    weights = None
    has_rollout = batch.get("has_rollout_logprobs")
    rollout = batch.get("rollout_logprobs")
    if cfg.tis:
        if rollout is None or (has_rollout is not None and not bool(has_rollout.all())):
            raise ValueError("TIS is on but some samples carry no rollout log-probs (the backend reported none)")
        weights = tis_weights(old, rollout.to(dev).float(), mask, cfg.tis_cap, cfg.tis_veto)
        stats["tis_weight_mean"] = float(masked_mean(weights, mask))
        stats["tis_veto_frac"] = float((masked_mean(weights, mask, dim=-1) == 0).float().mean())
    else:
        stats["tis_weight_mean"] = 1.0
        stats["tis_veto_frac"] = 0.0
    if rollout is not None and has_rollout is not None and bool(has_rollout.any()):
        rows = has_rollout.to(dev)
        gap = (old[rows] - rollout.to(dev).float()[rows]).abs()
        stats["rollout_logp_gap"] = float(masked_mean(gap, mask[rows]))

    fn = gspo_loss if cfg.loss == "gspo" else grpo_loss
    pg, pg_stats = fn(logp, old, adv, mask, cfg.eps_low, cfg.eps_high, tis_weights=weights)
    stats.update(pg_stats)

    total = pg
    kl_value = 0.0
    if ref_model is not None and cfg.kl_coef > 0:
        with torch.no_grad():
            ref_logp = token_logprobs(ref_model, input_ids, attention_mask, cfg.temperature, first_col=first)
        kl = k3_kl(logp, ref_logp, mask).mean()
        total = total + cfg.kl_coef * kl
        kl_value = float(kl.detach())

    stats.update({
        "loss": float(total.detach()),
        "pg_loss": float(pg.detach()),
        "kl": kl_value,
        "adv_mean": float(adv.mean()),
        "resp_len": float(mask.sum(-1).mean()),
        "logp_mean": float(masked_mean(logp.detach(), mask)),
    })
    return total, stats


@torch.no_grad()
def compute_old_logprobs(
    model: torch.nn.Module,
    samples: Sequence[Sample],
    pad_id: int,
    batch_size: int = 16,
    temperature: float = 1.0,
) -> None:
    """Fill ``sample.old_logprobs`` with the current (pre-update) policy's log-probs of each response token
    (method.md §5 "Old log-probs"). Runs in eval mode (as the rollout does: no dropout), restoring the
    model's mode afterwards; samples are scored in chunks of ``batch_size`` sorted by length (less padding)."""
    if not samples:
        return
    dev = _device(model)
    was_training = model.training
    model.eval()
    try:
        order = sorted(range(len(samples)), key=lambda i: len(samples[i].prompt_ids) + len(samples[i].response_ids))
        for start in range(0, len(order), batch_size):
            chunk = [samples[i] for i in order[start:start + batch_size]]
            batch = collate(chunk, pad_id)
            lp = token_logprobs(model, batch["input_ids"].to(dev), batch["attention_mask"].to(dev), temperature,
                                first_col=_first_col(batch)).float().cpu()
            for row, s in enumerate(chunk):
                p, r = len(s.prompt_ids), len(s.response_ids)
                s.old_logprobs = lp[row, p - 1:p + r - 1].tolist()
    finally:
        model.train(was_training)
