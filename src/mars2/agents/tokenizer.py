"""The tiny policies' tokenizer: a byte-level BPE trained offline on the minicode corpus, wrapped as a
`PreTrainedTokenizerFast` with a Qwen-style chat template (design.md "The miniature world").

Why a real tokenizer object: prompts for tiny models go through exactly the same
``tokenizer.apply_chat_template(messages, add_generation_prompt=True)`` call as for real chat checkpoints
(design.md principle 2), so the generation backend and the trainer never special-case the miniature.

- Byte-level BPE (GPT-2/Qwen style): every byte is in the base alphabet, so text with characters never
  seen in training still encodes (as byte tokens) and decodes back exactly.
- Special tokens: ``<|endoftext|>`` (pad), ``<|im_start|>``, ``<|im_end|>`` (end of turn = eos).
- An extra corpus (prompt boilerplate of `mars2.agents.prompts`, the configured role prompts — the caller
  passes them, `mars2.cli.build` those of ``roles`` — and sandbox-feedback wording; :func:`extra_corpus`)
  is added to the caller's corpus, repeated, so the words every prompt uses become single tokens.
- Deterministic: the trainer is single-threaded here and the corpus order is fixed, so the same corpus
  gives the same vocabulary; the result is cached under ``cache_dir`` by a hash of (vocab size, corpus,
  extra corpus with the role prompts, format version). Never touches the network.
"""
from __future__ import annotations

import hashlib
import json
import os
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

from mars2.agents.prompts import ANSWER_FORMAT, NO_CODE

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = [PAD_TOKEN, IM_START, IM_END]

# Qwen2/Qwen3 chat format without the automatic default system message and without thinking blocks.
# Unknown keyword arguments (``enable_thinking``) are ignored by Jinja, so callers may pass them to every
# template, tiny or real.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# Bump when the tokenizer recipe changes, so stale caches are not reused.
_FORMAT_VERSION = 2
# How often the fixed extra corpus is repeated relative to the caller's corpus: prompt boilerplate occurs
# in every prompt, so it must weigh like that in the merge statistics.
_EXTRA_REPEAT = 40

# Wording that appears in prompts but not in problem statements / reference programs: answer code blocks,
# (then the caller's role prompts,) generic assistant wording, sandbox feedback wording.
_CODE_TEXTS: tuple[str, ...] = (
    "```python\ndef solve(xs):\n    return xs\n```",
    "```python\nxs = list(map(int, input().split()))\nprint(' '.join(map(str, xs)))\n```",
)
_ASSISTANT_TEXTS: tuple[str, ...] = ("You are a helpful assistant.",)
_FEEDBACK_TEXTS: tuple[str, ...] = (
    # sandbox feedback wording (mars2.sandbox.feedback: vanilla and T+)
    "Test 1: Result: Correct\nTest 2: Result: Wrong\nTest 3: Result: Correct\n",
    "The program is correct for 1 of 3 tests.",
    "The program is correct for 0 of 2 tests.",
    "The program is correct for 2 of 3 tests.\nTest 3 failed.\nInput: [1, 2, 3]\nExpected: [2, 4, 6]\nActual: [1, 2, 3]\n",
    "Test 1 failed.\nInput: 'abc'\nExpected: 3\nActual: None\n",
    "No code found in the response.\n... (4 more tests)\n",
    "Error: Traceback (most recent call last):\n  File \"<string>\", line 3, in solve\n",
    "NameError: name 'x' is not defined\nTypeError: unsupported operand\nIndexError: list index out of range\n",
    "ValueError: invalid literal for int()\nZeroDivisionError: integer division or modulo by zero\n",
    "SyntaxError: invalid syntax\nRuntimeError\nAttributeError\nKeyError\n",
    "Time limit exceeded (2 s).\nMemory limit exceeded.\nOutput limit exceeded.\n",
    "wrong answer, runtime error, timeout, passed\n",
)


@lru_cache(maxsize=1)
def _prompt_boilerplate() -> tuple[str, ...]:
    """The exact user-message scaffolding of `mars2.agents.prompts` (fresh and refinement, functional and
    stdin), rendered around placeholder statements, so its words merge exactly as they occur in prompts."""
    from mars2.agents.base import AgentSpec
    from mars2.agents.prompts import fresh_messages, refine_messages
    from mars2.tasks.problem import Problem

    agent = AgentSpec(name="a", role_prompt="", policy_id="p")
    probs = [
        Problem(id="f", statement="Given a list of integers xs: return the sum.", mode="functional", public_tests=(),
                hidden_tests=(), entry_point="solve", starter_code="def solve(xs):"),
        Problem(id="g", statement="Given a string s: return the result.", mode="functional", public_tests=(),
                hidden_tests=(), entry_point="solve", starter_code="def solve(s):"),
        Problem(id="s", statement="Read a line of space-separated integers xs: print the sum.", mode="stdin",
                public_tests=(), hidden_tests=()),
    ]
    out: list[str] = []
    for p in probs:
        out += [m["content"] for m in fresh_messages(p, agent)]
        out += [m["content"] for m in refine_messages(p, agent, "def solve(xs):\n    return xs", "Feedback text.")]
        out += [m["content"] for m in refine_messages(p, agent, None, "no code found")]
    return tuple(out)


def extra_corpus(role_prompts: Sequence[str] = ()) -> tuple[str, ...]:
    """The fixed texts added to every tokenizer corpus (repeated ``_EXTRA_REPEAT`` times): the prompt
    boilerplate, the answer format, code blocks, the agents' ``role_prompts`` (the configured ``roles``, in
    their order), generic assistant wording and sandbox feedback wording."""
    return (_prompt_boilerplate() + (ANSWER_FORMAT, NO_CODE) + _CODE_TEXTS + tuple(role_prompts)
            + _ASSISTANT_TEXTS + _FEEDBACK_TEXTS)


def corpus_hash(corpus: Iterable[str], vocab_size: int, role_prompts: Sequence[str] = ()) -> str:
    """Hash of everything that determines the trained vocabulary (cache key), the role prompts included."""
    h = hashlib.sha256()
    h.update(f"v{_FORMAT_VERSION}|{vocab_size}|{_EXTRA_REPEAT}|".encode())
    for text in extra_corpus(role_prompts):
        h.update(text.encode("utf-8", "surrogatepass") + b"\x00")
    h.update(b"\x01")
    for text in corpus:
        h.update(text.encode("utf-8", "surrogatepass") + b"\x00")
    return h.hexdigest()[:16]


def _train_backend(corpus: list[str], vocab_size: int, extra: Sequence[str]):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    # GPT-2 / Qwen-style pre-tokenisation: merges never cross word boundaries, so the tiny vocabulary
    # looks like a real one (whole words, indentation runs, operators). add_prefix_space=False: a prompt's
    # first word encodes the same way whether or not it follows a special token (as in Qwen's tokenizer).
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # all 256 bytes: the byte fallback
        show_progress=False,
    )
    texts = list(corpus) + list(extra) * _EXTRA_REPEAT
    tok.train_from_iterator(texts, trainer=trainer, length=len(texts))
    return tok


def _wrap(backend) -> "PreTrainedTokenizerFast":  # noqa: F821 - imported lazily
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token=PAD_TOKEN,
        eos_token=IM_END,
        unk_token=None,
        bos_token=None,
        additional_special_tokens=[IM_START],
        padding_side="left",  # generation batches are left-padded
        model_max_length=1024,
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_tiny_tokenizer(
    corpus: Iterable[str], vocab_size: int = 1024, cache_dir: str | Path | None = None,
    role_prompts: Sequence[str] = (),
) -> "PreTrainedTokenizerFast":  # noqa: F821
    """Train (or load from ``cache_dir``) the byte-level BPE tokenizer of the tiny policies.

    ``role_prompts``: the agents' system prompts (the configured ``roles``), added to the extra corpus so
    their words become tokens; they are part of the cache key (other roles → another tokenizer).

    The returned tokenizer has ``pad_token=<|endoftext|>``, ``eos_token=<|im_end|>``, left padding and a
    Qwen-style chat template, so ``apply_chat_template(messages, add_generation_prompt=True)`` ends with
    ``<|im_start|>assistant\\n`` exactly like a real Qwen checkpoint with thinking disabled."""
    from tokenizers import Tokenizer

    corpus = list(corpus)
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must be >= {256 + len(SPECIAL_TOKENS)} (bytes + special tokens), got {vocab_size}")
    role_prompts = [role_prompts] if isinstance(role_prompts, str) else [str(r) for r in role_prompts]
    key = corpus_hash(corpus, vocab_size, role_prompts)
    path = Path(cache_dir) / f"tiny_bpe_{vocab_size}_{key}.json" if cache_dir is not None else None
    if path is not None and path.is_file():
        return _wrap(Tokenizer.from_file(str(path)))
    # The BPE trainer parallelises over words with rayon; a single thread keeps tie-breaking reproducible
    # and is fast enough for this corpus (well under a second).
    old = os.environ.get("RAYON_NUM_THREADS")
    os.environ["RAYON_NUM_THREADS"] = "1"
    try:
        backend = _train_backend(corpus, vocab_size, extra_corpus(role_prompts))
    finally:
        if old is None:
            os.environ.pop("RAYON_NUM_THREADS", None)
        else:
            os.environ["RAYON_NUM_THREADS"] = old
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        backend.save(str(tmp))
        os.replace(tmp, path)  # atomic: concurrent builders never read a half-written file
    return _wrap(backend)


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of a tokenizer's vocabulary, merges and chat template (for warm-start cache keys)."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode())
    else:  # slow tokenizers: the vocabulary is what matters
        h.update(json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    h.update(str(getattr(tokenizer, "chat_template", "")).encode())
    return h.hexdigest()[:16]
