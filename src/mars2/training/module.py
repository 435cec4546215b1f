"""The LightningModule of a MARS2 team: one policy per policy id, manual optimisation (method.md §5).

Each policy has its own optimiser, LR schedule, step counter and frozen reference model. A training batch
names the policy it belongs to, so one `training_step` updates exactly one policy. Checkpoints hold the
policies, the references, every optimiser / scheduler (Lightning) and the step counters (`on_save_checkpoint`);
the rest of a run's state is the rollout callback's (mars2.training.checkpointing)."""
from __future__ import annotations

import copy
import time
from collections import defaultdict
from typing import Any, Callable, Mapping

import lightning.pytorch as pl
import torch
from torch import nn

from mars2.rl.objective import LossConfig, policy_loss
from mars2.training.strategy import clip_grad_norm


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
        # Called as on_policy_updated(policy_id, module) after each optimiser step of that policy, so a rollout
        # engine that does not share these modules (vLLM) gets the new weights (method.md §5).
        self.on_policy_updated: Callable[[str, nn.Module], None] | None = None

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
        t0 = time.perf_counter()
        loss, stats = policy_loss(model, ref, batch, self.loss_cfg)
        opt.zero_grad(set_to_none=True)
        # Data-parallel runs train each rank on a slice of the minibatch and average gradients over ranks;
        # `loss_scale` (set by the data stream) = world · (slice share of the minibatch's normaliser), so the
        # average equals the gradient of the full minibatch's loss even when slices differ in size.
        scale = float(batch.get("loss_scale", 1.0))
        self.manual_backward(loss * scale if scale != 1.0 else loss)
        clip = float(self.optim_cfg.get("grad_clip", 0.0) or 0.0)
        if clip > 0:
            stats["grad_norm"] = clip_grad_norm(model, clip, sharded=self._sharded())
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)  # stale grads of this policy must not enter another policy's clip/FSDP step
        stats["train_s"] = time.perf_counter() - t0
        stats["train_tokens"] = float(batch["attention_mask"].sum())
        self.policy_steps[pid] += 1
        if self.on_policy_updated is not None:
            self.on_policy_updated(pid, model)
        stats["lr"] = float(sched.get_last_lr()[0])
        stats["step"] = float(self.policy_steps[pid])
        self.round_stats[pid].append(stats)
        return loss.detach()

    def _sharded(self) -> bool:
        """True when parameters (and their grads) are sharded over ranks (FSDP), so norms need an all-reduce."""
        trainer = self._trainer
        return trainer is not None and type(trainer.strategy).__name__ == "FSDPStrategy"

    def drain_round_stats(self) -> dict[str, list[dict[str, float]]]:
        out = dict(self.round_stats)
        self.round_stats = defaultdict(list)
        return out

    # -- checkpoint extras ------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["mars2_policy_steps"] = dict(self.policy_steps)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.policy_steps.update(checkpoint.get("mars2_policy_steps", {}))
