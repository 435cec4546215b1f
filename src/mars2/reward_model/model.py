"""Reward models R_θ(problem, program) → [0, 1] for T+ answer selection (method.md §6.3).

Two models behind one interface (`encode` → tensors, `forward` → logits, `score` → probabilities):

* `HashedNgramRM` — the miniature's tiny classifier (our choice): hashed bag of code-token uni/bi-grams of
  the program and unigrams of the problem statement (separate hash spaces), summed through an
  ``EmbeddingBag`` into a hidden layer, ReLU, one logit. The hidden layer lets statement and program
  features interact; no tokenizer or pretrained weights needed, trains in seconds on CPU.
* `ValueHeadRM` — the real-scale variant: a causal-LM backbone (e.g. a policy checkpoint) with a linear
  value head on the last real token's final hidden state, fine-tuned end to end (or head-only with
  ``freeze_backbone``).
"""
from __future__ import annotations

import math
import re
import zlib
from typing import Any, Protocol, Sequence

import torch
from torch import nn

__all__ = ["RewardModel", "HashedNgramRM", "ValueHeadRM", "code_tokens", "rm_text"]

_TOKEN_RE = re.compile(r"[A-Za-z_]\w*|\d+|[^\w\s]")


def code_tokens(text: str) -> list[str]:
    """Identifiers, numbers and single punctuation marks (enough to see `range(len(xs) - 1)` patterns)."""
    return _TOKEN_RE.findall(text)


def rm_text(problem_text: str, program: str) -> str:
    """The text a language-model reward model reads: statement, then the program in a fence."""
    return f"{problem_text}\n\n```python\n{program}\n```"


class RewardModel(Protocol):
    """What T+ selection needs: probabilities that each program solves its problem."""

    def score(self, problem_texts: Sequence[str], programs: Sequence[str]) -> list[float]: ...


class _Scoring(nn.Module):
    def encode(self, problem_texts: Sequence[str], programs: Sequence[str]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    @torch.no_grad()
    def score(self, problem_texts: Sequence[str], programs: Sequence[str], batch_size: int = 64) -> list[float]:
        """sigmoid(logit) per pair, in eval mode (mode restored)."""
        if len(problem_texts) != len(programs):
            raise ValueError("score: one problem text per program")
        was = self.training
        self.eval()
        try:
            out: list[float] = []
            for i in range(0, len(programs), batch_size):
                batch = self.encode(problem_texts[i:i + batch_size], programs[i:i + batch_size])
                out.extend(torch.sigmoid(self(**batch)).float().cpu().tolist())
            return out
        finally:
            self.train(was)


class HashedNgramRM(_Scoring):
    def __init__(self, n_buckets: int = 4096, hidden: int = 64, seed: int = 0) -> None:
        super().__init__()
        self.config = {"n_buckets": int(n_buckets), "hidden": int(hidden), "seed": int(seed)}
        self.n_buckets = int(n_buckets)
        # (statement, program) → features; features depend on n_buckets only, so one cache may be shared by
        # the models of a run (mars2.reward_model.online) and is never saved
        self.feature_cache: dict[tuple[str, str], tuple[dict[int, float], list[float]]] | None = None
        g = torch.Generator().manual_seed(int(seed))
        self.bag = nn.EmbeddingBag(2 * self.n_buckets, hidden, mode="sum")
        self.extra = nn.Linear(3, hidden)
        self.out = nn.Linear(hidden, 1)
        with torch.no_grad():  # seeded init independent of the global RNG
            self.bag.weight.normal_(0.0, 0.1, generator=g)
            for lin in (self.extra, self.out):
                bound = 1.0 / math.sqrt(lin.in_features)
                lin.weight.uniform_(-bound, bound, generator=g)
                lin.bias.zero_()

    def _bucket(self, key: str, space: int) -> int:
        return space * self.n_buckets + zlib.crc32(key.encode()) % self.n_buckets

    def _features(self, problem_text: str, program: str) -> tuple[dict[int, float], list[float]]:
        if self.feature_cache is not None:
            key = (problem_text, program)
            if key not in self.feature_cache:
                self.feature_cache[key] = self._compute_features(problem_text, program)
            return self.feature_cache[key]
        return self._compute_features(problem_text, program)

    def _compute_features(self, problem_text: str, program: str) -> tuple[dict[int, float], list[float]]:
        feats: dict[int, float] = {}
        prog = code_tokens(program)
        grams = prog + [a + " " + b for a, b in zip(prog, prog[1:])]
        for part, space in ((grams, 0), (code_tokens(problem_text.lower()), 1)):
            counts: dict[int, float] = {}
            for tok in part:
                k = self._bucket(tok, space)
                counts[k] = counts.get(k, 0.0) + 1.0
            # log counts, L2-normalised per part: long programs do not dominate by sheer size
            vals = {k: math.log1p(c) for k, c in counts.items()}
            norm = math.sqrt(sum(v * v for v in vals.values())) or 1.0
            feats.update({k: v / norm for k, v in vals.items()})
        extras = [math.log1p(len(program)) / 8.0, math.log1p(program.count("\n") + 1) / 4.0, float(not program)]
        return feats, extras

    def encode(self, problem_texts: Sequence[str], programs: Sequence[str]) -> dict[str, torch.Tensor]:
        idx: list[int] = []
        wts: list[float] = []
        offsets: list[int] = []
        extras: list[list[float]] = []
        for text, prog in zip(problem_texts, programs):
            feats, ex = self._features(text, prog)
            offsets.append(len(idx))
            idx.extend(feats)
            wts.extend(feats.values())
            extras.append(ex)
        dev = self.out.weight.device
        return {
            "indices": torch.tensor(idx, dtype=torch.long, device=dev),
            "offsets": torch.tensor(offsets, dtype=torch.long, device=dev),
            "weights": torch.tensor(wts, dtype=torch.float32, device=dev),
            "extras": torch.tensor(extras, dtype=torch.float32, device=dev),
        }

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor,
                extras: torch.Tensor) -> torch.Tensor:
        h = self.bag(indices, offsets, per_sample_weights=weights) + self.extra(extras)
        return self.out(torch.relu(h)).squeeze(-1)


class ValueHeadRM(_Scoring):
    """Causal-LM backbone + linear value head on the final hidden state of the last real token."""

    def __init__(self, backbone: nn.Module, tokenizer: Any, max_length: int = 1024,
                 freeze_backbone: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.tokenizer = tokenizer
        self.max_length = int(max_length)
        hidden = int(backbone.config.hidden_size)
        self.head = nn.Linear(hidden, 1)
        with torch.no_grad():
            self.head.weight.normal_(0.0, 1.0 / math.sqrt(hidden))
            self.head.bias.zero_()
        self.config = {"max_length": self.max_length, "freeze_backbone": bool(freeze_backbone)}
        if freeze_backbone:
            self.backbone.requires_grad_(False)

    def encode(self, problem_texts: Sequence[str], programs: Sequence[str]) -> dict[str, torch.Tensor]:
        rows = []
        for text, prog in zip(problem_texts, programs):
            ids = list(self.tokenizer(rm_text(text, prog), add_special_tokens=False)["input_ids"])
            rows.append(ids[-self.max_length:] or [0])  # keep the end: the program is what is judged
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        width = max(len(r) for r in rows)
        dev = self.head.weight.device
        input_ids = torch.full((len(rows), width), int(pad), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):  # right padding: the last real token is at len − 1
            input_ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
            mask[i, :len(r)] = 1
        return {"input_ids": input_ids.to(dev), "attention_mask": mask.to(dev)}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True,
                            use_cache=False)
        h = out.hidden_states[-1]
        last = attention_mask.sum(-1) - 1
        pooled = h[torch.arange(h.shape[0], device=h.device), last]
        return self.head(pooled.to(self.head.weight.dtype)).squeeze(-1)
