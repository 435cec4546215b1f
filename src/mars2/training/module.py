"""The LightningModule of a MARS2 team: one policy per policy id, manual optimisation (method.md §5).

Each policy has its own optimiser, LR schedule, step counter and frozen reference model. A training batch
names the policy it belongs to, so one `training_step` updates exactly one policy. Checkpoints hold the
policies, the references, every optimiser / scheduler (Lightning) and the step counters (`on_save_checkpoint`);
the rest of a run's state is the rollout callback's (mars2.training.checkpointing).

Precision (issue 14): real checkpoints train in bf16 (``precision: bf16-true``), but an AdamW step at lr 1e-6 is
far below half a bf16 ulp of most weights, so AdamW run directly on bf16 parameters rounds nearly every update
away. Low-precision parameters therefore get `MasterWeightAdamW`: fp32 master weights and fp32 moments in the
optimiser state, bf16 compute (forward, backward, generation) on the module, the module's weights rewritten
from the masters after each step. fp32 policies (the miniature) keep plain `torch.optim.AdamW`.

Weight sync under FSDP (issue 14): a rollout engine with its own weights (vLLM) must get the *full* weights,
which under FSDP only a collective all ranks enter can produce, while only rank 0 generates. So a sharded
module never hands its FSDP modules to ``on_policy_updated``: every rank calls `sync_policies` at the start of
each rollout / evaluation (`TreeSearchRollout`), which gathers each updated policy collectively and gives
rank 0's hook an unsharded stand-in (`mars2.training.strategy.FullWeights`). Unsharded runs call the hook
right after each step, as before."""
from __future__ import annotations

import copy
import math
import time
from collections import defaultdict
from typing import Any, Callable, Mapping

import lightning.pytorch as pl
import torch
from torch import nn

from mars2.rl.objective import LossConfig, policy_loss
from mars2.training.strategy import FullWeights, clip_grad_norm, gather_full_state_dict, is_sharded

LOW_PRECISION = (torch.bfloat16, torch.float16)


class MasterWeightAdamW(torch.optim.Optimizer):
    """AdamW (decoupled weight decay, torch's update rule) on fp32 master copies of low-precision parameters.

    The state of each parameter holds ``master`` (fp32 copy of the weights, created from the parameter at its
    first step), ``exp_avg`` / ``exp_avg_sq`` (fp32) and ``step``; after each update the parameter is
    overwritten with the master rounded to its own dtype. Gradients are read in fp32. The masters are part of
    ``state_dict()`` (so exact resume keeps them) and `load_state_dict` restores them in fp32 — the base class
    would cast every floating state tensor to the parameter's dtype."""

    FP32_STATE = ("master", "exp_avg", "exp_avg_sq")

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = torch.tensor(0.0)
                    st["master"] = p.detach().to(torch.float32, copy=True)
                    st["exp_avg"] = torch.zeros_like(st["master"])
                    st["exp_avg_sq"] = torch.zeros_like(st["master"])
                if st["step"].device.type != "cpu":  # moved with the state (Lightning, resume): keep it a
                    st["step"] = st["step"].cpu()     # CPU scalar, so reading it never syncs the device
                st["step"] += 1
                t = float(st["step"])
                g = p.grad.to(torch.float32)
                master, m, v = st["master"], st["exp_avg"], st["exp_avg_sq"]
                if wd:
                    master.mul_(1.0 - lr * wd)
                m.lerp_(g, 1.0 - b1)
                v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
                denom = (v.sqrt() / math.sqrt(1.0 - b2**t)).add_(eps)
                master.addcdiv_(m, denom, value=-lr / (1.0 - b1**t))
                p.copy_(master)
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved = state_dict["state"]
        super().load_state_dict(state_dict)
        ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(ids, params):
            for key in self.FP32_STATE:
                if i in saved and key in saved[i]:
                    self.state[p][key] = saved[i][key].to(device=p.device, dtype=torch.float32)


def make_adamw(params, lr: float, betas=(0.9, 0.999), weight_decay: float = 0.0,
               master_weights: bool = True) -> torch.optim.Optimizer:
    """`MasterWeightAdamW` when any parameter is bf16 / fp16 (and ``master_weights``), else torch's AdamW."""
    params = list(params)
    if master_weights and any(p.dtype in LOW_PRECISION for p in params):
        return MasterWeightAdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), weight_decay=weight_decay)


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
        # Whether weights are published to a rollout engine; must be the same on every rank (it decides whether
        # `sync_policies` runs a collective). None: whether this rank has an `on_policy_updated` hook.
        self.publish_weights: bool | None = None
        self._published: dict[str, int] = {}  # policy step at the last sharded publish

    # -- optimisers -------------------------------------------------------------------------------------------
    def configure_optimizers(self):
        opts, scheds = [], []
        warmup = int(self.optim_cfg.get("warmup_steps", 0) or 0)
        for pid in self.policy_ids:
            opt = make_adamw(
                self.policies[pid].parameters(),
                lr=float(self.optim_cfg["lr"]),
                betas=tuple(self.optim_cfg.get("betas", (0.9, 0.999))),
                weight_decay=float(self.optim_cfg.get("weight_decay", 0.0)),
                master_weights=bool(self.optim_cfg.get("master_weights", True)),
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
        # Sharded: the engine gets the weights at the next `sync_policies`, which every rank enters.
        if self.on_policy_updated is not None and not self._sharded():
            self.on_policy_updated(pid, model)
        stats["lr"] = float(sched.get_last_lr()[0])
        stats["step"] = float(self.policy_steps[pid])
        self.round_stats[pid].append(stats)
        return loss.detach()

    def _sharded(self) -> bool:
        """True when parameters (and their grads) are sharded over ranks (FSDP), so norms need an all-reduce
        and full weights a collective. Lightning's FSDPStrategy, or FSDP units inside the module (raw FSDP)."""
        trainer = self._trainer
        if trainer is not None and type(trainer.strategy).__name__ == "FSDPStrategy":
            return True
        return is_sharded(self)

    def wrapped_root(self) -> nn.Module:
        """The outermost module of the run: Lightning's FSDP wrapper of this module, else one set with
        `set_wrapped_root` (raw torch FSDP), else this module."""
        root = self.__dict__.get("_wrapped_root")
        if root is not None:
            return root
        trainer = self._trainer
        model = getattr(getattr(trainer, "strategy", None), "model", None) if trainer is not None else None
        return model if model is not None else self

    def set_wrapped_root(self, root: nn.Module) -> None:
        self.__dict__["_wrapped_root"] = root  # not a submodule (it contains this module)

    def sync_policies(self) -> list[str]:
        """Publish every policy updated since its last publish to the rollout engine (``on_policy_updated``).
        Every rank must call it at the same point (before rank 0 generates): under FSDP each updated policy's
        full weights are gathered collectively and rank 0's hook receives an unsharded `FullWeights` stand-in,
        so the engine never runs a collective of its own (no deadlock, no shards). The first call publishes
        every policy. Unsharded runs publish from `training_step`; this is then a no-op. Returns the ids
        published."""
        wants = self.on_policy_updated is not None if self.publish_weights is None else bool(self.publish_weights)
        if not wants or not self._sharded():
            return []
        import torch.distributed as dist

        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        done = []
        for pid in self.policy_ids:
            if self._published.get(pid) == self.policy_steps[pid]:
                continue
            state = gather_full_state_dict(self.wrapped_root(), self.policies[pid])  # collective
            if rank == 0 and self.on_policy_updated is not None:
                self.on_policy_updated(pid, FullWeights(state, config=getattr(self.policies[pid], "config", None)))
            self._published[pid] = self.policy_steps[pid]
            done.append(pid)
        return done

    def drain_round_stats(self) -> dict[str, list[dict[str, float]]]:
        out = dict(self.round_stats)
        self.round_stats = defaultdict(list)
        return out

    # -- checkpoint extras ------------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["mars2_policy_steps"] = dict(self.policy_steps)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.policy_steps.update(checkpoint.get("mars2_policy_steps", {}))
