"""HF generation backend: batched sampling on the trainer's own modules (method.md §3 "Budgets", §5).

Requests from many trees (and several policies) arrive in one call; they are grouped by policy, sorted by
prompt length (less padding), chunked into batches of at most ``max_batch_size``, left-padded and decoded
with a KV cache. The loop is our own rather than ``model.generate`` because we need, per response token,
the log-prob under the *sampling* distribution (temperature-scaled, top-p renormalised) — that is what
makes the RL importance ratio exact (method.md §5 "Old log-probs") — and a seeded ``torch.Generator`` per
call so rollouts are reproducible (design.md principle 4). Rows that emit eos are dropped from the batch
(and from the KV cache) as they finish, since responses vary a lot in length: by swap-remove (the last live
row's KV moves into the freed slot), with sampling kept in the original row order so each row draws the same
random numbers. Decode attention runs in row groups (`attention_groups`) that skip the columns padded in all
of a group's rows, so fresh prompts sharing a batch with long refinement prompts do not attend over their
padding. Both change float rounding at most (~1e-7), not the sampled tokens (tests/test_hf_prefix.py).

The models are the *same module objects* the trainer updates, so no weight sync is needed; they are put in
eval mode for generation and restored to their previous mode afterwards.
"""
from __future__ import annotations

import functools
import threading
from typing import Mapping, Sequence

import torch

from mars2.rollout.backend import (BackendBase, BackendCapabilities, Generation, GenerationRequest,  # noqa: F401
                                   chat_prompt_ids, group_by_policy)  # chat_prompt_ids: re-exported


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
        split_cost_tokens: int = 128,
        prefix_cache_tokens: int = 32768,
        attention_split_positions: int = 128,
    ) -> None:
        super().__init__()  # calls (part of each call's RNG seed), tokens_generated
        self._local_policies("HFBackend", models, tokenizers, max_new_tokens, temperature, top_p, max_batch_size, seed,
                             greedy, enable_thinking)
        # Decoding runs one batch per max_batch_size rows of a policy: its per-step cost is mostly fixed (tiny
        # models on CPU: a 1-row step costs half a 16-row one), so splitting a decode batch by prompt length
        # costs a whole extra decode loop. Prefill is what padding makes expensive; it runs in length groups:
        # a prefill forward's fixed cost in padded prompt tokens (CPU: time ~ a + b * rows * width, a/b ~ 100);
        # <= 0 (with the prefix cache off): one padded forward per decode batch, as plain HF does.
        self.split_cost_tokens = int(split_cost_tokens)
        # KV of earlier prompts of a policy, reused for the longest shared prefix of a new prompt (a tree's
        # fresh and refinement prompts share system prompt + problem statement), at most this many tokens
        # per policy (LRU); emptied when the policy's weights change. 0: off.
        self.prefix_cache_tokens = int(prefix_cache_tokens)
        self._prefix_stores: dict[str, PrefixKVCache] = {}
        self.prefix_hit_tokens = 0  # prompt tokens whose KV came from the prefix cache (statistics)
        self.trim_padding = True  # drop leading all-padding KV columns once the longest prompts finished
        self.trimmed_columns = 0  # statistics
        # Decode attention in row groups (`attention_groups`): each group of rows attends only from its first
        # unpadded column, so short rows sharing a batch with long refinement prompts skip the long rows'
        # padding; a group costs about this many attended positions of fixed overhead. <= 0: one attention call.
        self.attention_split_positions = int(attention_split_positions)
        # Finished rows leave the batch by swap-remove (the last live row's KV copied into their slot) rather
        # than a copy of the whole cache; sampling still runs in the original row order. False: index_select.
        self.swap_remove = True
        self.moved_rows = 0  # rows moved into a finished row's slot (statistics)
        self.reordered_steps = 0  # sampling steps whose rows were reordered back to the original order
        self.prefill_tokens = 0  # padded prompt positions computed by prefill forwards (statistics)
        self.prefill_real_tokens = 0  # the real (unpadded) prompt positions among them (statistics)
        self.decode_steps = 0  # decode forwards (statistics)
        self.decode_positions = 0  # sum over decode forwards of rows x KV width (statistics)
        self.attended_positions = 0  # the same, counting only the columns each row group attends (statistics)
        self.real_positions = 0  # the same, counting only unpadded columns: the floor of any padding scheme

    def close(self) -> None:
        """Nothing to release but the prefix cache: the modules belong to the trainer (same interface as
        `VLLMBackend.close`)."""
        self._prefix_stores.clear()

    # ------------------------------------------------------------------------------------------------
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
                for a, b in decode_batches(len(order), self.max_batch_size):
                    chunk = order[a:b]
                    results = self._generate_batch(model, pid, tok, [prompts[i] for i in chunk], gen, greedy,
                                                   max_new, device)
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
    def _prefill(self, model, pid: str, prompts: list[list[int]], device, pad: int, extra: int = 0):
        """KV cache, attention mask and last-position logits of a decode batch's left-padded prompts.

        The returned cache has the plain layout (row r's prompt right-aligned in width ``max(len)``, mask 0 on
        the padding), so decoding proceeds exactly as after one padded forward. With ``split_cost_tokens > 0``
        or the prefix cache on, it is computed in pieces: each row first takes the KV of its longest prefix
        already computed for an earlier prompt of this policy (same weights; ``prefix_cache_tokens``), then the
        remaining suffixes are prefilled in length groups (`padding_batches` on suffix lengths), the group's
        cached prefixes left-padded in front of its left-padded suffixes; the real positions are then gathered
        into the plain layout. Attention gives masked positions weight exactly 0, so the KV values and logits
        are those of the single padded forward up to float rounding (~1e-7) and the sampling is unchanged.
        The cache's layers are preallocated for ``extra`` more positions (`_BufferLayer`)."""
        b = len(prompts)
        lens = [len(p) for p in prompts]
        width = max(lens)
        mask = torch.zeros((b, width), dtype=torch.long)
        for r, n in enumerate(lens):
            mask[r, width - n:] = 1
        mask = mask.to(device)
        store = self._prefix_store(pid, model)
        if (store is None and self.split_cost_tokens <= 0) or not _plain_kv_layers(model):
            ids = torch.full((b, width), pad, dtype=torch.long)
            for r, p in enumerate(prompts):  # left padding: the last prompt token of every row is at -1
                ids[r, width - len(p):] = torch.tensor(p, dtype=torch.long)
            ids = ids.to(device)
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
            self.prefill_tokens += b * width
            self.prefill_real_tokens += sum(lens)
            cache = _out_cache(out)
            if _plain_kv_layers(model):
                cache = _make_cache([(lay.keys, lay.values) for lay in cache.layers], extra)
            return cache, out.logits[:, -1, :], mask
        hits = [store.lookup(p) if store is not None else (0, None) for p in prompts]
        self.prefix_hit_tokens += sum(m for m, _ in hits)
        suffix = [n - m for n, (m, _) in zip(lens, hits)]
        order = sorted(range(b), key=lambda r: suffix[r])
        final_k: list[torch.Tensor] = []  # per layer [b, kv_heads, width + extra, head_dim]: the decode buffers
        final_v: list[torch.Tensor] = []
        logits = None
        for a, z in padding_batches([suffix[r] for r in order], b, self.split_cost_tokens):
            rows = order[a:z]
            g, big_m, big_s = len(rows), max(hits[r][0] for r in rows), max(suffix[r] for r in rows)
            ids = torch.full((g, big_s), pad, dtype=torch.long)
            gmask = torch.zeros((g, big_m + big_s), dtype=torch.long)
            pos = torch.zeros((g, big_s), dtype=torch.long)
            src = torch.full((g, width), big_m + big_s - 1, dtype=torch.long)  # padding: any real column
            for j, r in enumerate(rows):
                m, s = hits[r][0], suffix[r]
                ids[j, big_s - s:] = torch.tensor(prompts[r][m:], dtype=torch.long)
                gmask[j, big_m - m:big_m] = 1
                gmask[j, big_m + big_s - s:] = 1
                pos[j, big_s - s:] = torch.arange(m, m + s)
                src[j, width - m - s:width - s] = torch.arange(big_m - m, big_m)
                src[j, width - s:] = torch.arange(big_m + big_s - s, big_m + big_s)
            kw = {}
            if big_m:
                # The cached prefixes are written into buffers with room for the suffix, so the forward
                # appends the suffix KV in place (`_BufferLayer.update`) instead of concatenating.
                past = []
                for layer, (k0, v0) in enumerate(hits[next(r for r in rows if hits[r][0])][1]):
                    kp = k0.new_zeros((g, k0.shape[0], big_m + big_s, k0.shape[2]))
                    vp = v0.new_zeros((g, v0.shape[0], big_m + big_s, v0.shape[2]))
                    for j, r in enumerate(rows):
                        m, kv = hits[r]
                        if m:
                            kp[j, :, big_m - m:big_m] = kv[layer][0][:, :m]
                            vp[j, :, big_m - m:big_m] = kv[layer][1][:, :m]
                    past.append(_buffer_layer_class().over(kp, vp, big_m))
                kw[_cache_kwarg(model)] = _cache_of(past)
            out = model(input_ids=ids.to(device), attention_mask=gmask.to(device), position_ids=pos.to(device),
                        use_cache=True, logits_to_keep=1, **kw)
            self.prefill_tokens += g * big_s
            self.prefill_real_tokens += sum(suffix[r] for r in rows)
            cache = _out_cache(out)
            idx = src.to(device)[:, None, :, None]
            rows_t = torch.tensor(rows, dtype=torch.long, device=device)
            for layer, lay in enumerate(cache.layers):
                if len(final_k) <= layer:
                    shape = (b, lay.keys.shape[1], width + max(extra, 0), lay.keys.shape[3])
                    final_k.append(lay.keys.new_empty(shape))
                    final_v.append(lay.values.new_empty(shape))
                e = idx.expand(-1, lay.keys.shape[1], -1, lay.keys.shape[3])
                final_k[layer][:, :, :width].index_copy_(0, rows_t, lay.keys.gather(2, e))
                final_v[layer][:, :, :width].index_copy_(0, rows_t, lay.values.gather(2, e))
            last = out.logits[:, -1, :]
            if logits is None:
                logits = last.new_empty((b, last.shape[-1]))
            logits.index_copy_(0, rows_t, last)
        if store is not None:
            for r, p in enumerate(prompts):
                n = lens[r]
                store.add(p, [(k[r, :, width - n:width].clone(), v[r, :, width - n:width].clone())
                              for k, v in zip(final_k, final_v)])
        if extra > 0:
            layers = [_buffer_layer_class().over(k, v, width) for k, v in zip(final_k, final_v)]
            return _cache_of(layers), logits, mask
        return _make_cache([(k, v) for k, v in zip(final_k, final_v)]), logits, mask

    def _prefix_store(self, pid: str, model) -> "PrefixKVCache | None":
        """This policy's prefix store, emptied when the module's weights moved (in-place version counters)."""
        if self.prefix_cache_tokens <= 0:
            return None
        version = (id(model), sum(int(p._version) for p in model.parameters()))
        store = self._prefix_stores.get(pid)
        if store is None or store.version != version:
            store = self._prefix_stores[pid] = PrefixKVCache(self.prefix_cache_tokens, version)
        return store

    @torch.inference_mode()
    def _generate_batch(self, model, pid, tok, prompts: list[list[int]], gen: torch.Generator, greedy: bool,
                        max_new: int, device) -> list[tuple[list[int], list[float], bool]]:
        eos = eos_ids(model, tok)
        pad = tok.pad_token_id if tok.pad_token_id is not None else next(iter(eos))
        b = len(prompts)
        eos_t = torch.tensor(sorted(eos), device=device)

        responses: list[list[int]] = [[] for _ in range(b)]
        logps: list[list[float]] = [[] for _ in range(b)]
        done = [False] * b
        active = torch.arange(b, device=device)  # original row of each live batch row
        ckw = _cache_kwarg(model)
        cache, logits, mask = self._prefill(model, pid, prompts, device, pad, extra=max_new)
        next_pos = torch.tensor([[len(p)] for p in prompts], dtype=torch.long, device=device)
        lead = torch.tensor([mask.shape[1] - len(p) for p in prompts], dtype=torch.long, device=device)  # left pads
        grouped = self.attention_split_positions > 0 and _grouped_sdpa_ready(model)
        pads = sum(lead.tolist())
        groups = attention_groups(lead.tolist(), self.attention_split_positions) if grouped else None
        swap = self.swap_remove
        canon = None  # batch rows in the original (ascending) row order, once swaps reordered them
        permuted = False
        for step in range(max_new):
            if canon is not None:  # sample in the original row order: the same random stream per row
                logits = logits.index_select(0, canon)
                self.reordered_steps += 1
            logp = sampling_logprobs(logits, self.temperature, self.top_p)
            if greedy:
                nxt = logits.argmax(-1)
            else:
                nxt = torch.multinomial(logp.exp(), 1, generator=gen).squeeze(-1)
            lp = logp.gather(-1, nxt[:, None]).squeeze(-1)
            if canon is not None:  # back to the batch's row order
                nxt = torch.empty_like(nxt).index_copy_(0, canon, nxt)
                lp = torch.empty_like(lp).index_copy_(0, canon, lp)
            finished = torch.isin(nxt, eos_t)
            nxt_l, lp_l, fin_l, rows = nxt.tolist(), lp.tolist(), finished.tolist(), active.tolist()
            for j, row in enumerate(rows):
                responses[row].append(nxt_l[j])
                logps[row].append(lp_l[j])
                if fin_l[j]:
                    done[row] = True
            if step == max_new - 1 or all(done):
                break
            if any(fin_l):  # drop finished rows from the batch and the KV cache
                if swap and _removes(cache):
                    # each finished row is overwritten by the batch's last live row (one row copied per
                    # layer instead of the whole cache); the rows' order changes, `canon` restores it
                    sel_l = swap_remove_order(fin_l)
                    moved = sum(j != r for j, r in enumerate(sel_l))
                    self.moved_rows += moved
                    permuted = permuted or moved > 0
                    for lay in cache.layers:
                        lay.remove_rows(sel_l)
                    sel = torch.tensor(sel_l, dtype=torch.long, device=device)
                else:
                    sel = (~finished).nonzero().squeeze(-1)
                    cache.batch_select_indices(sel)
                active, nxt, mask, next_pos = active[sel], nxt[sel], mask[sel], next_pos[sel]
                canon = active.argsort() if permuted and len(active) > 1 else None
                # Leading columns now masked in every live row (the longest prompts finished): drop them
                # from the mask and the KV views, so later steps attend over fewer padded positions.
                cut = mask.shape[1] - (mask.shape[1] - lead[sel]).max()
                if self.trim_padding and int(cut) >= 8 and _trims(cache):
                    cut = int(cut)
                    for lay in cache.layers:
                        lay.trim_front(cut)
                    mask, lead = mask[:, cut:], lead[sel] - cut
                    self.trimmed_columns += cut
                else:
                    lead = lead[sel]
                pads = sum(lead.tolist())
                if grouped:
                    groups = attention_groups(lead.tolist(), self.attention_split_positions)
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=-1)
            _GROUPS.value = groups
            try:
                out = model(input_ids=nxt[:, None], attention_mask=mask, position_ids=next_pos,
                            use_cache=True, **{ckw: cache})
            finally:
                _GROUPS.value = None
            self.decode_steps += 1
            self.decode_positions += mask.shape[0] * mask.shape[1]
            self.real_positions += mask.shape[0] * mask.shape[1] - pads
            self.attended_positions += (mask.shape[0] * mask.shape[1] if groups is None else
                                        sum((b - a) * (mask.shape[1] - c) for a, b, c in groups))
            cache = _out_cache(out)
            logits = out.logits[:, -1, :]
            next_pos = next_pos + 1
        return [(responses[r], logps[r], not done[r]) for r in range(b)]


def attention_groups(lead: Sequence[int], split_cost: int) -> list[tuple[int, int, int]] | None:
    """Row groups ``(a, b, start)`` for a decode step's attention: rows ``[a, b)`` attend over KV columns
    ``start:`` only, ``start = min(lead[a:b])`` (``lead``: each row's count of leading padding columns, masked
    in that row). Consecutive groups minimising ``sum(split_cost + rows * attended width)`` (exact DP; the
    width is measured from column 0, the common width cancels out); ``None`` when one group is best."""
    n = len(lead)
    if n == 0 or max(lead) == 0:
        return None
    best = [0.0] + [float("inf")] * n
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        low = lead[j - 1]
        for i in range(j - 1, -1, -1):  # last group = [i, j)
            low = min(low, lead[i])
            c = best[i] + split_cost - (j - i) * low
            if c < best[j]:
                best[j], cut[j] = c, i
    out, j = [], n
    while j > 0:
        i = cut[j]
        out.append((i, j, min(lead[i:j])))
        j = i
    out.reverse()
    if len(out) == 1 and out[0][2] == 0:
        return None
    return out


class _Groups(threading.local):
    value: "list[tuple[int, int, int]] | None" = None


_GROUPS = _Groups()  # row groups of the decode forward running in this thread (None: plain attention)


def _grouped_sdpa_ready(model) -> bool:
    """Install (once) the grouped wrapper of transformers' ``sdpa`` attention; True when ``model`` uses it.
    Outside `HFBackend`'s decode forwards (``_GROUPS.value is None``) the wrapper is the original function."""
    if getattr(getattr(model, "config", None), "_attn_implementation", None) != "sdpa" or not _plain_kv_layers(model):
        return False
    try:
        from transformers.modeling_utils import AttentionInterface
    except ImportError:  # pragma: no cover - older transformers
        return False
    mapping = AttentionInterface._global_mapping
    plain = mapping.get("sdpa")
    if plain is None:
        return False
    if getattr(plain, "_mars2_grouped", False):
        return True

    def grouped_sdpa(module, query, key, value, attention_mask, *args, **kwargs):
        groups = _GROUPS.value
        if groups is None or query.shape[2] != 1 or attention_mask is None or attention_mask.shape[0] != query.shape[0]:
            return plain(module, query, key, value, attention_mask, *args, **kwargs)
        parts = [plain(module, query[a:b], key[a:b, :, c:], value[a:b, :, c:], attention_mask[a:b, ..., c:],
                       *args, **kwargs)[0] for a, b, c in groups]
        return torch.cat(parts), None

    grouped_sdpa._mars2_grouped = True  # type: ignore[attr-defined]
    grouped_sdpa._mars2_plain = plain  # type: ignore[attr-defined]
    AttentionInterface.register("sdpa", grouped_sdpa)
    return True


def decode_batches(n: int, max_batch: int) -> list[tuple[int, int]]:
    """``n`` length-sorted rows in the fewest batches of at most ``max_batch`` rows, of near-equal size."""
    if n == 0:
        return []
    k = -(-n // max_batch)
    cuts = [round(i * n / k) for i in range(k + 1)]
    return [(cuts[i], cuts[i + 1]) for i in range(k)]


class PrefixKVCache:
    """Per-policy LRU store of prompt KV tensors (per layer ``(keys, values)`` of shape ``[kv_heads, n,
    head_dim]``, positions 0..n-1), looked up by longest shared token prefix: every prefix of a stored prompt
    whose length is a multiple of ``block`` is indexed, and a match found there is extended token by token.
    ``version`` ties the store to the weights it was computed with (the caller replaces the store when they
    change): stale KV would silently change the outputs."""

    def __init__(self, max_tokens: int, version: object = None, block: int = 16) -> None:
        from collections import OrderedDict

        self.max_tokens, self.version, self.block = int(max_tokens), version, int(block)
        self.entries: "OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]]" = OrderedDict()
        self.index: dict[tuple[int, ...], tuple[int, ...]] = {}
        self.tokens = 0

    def lookup(self, prompt: Sequence[int]) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """``(m, kv)``: the longest stored prefix ``prompt[:m]`` (``m <= len(prompt) - 1``: the last prompt
        token is always computed, for its logits; at least one block) and the entry holding it."""
        limit = len(prompt) - 1
        for k in range(limit // self.block, 0, -1):
            key = self.index.get(tuple(prompt[: k * self.block]))
            if key is not None:
                kv = self.entries[key]
                self.entries.move_to_end(key)
                m, stop = k * self.block, min(limit, len(key))
                while m < stop and key[m] == prompt[m]:
                    m += 1
                return m, kv
        return 0, None

    def add(self, prompt: Sequence[int], kv: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        key = tuple(prompt)
        if len(key) < self.block or len(key) > self.max_tokens:
            return
        if key in self.entries:
            self.entries.move_to_end(key)
            return
        self.entries[key] = kv
        self.tokens += len(key)
        for k in range(1, len(key) // self.block + 1):
            self.index[key[: k * self.block]] = key
        while self.tokens > self.max_tokens:
            old, _ = self.entries.popitem(last=False)
            self.tokens -= len(old)
            for k in range(1, len(old) // self.block + 1):
                if self.index.get(old[: k * self.block]) is old:
                    del self.index[old[: k * self.block]]


def _plain_kv_layers(model) -> bool:
    """Every layer a full-attention KV layer (what `HFBackend._prefill`'s gather assumes); sliding-window or
    linear-attention layers take the single padded forward."""
    types = getattr(getattr(model, "config", None), "layer_types", None)
    return not types or all(t == "full_attention" for t in types)


def _make_cache(layers: list[tuple[torch.Tensor, torch.Tensor]], extra: int = 0):
    """A `DynamicCache` holding ``layers``; with ``extra > 0`` its layers are `_BufferLayer`s with room for
    ``extra`` more positions."""
    from transformers.cache_utils import DynamicCache

    if extra <= 0:
        return DynamicCache(ddp_cache_data=layers)
    cache = DynamicCache()
    cache.layers = [_buffer_layer(k, v, extra) for k, v in layers]
    return cache


def _cache_of(layers: list) -> object:
    """A `DynamicCache` whose layers are ``layers`` (`_BufferLayer`s)."""
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache()
    cache.layers = list(layers)
    return cache


def swap_remove_order(finished: Sequence[bool]) -> list[int]:
    """The rows kept when the ``finished`` rows of a batch are removed by swap-remove: entry ``j`` of the
    result is the old row now at row ``j``. Each finished slot below the new size takes a live row from the
    end; a row moves only into a freed slot, so moving rows in order never overwrites a row still to move."""
    n = len(finished)
    live = [r for r in range(n) if not finished[r]]
    k = len(live)
    order = list(range(k))
    movers = [r for r in live if r >= k]  # live rows beyond the new size, filling the holes below it
    holes = [r for r in range(k) if finished[r]]
    for h, r in zip(holes, movers):
        order[h] = r
    return order


def _removes(cache) -> bool:
    return all(hasattr(lay, "remove_rows") for lay in cache.layers)


def _trims(cache) -> bool:
    return all(hasattr(lay, "trim_front") for lay in cache.layers)


def _buffer_layer(keys: torch.Tensor, values: torch.Tensor, extra: int):
    return _buffer_layer_class()(keys, values, extra)


@functools.lru_cache(maxsize=1)
def _buffer_layer_class():
    """A full-attention KV layer that writes new positions in place into a preallocated buffer and hands
    attention views of it, instead of ``DynamicLayer``'s ``torch.cat`` of the whole cache every step (on CPU
    that copy was the largest single cost of a tiny model's decode step: ~30 % of it). Same values, same
    shapes: only where they live changes."""
    from transformers.cache_utils import DynamicLayer

    class _BufferLayer(DynamicLayer):
        def __init__(self, k: torch.Tensor, v: torch.Tensor, room: int) -> None:
            super().__init__()
            n = k.shape[-2]
            self.kbuf = k.new_empty((*k.shape[:2], n + room, k.shape[3]))
            self.vbuf = v.new_empty((*v.shape[:2], n + room, v.shape[3]))
            self.kbuf[:, :, :n] = k
            self.vbuf[:, :, :n] = v
            self.n, self.device, self.is_initialized = n, k.device, True
            self._views()

        @classmethod
        def over(cls, kbuf: torch.Tensor, vbuf: torch.Tensor, n: int) -> "_BufferLayer":
            """A layer whose buffers are ``kbuf``/``vbuf`` themselves (no copy), the first ``n`` positions
            filled."""
            self = cls.__new__(cls)
            DynamicLayer.__init__(self)
            self.kbuf, self.vbuf, self.n, self.device, self.is_initialized = kbuf, vbuf, n, kbuf.device, True
            self._views()
            return self

        def _views(self) -> None:
            self.keys, self.values = self.kbuf[:, :, : self.n], self.vbuf[:, :, : self.n]

        def update(self, key_states, value_states, *args, **kwargs):
            m = key_states.shape[-2]
            if self.n + m > self.kbuf.shape[2]:  # out of room: grow (not reached with room = max_new)
                grow = max(m, self.kbuf.shape[2])
                self.kbuf = torch.cat([self.kbuf, self.kbuf.new_empty((*self.kbuf.shape[:2], grow, self.kbuf.shape[3]))], 2)
                self.vbuf = torch.cat([self.vbuf, self.vbuf.new_empty((*self.vbuf.shape[:2], grow, self.vbuf.shape[3]))], 2)
            self.kbuf[:, :, self.n : self.n + m] = key_states
            self.vbuf[:, :, self.n : self.n + m] = value_states
            self.n += m
            self._views()
            return self.keys, self.values

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self.kbuf, self.vbuf = self.kbuf[indices, ...], self.vbuf[indices, ...]
            self._views()

        def remove_rows(self, order: Sequence[int]) -> None:
            """Keep rows ``order`` (from `swap_remove_order`: each kept row either stays or moves into a
            freed slot), copying only the moved rows; the batch shrinks to ``len(order)`` rows (views)."""
            for new, old in enumerate(order):
                if new != old:
                    self.kbuf[new] = self.kbuf[old]
                    self.vbuf[new] = self.vbuf[old]
            self.kbuf, self.vbuf = self.kbuf[: len(order)], self.vbuf[: len(order)]
            self._views()

        def trim_front(self, cut: int) -> None:
            """Forget the first ``cut`` positions (padding masked in every row): views, no copy."""
            self.kbuf, self.vbuf = self.kbuf[:, :, cut:], self.vbuf[:, :, cut:]
            self.n -= cut
            self._views()

    return _BufferLayer


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
