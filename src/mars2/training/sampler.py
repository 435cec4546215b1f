"""Which training problems each round's trees are grown on (design.md "Data flow": the rollout batch).

`ProblemSampler` walks a seeded permutation of the train split, one permutation per *data epoch* (a pass over
the split), ``batch_size`` problems per round; a batch that crosses the end of a pass continues in the next
pass's permutation. The position (data epoch, cursor) is the whole state, so a checkpoint resumes the exact
sequence of batches. Every rank draws the same batches (the position stays identical everywhere)."""
from __future__ import annotations

import random
from typing import Any, Sequence

from mars2.tasks.problem import Problem


class ProblemSampler:
    def __init__(self, problems: Sequence[Problem], batch_size: int, seed: int, split: str = "train") -> None:
        self.problems = list(problems)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.split = split
        self.epoch = 0  # passes over the split completed
        self.pos = 0  # cursor inside the current pass's permutation

    def order(self, epoch: int) -> list[int]:
        """The permutation of problem indices of data epoch ``epoch`` (a function of (seed, epoch) only)."""
        idx = list(range(len(self.problems)))
        random.Random(self.seed * 100003 + epoch).shuffle(idx)
        return idx

    def next_batch(self) -> list[Problem]:
        """The next ``batch_size`` problems; advances the position."""
        if not self.problems:  # the loop below would never fill a batch
            from mars2.resources import SetupError

            raise SetupError(f"the training split {self.split!r} has no problems: pick another "
                             f"train_split or a task whose {self.split!r} split is not empty")
        batch = []
        while len(batch) < self.batch_size:
            order = self.order(self.epoch)
            if self.pos >= len(order):
                self.epoch += 1
                self.pos = 0
                continue
            batch.append(self.problems[order[self.pos]])
            self.pos += 1
        return batch

    # the callback's checkpoint keys (``data_epoch``, ``data_pos``) predate this class: keep them
    def state_dict(self) -> dict[str, Any]:
        return {"data_epoch": self.epoch, "data_pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["data_epoch"])
        self.pos = int(state["data_pos"])
