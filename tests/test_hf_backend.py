"""HF generation backend: sampling log-probs equal teacher-forced ones, batching, eos, seeds (method.md §5)."""
from __future__ import annotations

import math

import pytest
import torch

from mars2.rollout.backend import GenerationRequest
from mars2.rollout.hf_backend import HFBackend, sampling_logprobs
from mars2.agents.models import PolicySpec, build_policy
from mars2.agents.tokenizer import build_tiny_tokenizer

CORPUS = [
    "Given a list of integers xs: keep only the even numbers, then return the sum.",
    "def solve(xs):\n    xs = [x for x in xs if x % 2 == 0]\n    return sum(xs)",
    "Given a string s: reverse it, then return the length.",
] * 20
SYSTEM = {"role": "system", "content": "You write short and direct Python code."}


def _msgs(text: str) -> list[dict[str, str]]:
    return [SYSTEM, {"role": "user", "content": text}]


PROMPTS = [
    "Sum xs.",
    "Given a list of integers xs: keep only the even numbers, then return the sum.",
    "Reverse it.",
    "Given a string s: reverse it, then return the length. Answer with one ```python code block.",
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    tok = build_tiny_tokenizer(CORPUS, vocab_size=512, cache_dir=tmp_path_factory.mktemp("tok"))
    # Untied embeddings: a random tied model greedily repeats its last input token, which would make the
    # greedy comparisons below vacuous.
    q, _ = build_policy(PolicySpec("q", "qwen3", 64, 2, 2, 1, 32, 128, seed=1, tie_embeddings=False), tok)
    l, _ = build_policy(PolicySpec("l", "llama", 64, 2, 2, 2, 32, 128, seed=2, tie_embeddings=False), tok)
    return tok, q, l


def _teacher_forced(model, g, temperature=1.0, top_p=1.0) -> torch.Tensor:
    ids = torch.tensor([g.prompt_ids + g.response_ids])
    with torch.no_grad():
        logits = model(ids).logits[0, len(g.prompt_ids) - 1 : -1]
    lp = sampling_logprobs(logits, temperature, top_p)
    return lp.gather(-1, torch.tensor(g.response_ids)[:, None]).squeeze(-1)


def test_sampling_logprobs_nucleus_by_hand() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    full = sampling_logprobs(logits)
    assert torch.allclose(full.exp(), torch.tensor([[0.5, 0.3, 0.15, 0.05]]), atol=1e-6)
    # top_p=0.7: mass before token 2 is 0.8 >= 0.7 → kept {0, 1}, renormalised to 0.5/0.8, 0.3/0.8
    nuc = sampling_logprobs(logits, top_p=0.7).exp()
    assert torch.allclose(nuc, torch.tensor([[0.625, 0.375, 0.0, 0.0]]), atol=1e-6)
    # temperature 2: softmax(log p / 2) ∝ sqrt(p)
    s = torch.sqrt(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert torch.allclose(sampling_logprobs(logits, temperature=2.0).exp()[0], s / s.sum(), atol=1e-6)


@pytest.mark.parametrize("temperature,top_p", [(1.0, 1.0), (0.7, 1.0), (1.0, 0.9)])
def test_logprobs_equal_teacher_forced(setup, temperature: float, top_p: float) -> None:
    tok, q, _ = setup
    be = HFBackend({"q": q}, {"q": tok}, max_new_tokens=24, temperature=temperature, top_p=top_p, seed=3)
    gens = be.generate([GenerationRequest("q", _msgs(p)) for p in PROMPTS])
    assert len(gens) == len(PROMPTS)
    for g in gens:
        assert len(g.logprobs) == len(g.response_ids) > 0
        assert all(math.isfinite(x) and x <= 0 for x in g.logprobs)
        ref = _teacher_forced(q, g, temperature, top_p)
        assert torch.allclose(torch.tensor(g.logprobs), ref, atol=1e-4), (g.logprobs, ref.tolist())


def test_prompt_ids_are_the_chat_template(setup) -> None:
    tok, q, _ = setup
    be = HFBackend({"q": q}, {"q": tok}, max_new_tokens=2)
    g = be.generate([GenerationRequest("q", _msgs("Sum xs."))])[0]
    text = "<|im_start|>system\nYou write short and direct Python code.<|im_end|>\n<|im_start|>user\nSum xs.<|im_end|>\n<|im_start|>assistant\n"
    assert g.prompt_ids == tok(text, add_special_tokens=False)["input_ids"]


def test_left_padding_does_not_change_greedy_outputs(setup) -> None:
    tok, q, _ = setup
    be = HFBackend({"q": q}, {"q": tok}, max_new_tokens=20, greedy=True)
    reqs = [GenerationRequest("q", _msgs(p)) for p in PROMPTS]
    assert len({len(be.prompt_ids("q", r.messages)) for r in reqs}) == len(reqs)  # really padded
    batched = be.generate(reqs)
    assert all(len(set(b.response_ids)) > 1 for b in batched)  # non-degenerate continuations
    for r, b in zip(reqs, batched):
        single = be.generate([r])[0]
        assert single.response_ids == b.response_ids
        assert single.prompt_ids == b.prompt_ids
        assert max(abs(x - y) for x, y in zip(single.logprobs, b.logprobs)) < 1e-4


def test_eos_and_truncation(setup) -> None:
    tok, q, _ = setup
    req = GenerationRequest("q", _msgs("Sum xs."))
    be = HFBackend({"q": q}, {"q": tok}, max_new_tokens=12, greedy=True)
    free = be.generate([req])[0]
    assert free.truncated and len(free.response_ids) == 12  # random model: no eos within 12 tokens
    assert tok.eos_token_id not in free.response_ids
    # Declare the 4th generated token an end-of-turn token: generation must stop right there.
    stop = free.response_ids[3]
    first = free.response_ids.index(stop)
    old = q.generation_config.eos_token_id
    q.generation_config.eos_token_id = [tok.eos_token_id, stop]
    try:
        g = be.generate([req])[0]
    finally:
        q.generation_config.eos_token_id = old
    assert g.response_ids == free.response_ids[: first + 1]
    assert not g.truncated
    assert g.text == tok.decode(g.response_ids, skip_special_tokens=True)


def test_two_policies_in_one_call_keep_order(setup) -> None:
    tok, q, l = setup
    be = HFBackend({"q": q, "l": l}, {"q": tok, "l": tok}, max_new_tokens=10, greedy=True, max_batch_size=2)
    pids = ["l", "q", "q", "l", "q"]
    reqs = [GenerationRequest(pid, _msgs(PROMPTS[i % 4])) for i, pid in enumerate(pids)]
    out = be.generate(reqs)
    for r, g in zip(reqs, out):
        assert g.meta["policy_id"] == r.policy_id
        alone = be.generate([r])[0]
        assert alone.response_ids == g.response_ids
    # the two random models disagree on the same prompt (so the check above is not vacuous)
    same_prompt = be.generate([GenerationRequest("q", _msgs("Sum xs.")), GenerationRequest("l", _msgs("Sum xs."))])
    assert same_prompt[0].response_ids != same_prompt[1].response_ids
    with pytest.raises(KeyError, match="unknown policy"):
        be.generate([GenerationRequest("zz", _msgs("x"))])


def test_seeded_reproducible_and_mode_restored(setup) -> None:
    tok, q, _ = setup
    reqs = [GenerationRequest("q", _msgs(p)) for p in PROMPTS]
    q.train()
    a1 = HFBackend({"q": q}, {"q": tok}, max_new_tokens=16, seed=5)
    a2 = HFBackend({"q": q}, {"q": tok}, max_new_tokens=16, seed=5)
    first = [g.response_ids for g in a1.generate(reqs)]
    assert q.training  # previous mode restored
    assert first == [g.response_ids for g in a2.generate(reqs)]  # same seed, same call index
    second = [g.response_ids for g in a1.generate(reqs)]
    assert second != first  # next call, next random stream
    other = [g.response_ids for g in HFBackend({"q": q}, {"q": tok}, max_new_tokens=16, seed=6).generate(reqs)]
    assert other != first
    q.eval()
    assert a1.tokens_generated == sum(len(r) for r in first + second)


def test_padding_batches_split_long_prompts_off_when_padding_costs_more():
    from mars2.rollout.hf_backend import padding_batches

    fresh, refine = [84] * 16, [190] * 5
    assert padding_batches(fresh + refine, 64, 512) == [(0, 16), (16, 21)]  # 16*84+5*190+2*512 < 21*190+512
    assert padding_batches(fresh + refine, 64, 0) == [(0, 21)]  # disabled: max_batch chunks only
    assert padding_batches([80, 81, 82, 83], 64, 512) == [(0, 4)]  # similar lengths stay together
    assert padding_batches(list(range(10)), 4, 0) == [(0, 4), (4, 8), (8, 10)]
    assert all(b - a <= 3 for a, b in padding_batches(list(range(10)), 3, 512))
    assert padding_batches([], 8, 512) == []
