"""HF backend prefill paths (issue 21.2): the prefix KV cache and length-grouped prefill must leave the
sampled tokens and their log-probs those of the plain single padded prefill (same seed, same decode batches)."""
from __future__ import annotations

import pytest
import torch

from mars2.agents.models import PolicySpec, build_policy
from mars2.agents.tokenizer import build_tiny_tokenizer
from mars2.rollout.backend import GenerationRequest
from mars2.rollout.hf_backend import HFBackend, PrefixKVCache, decode_batches

CORPUS = [
    "Given a list of integers xs: keep only the even numbers, then return the sum.",
    "def solve(xs):\n    xs = [x for x in xs if x % 2 == 0]\n    return sum(xs)",
    "Given a string s: reverse it, then return the length.",
    "Previous program: Feedback: failed test expected got Fix the program.",
] * 20
STATEMENTS = [
    "Given a list of integers xs: keep only the even numbers, then return the sum.",
    "Given a string s: reverse it, then return the length.",
]


def _fresh(stmt: str, system: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"{stmt}\nWrite a function. Answer with one ```python code block."}]


def _refine(stmt: str, system: str, k: int) -> list[dict[str, str]]:
    program = "def solve(xs):\n    return sum(xs)\n" * k
    return [{"role": "system", "content": system},
            {"role": "user", "content": f"{stmt}\nWrite a function.\nPrevious program:\n```python\n{program}```\n"
                                        f"Feedback:\nfailed test {k}: expected 2 got {k}\nFix the program."}]


def _tree_calls() -> list[list[tuple[str, list[dict[str, str]]]]]:
    """Three rounds shaped like a tree rollout: fresh prompts first, then refinements of growing length that
    share system prompt + statement with them; two policies, two system prompts, mixed lengths per call."""
    sys_a, sys_b = "You are an expert Python programmer.", "You debug Python programs."
    r1 = [("q", _fresh(s, sys_a)) for s in STATEMENTS] + [("l", _fresh(s, sys_b)) for s in STATEMENTS]
    r2 = [("q", _refine(STATEMENTS[0], sys_a, 1)), ("q", _fresh(STATEMENTS[1], sys_a)),
          ("l", _refine(STATEMENTS[1], sys_b, 2)), ("l", _fresh(STATEMENTS[0], sys_b))]
    r3 = [("q", _refine(STATEMENTS[0], sys_a, 3)), ("q", _refine(STATEMENTS[1], sys_a, 1)),
          ("l", _refine(STATEMENTS[0], sys_b, 1)), ("q", _fresh(STATEMENTS[0], sys_a)),
          ("l", _refine(STATEMENTS[1], sys_b, 3))]
    return [r1, r2, r3]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    tok = build_tiny_tokenizer(CORPUS, vocab_size=512, cache_dir=tmp_path_factory.mktemp("tok"))
    q, _ = build_policy(PolicySpec("q", "qwen3", 64, 2, 2, 1, 32, 128, seed=1, tie_embeddings=False), tok)
    l, _ = build_policy(PolicySpec("l", "llama", 64, 2, 2, 2, 32, 128, seed=2, tie_embeddings=False), tok)
    return tok, q, l


def _run(tok, q, l, calls, **kw):
    be = HFBackend({"q": q, "l": l}, {"q": tok, "l": tok}, max_new_tokens=16, seed=11, **kw)
    return [be.generate([GenerationRequest(pid, m) for pid, m in call]) for call in calls], be


def _assert_same(plain, fast) -> None:
    for call_p, call_f in zip(plain, fast):
        for a, b in zip(call_p, call_f):
            assert a.prompt_ids == b.prompt_ids
            assert a.response_ids == b.response_ids
            assert a.truncated == b.truncated
            assert max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) < 1e-5


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 0.9), (1.3, 0.8)])
@pytest.mark.parametrize("split_cost", [0, 1, 128])
def test_prefix_cache_and_grouped_prefill_equal_plain_prefill(setup, temperature, top_p, split_cost) -> None:
    tok, q, l = setup
    calls = _tree_calls()
    plain, _ = _run(tok, q, l, calls, temperature=temperature, top_p=top_p, split_cost_tokens=0,
                    prefix_cache_tokens=0)
    fast, be = _run(tok, q, l, calls, temperature=temperature, top_p=top_p, split_cost_tokens=split_cost,
                    prefix_cache_tokens=4096)
    _assert_same(plain, fast)
    # not vacuous: later calls really reused earlier prompts' KV, and the prompts have mixed lengths
    assert be.prefix_hit_tokens > 0
    assert len({len(g.prompt_ids) for g in fast[2]}) >= 4
    # every prompt token is either taken from the cache or prefilled, once; padding is counted apart
    assert be.prefix_hit_tokens + be.prefill_real_tokens == sum(len(g.prompt_ids) for call in fast for g in call)
    assert be.prefill_tokens >= be.prefill_real_tokens
    assert all(len(g.response_ids) > 1 for call in fast for g in call)


def test_grouped_prefill_without_prefix_cache_equals_plain(setup) -> None:
    tok, q, l = setup
    calls = _tree_calls()
    plain, _ = _run(tok, q, l, calls, temperature=0.7, top_p=0.9, split_cost_tokens=0, prefix_cache_tokens=0)
    grouped, be = _run(tok, q, l, calls, temperature=0.7, top_p=0.9, split_cost_tokens=1, prefix_cache_tokens=0)
    _assert_same(plain, grouped)
    assert be.prefix_hit_tokens == 0


def test_prefix_cache_is_dropped_when_weights_change(setup) -> None:
    tok, q, l = setup
    calls = _tree_calls()
    fast = HFBackend({"q": q, "l": l}, {"q": tok, "l": tok}, max_new_tokens=16, seed=11, prefix_cache_tokens=4096)
    plain = HFBackend({"q": q, "l": l}, {"q": tok, "l": tok}, max_new_tokens=16, seed=11, split_cost_tokens=0,
                      prefix_cache_tokens=0)
    reqs = [GenerationRequest(pid, m) for pid, m in calls[0]]
    fast.generate(reqs)
    plain.generate(reqs)
    hits = fast.prefix_hit_tokens
    saved = {k: v.clone() for k, v in q.state_dict().items()}
    try:
        with torch.no_grad():  # an optimiser-like in-place update of one policy
            for p in q.parameters():
                p.add_(0.05 * torch.randn_like(p))
        a, b = fast.generate(reqs), plain.generate(reqs)
        for x, y in zip(a, b):
            assert x.response_ids == y.response_ids
            assert max(abs(u - v) for u, v in zip(x.logprobs, y.logprobs)) < 1e-5
        # q's store was emptied (no hits for q's prompts), l's kept its entries (hits for l's prompts)
        n_l = sum(len(g.prompt_ids) - 1 for g, (pid, _) in zip(a, calls[0]) if pid == "l")
        assert fast.prefix_hit_tokens - hits == n_l
    finally:
        q.load_state_dict(saved)


def test_prefix_kv_cache_lookup_and_eviction_by_hand() -> None:
    kv = lambda n: [(torch.zeros(1, n, 2), torch.ones(1, n, 2))]  # noqa: E731
    c = PrefixKVCache(max_tokens=20, block=4)
    a = list(range(10))
    c.add(a, kv(10))
    assert c.lookup(a) == (9, c.entries[tuple(a)])  # the last prompt token is never taken from the cache
    m, got = c.lookup(list(range(6)) + [99, 98])
    assert m == 6 and got is c.entries[tuple(a)]  # block match (4) extended token by token to 6
    assert c.lookup([0, 1, 2, 99, 4, 5]) == (0, None)  # shorter than one block shared: no reuse
    assert c.lookup([0, 1, 2, 3]) == (0, None)  # m would be 4 > len - 1
    b = [0, 1, 2, 3, 7, 7, 7, 7, 7]
    c.add(b, kv(9))
    assert c.tokens == 19
    c.add([5] * 8, kv(8))  # 27 > 20: the least recently used entry (a) goes, with its index keys
    assert tuple(a) not in c.entries and c.tokens == 17
    assert c.lookup(a)[0] == 4  # still shares the first block with b
    assert c.lookup([0, 1, 2, 3, 4, 5, 6, 7, 8])[1] is c.entries[tuple(b)]
    assert (0, 1, 2, 3, 4, 5, 6, 7) not in c.index


def test_decode_batches_fewest_near_equal() -> None:
    assert decode_batches(0, 4) == []
    assert decode_batches(5, 64) == [(0, 5)]
    assert decode_batches(70, 64) == [(0, 35), (35, 70)]
    assert decode_batches(9, 4) == [(0, 3), (3, 6), (6, 9)]
    assert decode_batches(8, 4) == [(0, 4), (4, 8)]


def test_padding_trim_after_long_rows_finish_equals_untrimmed(setup) -> None:
    """Rows stop at different steps (a frequent token declared end-of-turn), so finished long rows let the
    batch drop leading padding columns: outputs equal the untrimmed plain path."""
    tok, q, l = setup
    calls = _tree_calls()
    probe_be = HFBackend({"q": q, "l": l}, {"q": tok, "l": tok}, max_new_tokens=24, seed=5, split_cost_tokens=0,
                         prefix_cache_tokens=0)
    probe = [probe_be.generate([GenerationRequest(p, m) for p, m in c]) for c in calls][2]
    # the first token of call 3's longest q prompt becomes end-of-turn: that row stops at step 0, the others
    # (>= 8 tokens shorter) go on
    longest = max((g for g, (p, _) in zip(probe, calls[2]) if p == "q"), key=lambda g: len(g.prompt_ids))
    common = longest.response_ids[0]
    olds = (q.generation_config.eos_token_id, l.generation_config.eos_token_id)
    q.generation_config.eos_token_id = [tok.eos_token_id, common]
    l.generation_config.eos_token_id = [tok.eos_token_id, common]
    try:
        for kw in (dict(split_cost_tokens=0, prefix_cache_tokens=0), dict(prefix_cache_tokens=4096)):
            ref_be = HFBackend({"q": q, "l": l}, {"q": tok, "l": tok}, max_new_tokens=24, seed=5,
                               split_cost_tokens=0, prefix_cache_tokens=0)
            ref_be.trim_padding = False
            fast_be = HFBackend({"q": q, "l": l}, {"q": tok, "l": tok}, max_new_tokens=24, seed=5, **kw)
            ref = [ref_be.generate([GenerationRequest(p, m) for p, m in c]) for c in calls]
            fast = [fast_be.generate([GenerationRequest(p, m) for p, m in c]) for c in calls]
            _assert_same(ref, fast)
            lens = [len(g.response_ids) for c in fast for g in c]
            assert len(set(lens)) > 2 and any(not g.truncated for c in fast for g in c)
            assert fast_be.trimmed_columns > 0 and ref_be.trimmed_columns == 0  # the trim really ran
    finally:
        q.generation_config.eos_token_id, l.generation_config.eos_token_id = olds


# -- decode attention in row groups ----------------------------------------------------------------------------------
def test_attention_groups_by_hand_and_against_brute_force() -> None:
    import itertools
    import random

    from mars2.rollout.hf_backend import attention_groups

    assert attention_groups([0] * 5, 1) is None  # no padding: nothing to skip
    assert attention_groups([7], 1) == [(0, 1, 7)]  # one row: its own padding skipped
    assert attention_groups([150] * 24 + [0] * 8, 256) == [(0, 24, 150), (24, 32, 0)]
    assert attention_groups([3, 2, 0], 10**6) is None  # one group from column 0 = plain attention
    assert attention_groups([50, 50, 0], 10**6) is None
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 7)
        lead = sorted((rng.randint(0, 40) for _ in range(n)), reverse=rng.random() < 0.7)
        cost = rng.choice([0, 1, 8, 30, 200])
        got = attention_groups(lead, cost)
        groups = got if got is not None else [(0, n, min(lead))]
        assert groups[0][0] == 0 and groups[-1][1] == n
        assert all(g[1] == h[0] for g, h in zip(groups, groups[1:]))
        assert all(c == min(lead[a:b]) for a, b, c in groups)  # never skips a column some row attends

        def cost_of(gs):
            return sum(cost - (b - a) * c for a, b, c in gs)

        best = min(cost_of([(a, b, min(lead[a:b])) for a, b in zip((0,) + cuts, cuts + (n,))])
                   for k in range(n) for cuts in itertools.combinations(range(1, n), k))
        assert cost_of(groups) == best


@pytest.mark.parametrize("temperature,top_p,split", [(0.7, 0.9, 1), (1.3, 0.8, 1), (0.7, 0.9, 12), (1.3, 0.8, 40)])
def test_grouped_decode_attention_equals_plain(setup, temperature, top_p, split) -> None:
    """Row groups that skip other rows' padding (split cost 1: one row per group; 12, 40: groups of rows with
    different padding, attending from the least padded row's first real column) leave tokens and log-probs
    those of one attention call over the whole padded width, with and without the prefix cache."""
    from mars2.rollout.hf_backend import _GROUPS

    tok, q, l = setup
    calls = _tree_calls()
    for kw in (dict(split_cost_tokens=0, prefix_cache_tokens=0), dict(prefix_cache_tokens=4096)):
        ref_be = HFBackend({"q": q, "l": l}, {"q": tok, "l": tok}, max_new_tokens=16, seed=3,
                           temperature=temperature, top_p=top_p, **kw)
        ref_be.attention_split_positions = 0
        fast_be = HFBackend({"q": q, "l": l}, {"q": tok, "l": tok}, max_new_tokens=16, seed=3,
                            temperature=temperature, top_p=top_p, **kw)
        fast_be.attention_split_positions = split
        ref = [ref_be.generate([GenerationRequest(p, m) for p, m in c]) for c in calls]
        fast = [fast_be.generate([GenerationRequest(p, m) for p, m in c]) for c in calls]
        _assert_same(ref, fast)
        assert _GROUPS.value is None  # reset after every decode forward
        # not vacuous: the groups really skipped padded columns, down to the unpadded floor at most
        assert ref_be.attended_positions == ref_be.decode_positions
        assert fast_be.real_positions <= fast_be.attended_positions < fast_be.decode_positions
        assert fast_be.decode_positions == ref_be.decode_positions


def test_grouped_sdpa_is_the_plain_function_outside_decode(setup) -> None:
    """The wrapper installed in transformers' attention registry changes nothing for other callers (the
    trainer's forwards): same logits, bitwise, as the original sdpa function on a padded batch."""
    from transformers.modeling_utils import AttentionInterface

    from mars2.rollout.hf_backend import _grouped_sdpa_ready

    tok, q, _ = setup
    assert _grouped_sdpa_ready(q)
    wrapper = AttentionInterface._global_mapping["sdpa"]
    assert wrapper._mars2_grouped
    ids = torch.randint(5, 200, (3, 12))
    mask = torch.ones_like(ids)
    mask[0, :5] = 0
    mask[1, :2] = 0
    with torch.no_grad():
        with_wrapper = q(input_ids=ids, attention_mask=mask).logits
        AttentionInterface._global_mapping["sdpa"] = wrapper._mars2_plain
        try:
            plain = q(input_ids=ids, attention_mask=mask).logits
        finally:
            AttentionInterface._global_mapping["sdpa"] = wrapper
    assert torch.equal(with_wrapper, plain)


# -- finished rows leave the batch by swap-remove ---------------------------------------------------------------------
def test_swap_remove_order_by_hand() -> None:
    from mars2.rollout.hf_backend import swap_remove_order

    assert swap_remove_order([False, True, False, True, False, False]) == [0, 4, 2, 5]
    assert swap_remove_order([True, False, False]) == [2, 1]
    assert swap_remove_order([False, False, True]) == [0, 1]  # last row: nothing moves
    assert swap_remove_order([True, True]) == []
    import random

    rng = random.Random(1)
    for _ in range(300):
        fin = [rng.random() < 0.4 for _ in range(rng.randint(1, 12))]
        order = swap_remove_order(fin)
        assert sorted(order) == [r for r, f in enumerate(fin) if not f]  # exactly the live rows, once each
        # a row moves only into a slot freed by a finished row (so in-order copies never clobber a mover)
        assert all(j == r or (fin[j] and r >= len(order)) for j, r in enumerate(order))


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (1.3, 0.8)])
def test_swap_remove_equals_index_select(setup, temperature, top_p) -> None:
    """Rows finishing at different steps (a frequent token declared end-of-turn) move into freed slots, so
    the batch's row order changes: tokens and log-probs stay those of the order-preserving removal (sampling
    runs in the original row order), with the prefix cache and attention groups on or off."""
    tok, q, l = setup
    flat = [r for c in _tree_calls() for r in c]
    calls = [flat, flat[::-1]]  # 6-7 rows per policy and call: moves leave several live rows to reorder
    probe_be = HFBackend({"q": q, "l": l}, {"q": tok, "l": tok}, max_new_tokens=24, seed=7)
    probe = [probe_be.generate([GenerationRequest(p, m) for p, m in c]) for c in calls]
    counts: dict[int, int] = {}
    for c in probe:
        for g in c:
            for t in g.response_ids[1:]:
                counts[t] = counts.get(t, 0) + 1
    common = max(counts, key=counts.get)  # a frequent token: rows stop at scattered steps
    olds = (q.generation_config.eos_token_id, l.generation_config.eos_token_id)
    q.generation_config.eos_token_id = [tok.eos_token_id, common]
    l.generation_config.eos_token_id = [tok.eos_token_id, common]
    try:
        for kw, split in ((dict(split_cost_tokens=0, prefix_cache_tokens=0), 0), (dict(prefix_cache_tokens=4096), 12)):
            ref_be = HFBackend({"q": q, "l": l}, {"q": tok, "l": tok}, max_new_tokens=24, seed=7,
                               temperature=temperature, top_p=top_p, **kw)
            ref_be.swap_remove, ref_be.attention_split_positions = False, split
            fast_be = HFBackend({"q": q, "l": l}, {"q": tok, "l": tok}, max_new_tokens=24, seed=7,
                                temperature=temperature, top_p=top_p, **kw)
            fast_be.attention_split_positions = split
            ref = [ref_be.generate([GenerationRequest(p, m) for p, m in c]) for c in calls]
            fast = [fast_be.generate([GenerationRequest(p, m) for p, m in c]) for c in calls]
            _assert_same(ref, fast)
            assert fast_be.moved_rows > 0 and ref_be.moved_rows == 0  # rows really changed places
            assert fast_be.reordered_steps > 0  # and were sampled in the original order afterwards
            lens = [len(g.response_ids) for c in fast for g in c]
            assert len(set(lens)) > 2
    finally:
        q.generation_config.eos_token_id, l.generation_config.eos_token_id = olds
