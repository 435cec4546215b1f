"""The LightningModule of a MARS2 team: one policy per policy id, manual optimisation (method.md §5).

Each policy has its own optimiser, LR schedule, step counter and frozen reference model. A training batch
names the policy it belongs to, so one `training_step` updates exactly one policy."""
from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any, Mapping

import lightning.pytorch as pl
import torch
from torch import nn

from mars2.rl.objective import LossConfig, policy_loss


class MarsModule(pl.LightningModule):
    def __init__(
        self,
        policies: Mapping[str, nn.Module],
        loss_cfg: LossConfig,
        optim: Mapping[str, Any],
        keep_reference: bool | None = None,
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.policy_ids = list(policies)
        self.policies = nn.ModuleDict(dict(policies))
        self.loss_cfg = loss_cfg
        self.optim_cfg = dict(optim)
        keep_reference = loss_cfg.kl_coef > 0 if keep_reference is None else keep_reference
        # k3 KL needs a frozen copy of the starting policy; with kl_coef 0 none is kept (method.md §5).
        self.refs = nn.ModuleDict()
        if keep_reference:
            for pid, model in policies.items():
                ref = copy.deepcopy(model).eval()
                ref.requires_grad_(False)
                self.refs[pid] = ref
        self.policy_steps: dict[str, int] = {pid: 0 for pid in self.policy_ids}
        # stats of the current round, drained by the rollout callback for logging
        self.round_stats: dict[str, list[dict[str, float]]] = defaultdict(list)

    # -- optimisers -------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        opts, scheds = [], []
        warmup = int(self.optim_cfg.get("warmup_steps", 0) or 0)
        for pid in self.policy_ids:
            opt = torch.optim.AdamW(
                self.policies[pid].parameters(),
                lr=float(self.optim_cfg["lr"]),
                betas=tuple(self.optim_cfg.get("betas", (0.9, 0.999))),
                weight_decay=float(self.optim_cfg.get("weight_decay", 0.0)),
            )
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda step, w=warmup: min(1.0, (step + 1) / w) if w > 0 else 1.0
            )
            opts.append(opt)
            scheds.append(sched)
        return opts, scheds

    def _optimizer_of(self, pid: str):
        idx = self.policy_ids.index(pid)
        opts = self.optimizers()
        scheds = self.lr_schedulers()
        opts = opts if isinstance(opts, list) else [opts]
        scheds = scheds if isinstance(scheds, list) else [scheds]
        return opts[idx], scheds[idx]

    # -- training ---------------------------------------------------------------------------------------------
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor | None:
        pid = batch["policy_id"]
        if pid is None:  # no-op batch of a round in which no policy had a full batch
            return None
        model = self.policies[pid]
        ref = self.refs[pid] if pid in self.refs else None
        opt, sched = self._optimizer_of(pid)
        model.train()
        loss, stats = policy_loss(model, ref, batch, self.loss_cfg)
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        clip = float(self.optim_cfg.get("grad_clip", 0.0) or 0.0)
        if clip > 0:
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            stats["grad_norm"] = float(grad_norm)
        opt.step()
        sched.step()
        self.policy_steps[pid] += 1
        stats["lr"] = float(sched.get_last_lr()[0])
        stats["step"] = float(self.policy_steps[pid])
        self.round_stats[pid].append(stats)
        return loss.detach()

    def drain_round_stats(self) -> dict[str, list[dict[str, float]]]:
        out = dict(self.round_stats)
        self.round_stats = defaultdict(list)
        return out

    # -- checkpoint extras ------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["mars2_policy_steps"] = dict(self.policy_steps)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.policy_steps.update(checkpoint.get("mars2_policy_steps", {}))
