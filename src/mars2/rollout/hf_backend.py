"""HF generation backend: batched sampling on the trainer's own modules (method.md §3 "Budgets", §5).

Requests from many trees (and several policies) arrive in one call; they are grouped by policy, sorted by
prompt length (less padding), chunked into batches of at most ``max_batch_size``, left-padded and decoded
with a KV cache. The loop is our own rather than ``model.generate`` because we need, per response token,
the log-prob under the *sampling* distribution (temperature-scaled, top-p renormalised) — that is what
makes the RL importance ratio exact (method.md §5 "Old log-probs") — and a seeded ``torch.Generator`` per
call so rollouts are reproducible (design.md principle 4). Rows that emit eos are dropped from the batch
(and from the KV cache) as they finish, since responses vary a lot in length.

The models are the *same module objects* the trainer updates, so no weight sync is needed; they are put in
eval mode for generation and restored to their previous mode afterwards.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import torch

from mars2.rollout.backend import BackendBase, BackendCapabilities, Generation, GenerationRequest, group_by_policy


def sampling_logprobs(logits: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0) -> torch.Tensor:
    """Log-probs of the distribution actually sampled from: log-softmax of ``logits / temperature``; with
    ``top_p < 1`` the nucleus (smallest set of most likely tokens with mass ≥ top_p) renormalised, others
    ``-inf``. ``temperature <= 0`` is treated as 1 (greedy decoding reports the T=1 log-probs)."""
    t = temperature if temperature > 0 else 1.0
    logp = torch.log_softmax(logits.float() / t, dim=-1)
    if top_p < 1.0:
        sorted_lp, idx = logp.sort(dim=-1, descending=True)
        probs = sorted_lp.exp()
        # Mass strictly before each token; the first token is always kept.
        before = probs.cumsum(-1) - probs
        sorted_lp = sorted_lp.masked_fill(before >= top_p, float("-inf"))
        logp = torch.full_like(logp, float("-inf")).scatter(-1, idx, sorted_lp)
        logp = logp - torch.logsumexp(logp, dim=-1, keepdim=True)
    return logp


def chat_prompt_ids(tokenizer, messages: list[dict[str, str]], enable_thinking: bool = False) -> list[int]:
    """Token ids of ``messages`` rendered with the tokenizer's chat template, ending with the assistant
    generation prompt (method.md §1 "Prompts"). Every backend that tokenizes locally (hf, vllm) builds its
    prompts here, so the token ids the trainer sees are the same whichever engine sampled the response.
    MARTI disables Qwen3's thinking block (``enable_thinking=False``); templates without that switch ignore
    the keyword."""
    text = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False, enable_thinking=enable_thinking
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


class HFBackend(BackendBase):
    """`GenerationBackend` over transformers causal LMs (tiny or real), one per policy id.

    ``generate`` returns, per request and in request order, the decoded response (special tokens removed),
    the prompt ids, the response ids (including the eos token when produced), the sampling log-prob of each
    response token and ``truncated=True`` when ``max_new_tokens`` was reached without eos."""

    capabilities = BackendCapabilities(shares_trainer_modules=True)

    def __init__(
        self,
        models: Mapping[str, torch.nn.Module],
        tokenizers: Mapping[str, object],
        max_new_tokens: int = 128,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_batch_size: int = 64,
        seed: int = 0,
        greedy: bool = False,
        enable_thinking: bool = False,
        split_cost_tokens: int = 512,
    ) -> None:
        missing = set(models) ^ set(tokenizers)
        if missing:
            raise ValueError(f"HFBackend: models and tokenizers must have the same policy ids; mismatch: {sorted(missing)}")
        if max_batch_size < 1 or max_new_tokens < 1:
            raise ValueError("HFBackend: max_batch_size and max_new_tokens must be >= 1")
        self.models = dict(models)
        self.tokenizers = dict(tokenizers)
        self.max_new_tokens = int(max_new_tokens)
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.max_batch_size = int(max_batch_size)
        self.seed = int(seed)
        self.greedy = bool(greedy)
        # MARTI disables Qwen3's thinking block; templates without that switch ignore the keyword.
        self.enable_thinking = bool(enable_thinking)
        # A batch's fixed cost in padded prompt tokens (measured on CPU: time ~ a + b * rows * width, a/b ~ 500):
        # a length-sorted batch is split where the padding saved is worth more than one more batch.
        # <= 0: never split (batches of max_batch_size only).
        self.split_cost_tokens = int(split_cost_tokens)
        super().__init__()  # calls (part of each call's RNG seed), tokens_generated

    def close(self) -> None:
        """Nothing to release: the modules belong to the trainer (same interface as `VLLMBackend.close`)."""

    # ------------------------------------------------------------------------------------------------
    def prompt_ids(self, policy_id: str, messages: list[dict[str, str]]) -> list[int]:
        """Token ids of the chat-templated prompt, ending with the assistant generation prompt."""
        return chat_prompt_ids(self.tokenizers[policy_id], messages, self.enable_thinking)

    def generate(self, requests: Sequence[GenerationRequest], greedy: bool | None = None,
                 max_new_tokens: int | None = None) -> list[Generation]:
        greedy = self.greedy if greedy is None else greedy
        max_new = self.max_new_tokens if max_new_tokens is None else int(max_new_tokens)
        self.calls += 1
        out: list[Generation | None] = [None] * len(requests)
        by_policy = group_by_policy(requests, self.models, "HFBackend")
        for pid, idxs in by_policy.items():  # dict order = first appearance: deterministic
            model, tok = self.models[pid], self.tokenizers[pid]
            device = next(model.parameters()).device
            gen = torch.Generator(device=device)
            # One stream per (backend seed, call, policy): reproducible, independent of other policies.
            gen.manual_seed((self.seed * 1_000_003 + self.calls * 7_919 + _stable_id(pid)) % (2**63))
            prompts = {i: self.prompt_ids(pid, requests[i].messages) for i in idxs}
            order = sorted(idxs, key=lambda i: len(prompts[i]))  # similar lengths share a batch
            was_training = model.training
            model.eval()
            try:
                for a, b in padding_batches([len(prompts[i]) for i in order], self.max_batch_size,
                                            self.split_cost_tokens):
                    chunk = order[a:b]
                    results = self._generate_batch(model, tok, [prompts[i] for i in chunk], gen, greedy, max_new, device)
                    for i, (resp, lps, truncated) in zip(chunk, results):
                        out[i] = Generation(
                            text=tok.decode(resp, skip_special_tokens=True),
                            prompt_ids=prompts[i],
                            response_ids=resp,
                            logprobs=lps,
                            truncated=truncated,
                            meta={"policy_id": pid},
                        )
                        self.tokens_generated += len(resp)
            finally:
                model.train(was_training)
        return out  # type: ignore[return-value]

    # ------------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def _generate_batch(self, model, tok, prompts: list[list[int]], gen: torch.Generator, greedy: bool,
                        max_new: int, device) -> list[tuple[list[int], list[float], bool]]:
        eos = eos_ids(model, tok)
        pad = tok.pad_token_id if tok.pad_token_id is not None else next(iter(eos))
        b = len(prompts)
        width = max(len(p) for p in prompts)
        ids = torch.full((b, width), pad, dtype=torch.long)
        mask = torch.zeros((b, width), dtype=torch.long)
        for r, p in enumerate(prompts):  # left padding: the last prompt token of every row is at -1
            ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
            mask[r, width - len(p):] = 1
        ids, mask = ids.to(device), mask.to(device)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        eos_t = torch.tensor(sorted(eos), device=device)

        responses: list[list[int]] = [[] for _ in range(b)]
        logps: list[list[float]] = [[] for _ in range(b)]
        done = [False] * b
        active = torch.arange(b, device=device)  # original row of each live batch row
        ckw = _cache_kwarg(model)
        out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
        cache = _out_cache(out)
        logits = out.logits[:, -1, :]
        next_pos = pos[:, -1:] + 1
        for step in range(max_new):
            logp = sampling_logprobs(logits, self.temperature, self.top_p)
            if greedy:
                nxt = logits.argmax(-1)
            else:
                nxt = torch.multinomial(logp.exp(), 1, generator=gen).squeeze(-1)
            lp = logp.gather(-1, nxt[:, None]).squeeze(-1)
            finished = torch.isin(nxt, eos_t)
            nxt_l, lp_l, fin_l, rows = nxt.tolist(), lp.tolist(), finished.tolist(), active.tolist()
            for j, row in enumerate(rows):
                responses[row].append(nxt_l[j])
                logps[row].append(lp_l[j])
                if fin_l[j]:
                    done[row] = True
            if step == max_new - 1 or all(done):
                break
            keep = ~finished
            if not bool(keep.all()):  # drop finished rows from the batch and the KV cache
                sel = keep.nonzero().squeeze(-1)
                cache.batch_select_indices(sel)
                active, nxt, mask, next_pos = active[sel], nxt[sel], mask[sel], next_pos[sel]
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
            out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=next_pos,
                        use_cache=True, **{ckw: cache})
            cache = _out_cache(out)
            logits = out.logits[:, -1, :]
            next_pos = next_pos + 1
        return [(responses[r], logps[r], not done[r]) for r in range(b)]


def padding_batches(lengths: Sequence[int], max_batch: int, split_cost: int) -> list[tuple[int, int]]:
    """Split ascending prompt ``lengths`` into consecutive batches ``[a, b)`` of at most ``max_batch`` rows
    minimising ``sum(split_cost + rows * longest)``: with left padding every row of a batch costs the longest
    prompt, so a few long refinement prompts should not drag many short fresh ones along. Exact (dynamic
    programming over split points); ``split_cost <= 0`` gives plain ``max_batch`` chunks."""
    n = len(lengths)
    if n == 0:
        return []
    if split_cost <= 0:
        return [(a, min(a + max_batch, n)) for a in range(0, n, max_batch)]
    best = [0.0] + [float("inf")] * n  # best[j]: cost of lengths[:j]
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(max(0, j - max_batch), j):  # last batch = [i, j); lengths ascending: its longest is j-1
            c = best[i] + split_cost + (j - i) * lengths[j - 1]
            if c < best[j]:
                best[j], cut[j] = c, i
    out, j = [], n
    while j > 0:
        out.append((cut[j], j))
        j = cut[j]
    return out[::-1]


def eos_ids(model, tok) -> set[int]:
    """End-of-turn ids: the tokenizer's eos plus the generation config's (Qwen lists several)."""
    ids: set[int] = set()
    if tok.eos_token_id is not None:
        ids.add(int(tok.eos_token_id))
    gc_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(gc_eos, int):
        ids.add(gc_eos)
    elif gc_eos:
        ids.update(int(x) for x in gc_eos)
    if not ids:
        raise ValueError("HFBackend: the tokenizer has no eos token; cannot tell where a response ends")
    return ids


def _cache_kwarg(model) -> str:
    """Name of the KV-cache argument of ``model.forward``: ``cache`` (transformers ≥ 5.2x) or
    ``past_key_values`` (older releases)."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _out_cache(out):
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def _stable_id(name: str) -> int:
    """A process-independent integer for a policy id (``hash`` is salted per process)."""
    import zlib

    return zlib.crc32(name.encode())
