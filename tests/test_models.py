"""Tiny policies of the real architectures; real-format save/load; missing weights (method.md §8)."""
from __future__ import annotations

import pytest
import torch

from mars2.agents.models import ModelNotFoundError, PolicySpec, build_policy, count_parameters
from mars2.agents.tokenizer import build_tiny_tokenizer

CORPUS = [
    "Given a list of integers xs: keep only the even numbers, then return the sum.",
    "def solve(xs):\n    xs = [x for x in xs if x % 2 == 0]\n    return sum(xs)",
] * 20

QWEN = PolicySpec("qwen3_a", "qwen3", hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=32,
                  intermediate_size=384, seed=1)
LLAMA = PolicySpec("llama_a", "llama", hidden_size=160, num_layers=3, num_heads=5, num_kv_heads=5, head_dim=32,
                   intermediate_size=320, seed=2)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return build_tiny_tokenizer(CORPUS, vocab_size=512, cache_dir=tmp_path_factory.mktemp("tok"))


def _expected_params(spec: PolicySpec, vocab: int) -> int:
    """Hand count: tied embedding, per layer q/k/v/o + SwiGLU MLP + 2 RMSNorms (+ q/k norms in Qwen3)."""
    h, hd = spec.hidden_size, spec.head_dim
    attn = h * spec.num_heads * hd * 2 + h * spec.num_kv_heads * hd * 2
    mlp = 3 * h * spec.intermediate_size
    norms = 2 * h + (2 * hd if spec.arch == "qwen3" else 0)
    return vocab * h + spec.num_layers * (attn + mlp + norms) + h


@pytest.mark.parametrize("spec", [QWEN, LLAMA], ids=["qwen3", "llama"])
def test_tiny_policy_builds_offline_and_generates(spec: PolicySpec, tok) -> None:
    model, tok2 = build_policy(spec, tok)
    assert tok2 is tok
    assert type(model).__name__ == {"qwen3": "Qwen3ForCausalLM", "llama": "LlamaForCausalLM"}[spec.arch]
    n = count_parameters(model)
    assert n == _expected_params(spec, len(tok))
    assert 0.5e6 < n < 1.5e6  # "about 1 M" presets
    assert model.config.eos_token_id == tok.eos_token_id == model.generation_config.eos_token_id
    assert model.config.pad_token_id == tok.pad_token_id == model.generation_config.pad_token_id
    assert not model.training
    ids = tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False)
    enc = tok(ids, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=5, do_sample=False)
    assert out.shape[1] <= enc["input_ids"].shape[1] + 5


def test_seeded_init_and_global_rng_untouched(tok) -> None:
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, _ = build_policy(QWEN, tok)
    after = torch.rand(1)
    assert torch.equal(before, after)  # building a policy did not consume the caller's RNG
    b, _ = build_policy(QWEN, tok)
    c, _ = build_policy(PolicySpec(**{**QWEN.__dict__, "seed": 7}), tok)
    wa, wb, wc = (m.model.layers[0].self_attn.q_proj.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_bad_arch_and_missing_tokenizer(tok) -> None:
    with pytest.raises(ValueError, match="arch"):
        build_policy(PolicySpec("x", arch="gpt2"), tok)
    with pytest.raises(ValueError, match="tiny tokenizer"):
        build_policy(QWEN)


def test_real_format_save_and_load(tmp_path, tok) -> None:
    model, _ = build_policy(LLAMA, tok)
    model.save_pretrained(tmp_path / "llama_a")
    tok.save_pretrained(tmp_path / "llama_a")
    loaded, ltok = build_policy(PolicySpec("llama_a", path=str(tmp_path / "llama_a")))
    assert type(loaded).__name__ == "LlamaForCausalLM"
    assert ltok.chat_template == tok.chat_template and ltok.padding_side == "left"
    assert ltok.eos_token_id == tok.eos_token_id
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, loaded(ids).logits, atol=1e-6)


def test_missing_weights_raise_one_line_error(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    where = tmp_path / "models" / "Qwen3-8B"
    with pytest.raises(ModelNotFoundError) as e:
        build_policy(PolicySpec("qwen3_8b", hf_id="Qwen/Qwen3-8B", path=str(where)))
    msg = str(e.value)
    assert "\n" not in msg
    assert "Qwen/Qwen3-8B" in msg and str(where) in msg
    with pytest.raises(ModelNotFoundError, match="AReaL-boba-2-8B"):
        build_policy(PolicySpec("areal", hf_id="inclusionAI/AReaL-boba-2-8B"))
