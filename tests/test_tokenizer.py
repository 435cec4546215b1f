"""Tiny BPE tokenizer: determinism, cache, chat template, byte fallback (design.md "The miniature world")."""
from __future__ import annotations

import pytest

from mars2.agents.prompts import ANSWER_FORMAT
from mars2.agents.tokenizer import IM_END, IM_START, PAD_TOKEN, build_tiny_tokenizer, corpus_hash

CORPUS = [
    "Given a list of integers xs: keep only the even numbers, then return the sum.",
    "def solve(xs):\n    xs = [x for x in xs if x % 2 == 0]\n    return sum(xs)",
    "Given a string s: reverse it, then return the length.",
    "def solve(s):\n    s = s[::-1]\n    return len(s)",
] * 20


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    return build_tiny_tokenizer(CORPUS, vocab_size=512, cache_dir=tmp_path_factory.mktemp("tok"))


def test_deterministic_and_cached(tmp_path) -> None:
    a = build_tiny_tokenizer(CORPUS, vocab_size=512)
    b = build_tiny_tokenizer(CORPUS, vocab_size=512)
    assert a.backend_tokenizer.to_str() == b.backend_tokenizer.to_str()
    c = build_tiny_tokenizer(CORPUS, vocab_size=512, cache_dir=tmp_path)
    files = list(tmp_path.glob("tiny_bpe_512_*.json"))
    assert len(files) == 1
    d = build_tiny_tokenizer(CORPUS, vocab_size=512, cache_dir=tmp_path)  # cache hit
    assert c.backend_tokenizer.to_str() == d.backend_tokenizer.to_str() == a.backend_tokenizer.to_str()
    # a different corpus or vocabulary size is a different cache entry
    assert corpus_hash(CORPUS, 512) != corpus_hash(CORPUS[:-1], 512)
    assert corpus_hash(CORPUS, 512) != corpus_hash(CORPUS, 600)


def test_special_tokens(tok) -> None:
    assert len(tok) <= 512
    assert tok.convert_tokens_to_ids([PAD_TOKEN, IM_START, IM_END]) == [0, 1, 2]
    assert tok.pad_token_id == 0 and tok.eos_token_id == 2
    assert tok.padding_side == "left"
    # special tokens in text are single ids, never split into bytes
    assert tok("<|im_start|>user\nhi<|im_end|>", add_special_tokens=False)["input_ids"][0] == 1
    assert tok("hi<|im_end|>", add_special_tokens=False)["input_ids"][-1] == 2
    # no BOS/EOS added implicitly
    ids = tok("return", add_special_tokens=True)["input_ids"]
    assert 0 not in ids and 1 not in ids and 2 not in ids


def test_chat_template_matches_qwen_format(tok) -> None:
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Sum xs."}]
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, enable_thinking=False)
    assert text == (
        "<|im_start|>system\nYou are terse.<|im_end|>\n"
        "<|im_start|>user\nSum xs.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    no_gen = tok.apply_chat_template(messages, add_generation_prompt=False, tokenize=False)
    assert no_gen == text[: -len("<|im_start|>assistant\n")]
    # round trip through ids (special tokens kept when asked)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    assert tok.decode(ids, skip_special_tokens=True) == "system\nYou are terse.\nuser\nSum xs.\nassistant\n"


def test_byte_fallback_for_unseen_characters(tok) -> None:
    text = "naïve → 漢字 ✓ \t\x00 emoji 🙂"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.unk_token_id is None
    assert tok.decode(ids) == text


def test_prompt_boilerplate_is_cheap(tok) -> None:
    # The fixed extra corpus makes prompt words single tokens even though CORPUS never contains them.
    for word in (" Answer", "python", " Python", " program", "Feedback", " block"):
        assert len(tok(word, add_special_tokens=False)["input_ids"]) == 1, word
    assert len(tok(ANSWER_FORMAT, add_special_tokens=False)["input_ids"]) <= 8


def test_vocab_size_too_small() -> None:
    with pytest.raises(ValueError, match="vocab_size"):
        build_tiny_tokenizer(CORPUS, vocab_size=100)


# Computed with the pre-refactor tokenizer (role prompts hard-coded) on CORPUS at vocab_size=512, i.e.
# ``corpus_hash(CORPUS, 512)`` and the fingerprint of ``build_tiny_tokenizer(CORPUS, 512)`` at commit af095f8
# (they depend on the `tokenizers` version's serialisation: recompute only on an upgrade of it).
CORPUS_HASH_BEFORE = "40c1171f2251e021"
FINGERPRINT_BEFORE = "006086b22cf901ae"


def _default_roles() -> list[str]:
    import yaml
    from pathlib import Path

    conf = Path(__file__).resolve().parents[1] / "conf" / "roles" / "default.yaml"
    return [r["prompt"] for r in yaml.safe_load(conf.read_text())["roles"]]


def test_extra_corpus_takes_the_configured_role_prompts(tmp_path) -> None:
    """Issue 20.4: the role prompts come from the caller (the config's ``roles``), not from a copy. With the
    default roles the extra corpus is the one the hard-coded copy gave (same strings, same positions), so
    the tokenizer and its cache key did not change; other roles give another tokenizer under another key."""
    from mars2.agents.tokenizer import extra_corpus, tokenizer_fingerprint

    roles = _default_roles()
    ex = extra_corpus(roles)
    i = ex.index("```python\nxs = list(map(int, input().split()))\nprint(' '.join(map(str, xs)))\n```") + 1
    assert list(ex[i : i + len(roles)]) == roles and ex[i + len(roles)] == "You are a helpful assistant."
    assert extra_corpus(()) == ex[:i] + ex[i + len(roles):]
    assert corpus_hash(CORPUS, 512, roles) != corpus_hash(CORPUS, 512)
    # pinned: computed with the pre-refactor code (hard-coded role prompts) on this corpus
    assert corpus_hash(CORPUS, 512, roles) == CORPUS_HASH_BEFORE, "default-role tokenizer cache key changed"
    base = build_tiny_tokenizer(CORPUS, vocab_size=512, cache_dir=tmp_path, role_prompts=roles)
    assert tokenizer_fingerprint(base) == FINGERPRINT_BEFORE
    other = build_tiny_tokenizer(CORPUS, vocab_size=512, cache_dir=tmp_path,
                                 role_prompts=["You are a meticulous quokka reviewer of quokka programs."])
    assert len(list(tmp_path.glob("tiny_bpe_512_*.json"))) == 2  # another cache entry
    assert tokenizer_fingerprint(other) != tokenizer_fingerprint(base)
    assert len(other(" quokka", add_special_tokens=False)["input_ids"]) == 1  # the role's words became tokens
    assert len(base(" quokka", add_special_tokens=False)["input_ids"]) > 1
