"""The training data stream: minibatches drawn from the per-policy buffers (method.md §5).

The stream drives the round: when Lightning starts iterating an epoch it first calls `before_round` (the
rollout callback's `run_round`, which grows the trees and fills the buffers), then yields the ready minibatches. Old log-probs of every minibatch a policy
takes in a round are recomputed with that policy *before* its first update of the round."""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, IterableDataset

from mars2.rl.buffers import PolicyBuffers
from mars2.rl.collate import collate
from mars2.rl.objective import compute_old_logprobs


class BufferStream(IterableDataset):
    def __init__(
        self,
        buffers: PolicyBuffers,
        policies: Callable[[], Mapping[str, torch.nn.Module]],
        pad_ids: Mapping[str, int],
        epochs_per_batch: int = 1,
        before_round: Callable[[], None] | None = None,
        temperature: float = 1.0,
    ) -> None:
        super().__init__()
        self.buffers = buffers
        self.policies = policies
        self.pad_ids = dict(pad_ids)
        self.epochs_per_batch = epochs_per_batch
        self.taken: dict[str, int] = {}
        self.before_round = before_round
        self.temperature = temperature

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.taken = {}
        if self.before_round is not None:
            self.before_round()
        yielded = False
        for pid in list(self.buffers.ready_policies()):
            minibatches = self.buffers[pid].take()
            if not minibatches:
                continue
            model = self.policies()[pid]
            for mb in minibatches:
                compute_old_logprobs(model, mb, self.pad_ids[pid], temperature=self.temperature)
            self.taken[pid] = sum(len(mb) for mb in minibatches)
            for _ in range(self.epochs_per_batch):
                for mb in minibatches:
                    batch = collate(mb, self.pad_ids[pid])
                    batch["policy_id"] = pid
                    yielded = True
                    yield batch
        if not yielded:
            # No policy is ready this round: one no-op batch keeps the epoch (= round) non-empty, because
            # Lightning ends `fit` early on an epoch whose iterator is exhausted at once.
            yield {"policy_id": None}


class BufferDataModule(pl.LightningDataModule):
    def __init__(self, stream: BufferStream) -> None:
        super().__init__()
        self.stream = stream

    def train_dataloader(self) -> DataLoader:
        # batch_size=None: the stream yields ready-made minibatches; num_workers=0: it must see the buffers
        # the rollout callback fills in this process.
        return DataLoader(self.stream, batch_size=None, num_workers=0)
