"""The training data stream: minibatches drawn from the per-policy buffers (method.md §5).

The stream drives the round: when Lightning starts iterating an epoch it first calls `before_round` (the
rollout callback's `run_round`, which grows the trees and fills the buffers), then yields the ready minibatches. Old log-probs of every minibatch a policy
takes in a round are recomputed with that policy *before* its first update of the round.

Data parallel (DDP / FSDP): every rank holds the same buffers (rank 0's rollout is broadcast), so every rank
takes the same minibatches; rank r trains on rows r, r+W, r+2W, … of each (W = world size) and the batch
carries ``loss_scale`` so that averaging the ranks' gradients gives the gradient of the whole minibatch's loss
(GSPO: mean over sequences → share of sequences; GRPO: token mean → share of response tokens)."""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, ContextManager, Iterator, Mapping

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from mars2.rl.buffers import PolicyBuffers
from mars2.rl.collate import collate
from mars2.rl.objective import compute_old_logprobs
from mars2.training.strategy import dist_info


class BufferStream(IterableDataset):
    def __init__(
        self,
        buffers: PolicyBuffers,
        policies: Callable[[], Mapping[str, torch.nn.Module]],
        pad_ids: Mapping[str, int],
        epochs_per_batch: int = 1,
        before_round: Callable[[], None] | None = None,
        temperature: float = 1.0,
        loss: str = "gspo",
        full_params: Callable[[], ContextManager[Any]] | None = None,
    ) -> None:
        super().__init__()
        self.buffers = buffers
        self.policies = policies
        self.pad_ids = dict(pad_ids)
        self.epochs_per_batch = epochs_per_batch
        self.taken: dict[str, int] = {}
        self.before_round = before_round
        self.temperature = temperature
        self.loss = loss
        # FSDP: scoring old log-probs calls the policies outside the wrapped forward, so every rank gathers the
        # full weights around it (a collective: all ranks score the same number of minibatches)
        self.full_params = full_params or contextlib.nullcontext
        self.score_s: dict[str, float] = {}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.taken = {}
        self.score_s = {}
        if self.before_round is not None:
            self.before_round()
        rank, world = dist_info()
        yielded = False
        for pid in list(self.buffers.ready_policies()):
            minibatches = self.buffers[pid].take()
            if not minibatches:
                continue
            if world > 1 and min(len(mb) for mb in minibatches) < world:
                raise ValueError(f"train_batch_size {len(minibatches[0])} < world size {world}: every rank needs at "
                                 f"least one sample of each minibatch")
            model = self.policies()[pid]
            shards = [shard(mb, rank, world) for mb in minibatches]
            t0 = time.perf_counter()
            with self.full_params():
                for sh in shards:
                    compute_old_logprobs(model, sh, self.pad_ids[pid], temperature=self.temperature)
            self.score_s[pid] = time.perf_counter() - t0
            self.taken[pid] = sum(len(mb) for mb in minibatches)
            for _ in range(self.epochs_per_batch):
                for mb, sh in zip(minibatches, shards):
                    batch = collate(sh, self.pad_ids[pid])
                    batch["policy_id"] = pid
                    if world > 1:
                        batch["loss_scale"] = loss_scale(sh, mb, world, self.loss)
                    yielded = True
                    yield batch
        if not yielded:
            # No policy is ready this round: one no-op batch keeps the epoch (= round) non-empty, because
            # Lightning ends `fit` early on an epoch whose iterator is exhausted at once.
            yield {"policy_id": None}


def shard(minibatch: list[Any], rank: int, world: int) -> list[Any]:
    """Rank ``rank``'s rows of a minibatch: rows rank, rank+W, … (strided, so slices differ by at most one)."""
    return minibatch if world <= 1 else minibatch[rank::world]


def loss_scale(part: list[Any], whole: list[Any], world: int, loss: str) -> float:
    """world · share of the loss normaliser held by ``part``: sequences for GSPO (mean over sequences), response
    tokens for GRPO (token mean). DDP averages gradients over ranks, so Σ_r scale_r·∇L_r / W = ∇L_whole."""
    if loss == "grpo":
        num = sum(len(s.response_ids) for s in part)
        den = sum(len(s.response_ids) for s in whole)
    else:
        num, den = len(part), len(whole)
    return world * num / max(den, 1)


class BufferDataModule(pl.LightningDataModule):
    def __init__(self, stream: BufferStream) -> None:
        super().__init__()
        self.stream = stream

    def train_dataloader(self) -> DataLoader:
        # batch_size=None: the stream yields ready-made minibatches; num_workers=0: it must see the buffers
        # the rollout callback fills in this process.
        return DataLoader(self.stream, batch_size=None, num_workers=0)
