"""Per-policy asynchronous sample buffers (method.md §5).

Samples go to the buffer of the policy that wrote them. A policy trains in a round only when its buffer
holds at least ``train_batch_size`` samples; it then takes floor(|B| / bs) minibatches of ``bs`` samples,
oldest first, and (MARTI) drops the remainder — or keeps it for the next round with ``keep_remainder``.
A policy that is not ready keeps everything and skips the round."""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Iterator, Mapping, Sequence

from mars2.rl.samples import Sample

__all__ = ["PolicyBuffer", "PolicyBuffers"]


class PolicyBuffer:
    """FIFO buffer of one policy's samples."""

    def __init__(self, train_batch_size: int, keep_remainder: bool = False) -> None:
        if int(train_batch_size) < 1:
            raise ValueError(f"train_batch_size must be ≥ 1, got {train_batch_size}")
        self.train_batch_size = int(train_batch_size)
        self.keep_remainder = bool(keep_remainder)
        self._samples: list[Sample] = []
        self.dropped_total = 0  # samples discarded as remainders, for logging
        self.last_dropped = 0

    def add(self, samples: Iterable[Sample]) -> None:
        self._samples.extend(samples)

    def __len__(self) -> int:
        return len(self._samples)

    def ready(self) -> bool:
        return len(self._samples) >= self.train_batch_size

    def take(self) -> list[list[Sample]]:
        """floor(|B| / bs) minibatches of bs samples, oldest first; the rest is dropped (or kept with
        ``keep_remainder``). Not ready → [] and the buffer is left untouched."""
        bs = self.train_batch_size
        n = len(self._samples) // bs
        self.last_dropped = 0
        if n == 0:
            return []
        batches = [self._samples[i * bs:(i + 1) * bs] for i in range(n)]
        rest = self._samples[n * bs:]
        if self.keep_remainder:
            self._samples = rest
        else:
            self._samples = []
            self.last_dropped = len(rest)
            self.dropped_total += len(rest)
        return batches

    def state_dict(self) -> dict[str, Any]:
        return {
            "train_batch_size": self.train_batch_size,
            "keep_remainder": self.keep_remainder,
            "dropped_total": self.dropped_total,
            "samples": [dataclasses.asdict(s) for s in self._samples],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.train_batch_size = int(state["train_batch_size"])
        self.keep_remainder = bool(state["keep_remainder"])
        self.dropped_total = int(state.get("dropped_total", 0))
        self.last_dropped = 0
        self._samples = [Sample(**s) for s in state["samples"]]


class PolicyBuffers(Mapping[str, PolicyBuffer]):
    """One `PolicyBuffer` per policy id (iteration in the given policy order). ``train_batch_size`` may be one
    number for all policies or a mapping policy id → size (heterogeneous teams)."""

    def __init__(
        self,
        policy_ids: Sequence[str],
        train_batch_size: int | Mapping[str, int],
        keep_remainder: bool = False,
    ) -> None:
        self._buffers: dict[str, PolicyBuffer] = {}
        for pid in policy_ids:
            bs = train_batch_size[pid] if isinstance(train_batch_size, Mapping) else train_batch_size
            self._buffers[pid] = PolicyBuffer(bs, keep_remainder)

    def __getitem__(self, pid: str) -> PolicyBuffer:
        return self._buffers[pid]

    def __iter__(self) -> Iterator[str]:
        return iter(self._buffers)

    def __len__(self) -> int:
        return len(self._buffers)

    def route(self, samples: Iterable[Sample]) -> None:
        """Append each sample, in order, to the buffer of ``sample.policy_id``."""
        for s in samples:
            if s.policy_id not in self._buffers:
                raise KeyError(f"sample of unknown policy {s.policy_id!r} (buffers: {list(self._buffers)})")
            self._buffers[s.policy_id].add([s])

    def ready_policies(self) -> list[str]:
        return [pid for pid, buf in self._buffers.items() if buf.ready()]

    def state_dict(self) -> dict[str, Any]:
        return {pid: buf.state_dict() for pid, buf in self._buffers.items()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for pid, s in state.items():
            if pid not in self._buffers:
                raise KeyError(f"checkpoint has a buffer for unknown policy {pid!r}")
            self._buffers[pid].load_state_dict(s)
