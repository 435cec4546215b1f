"""The warm start's training data (`mars2.training.warm_start`): which warm-up problems and how often
(:func:`select_problems`, :func:`depth_weights`), examples encoded with the generation backends' own prompt
builder (`mars2.rollout.hf_backend.chat_prompt_ids`, so training and search prompts are token-identical),
the batch composition of a step, padded batches with the prompt masked, and the response loss."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mars2.agents.base import AgentSpec
from mars2.agents.prompts import format_response, fresh_messages, refine_messages
from mars2.tasks.problem import Problem

def _depth(p: Problem) -> int:
    return int(p.meta.get("depth", p.difficulty))


def select_problems(problems: Sequence[Problem], depths: Sequence[int] | None) -> list[Problem]:
    """Warm-up problems with a reference solution whose depth is listed in ``depths`` (None: all)."""
    ps = [p for p in problems if p.reference_solution]
    if depths:
        keep = {int(d) for d in depths}
        ps = [p for p in ps if _depth(p) in keep]
    return ps


def depth_weights(problems: Sequence[Problem], depths: Sequence[int] | None) -> np.ndarray:
    """Sampling probability of each problem so that depth d makes up count(d in depths)/len(depths) of the
    fresh examples (``depths=[1, 2, 2, 3]`` → 25 % / 50 % / 25 %); uniform over problems when None."""
    if not depths:
        return np.full(len(problems), 1.0 / len(problems))
    mult = {int(d): 0 for d in depths}
    for d in depths:
        mult[int(d)] += 1
    per_depth = {d: sum(1 for p in problems if _depth(p) == d) for d in mult}
    w = np.array([mult[_depth(p)] / per_depth[_depth(p)] for p in problems], dtype=np.float64)
    return w / w.sum()



# ----------------------------------------------------------------------------------------------------
# Tokenised examples
# ----------------------------------------------------------------------------------------------------

@dataclass
class _Examples:
    ids: list[list[int]] = field(default_factory=list)  # prompt + response + eos
    n_prompt: list[int] = field(default_factory=list)
    source: list[int] = field(default_factory=list)  # index of the input this example came from


def _encode(tokenizer, messages: list[list[dict[str, str]]], responses: list[str], max_len: int) -> _Examples:
    """Prompt ids exactly as the generation backend builds them (chat template, generation prompt), then
    the response tokens and the end-of-turn token — the sequence the policy emits at rollout time."""
    from mars2.rollout.hf_backend import chat_prompt_ids  # the backends' own prompt builder, not a copy

    p_ids = [chat_prompt_ids(tokenizer, m) for m in messages]
    r_ids = tokenizer(responses, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    ex = _Examples()
    for k, (p, r) in enumerate(zip(p_ids, r_ids)):
        seq = list(p) + list(r) + [eos]
        if len(seq) > max_len:
            continue
        ex.ids.append(seq)
        ex.n_prompt.append(len(p))
        ex.source.append(k)
    return ex



def fresh_examples(tokenizer, problems: Sequence[Problem], agents: Sequence[AgentSpec], max_len: int) -> _Examples:
    """``fresh_messages(problem, agent)`` → ``format_response(reference)`` for every problem and agent
    (problem-major: example source ``k`` is problem ``k // len(agents)``)."""
    msgs, resp = [], []
    for p in problems:
        for a in agents:
            msgs.append(fresh_messages(p, a))
            resp.append(format_response(p.reference_solution or ""))
    return _encode(tokenizer, msgs, resp, max_len)


def repair_examples(tokenizer, items: Sequence[tuple[Problem, AgentSpec, str | None, str]], max_len: int) -> _Examples:
    """``refine_messages(problem, agent, buggy, feedback)`` → ``format_response(reference)`` for every
    (problem, agent, buggy program, feedback) of ``items`` (`mars2.training.warm_start.corruptions`)."""
    return _encode(tokenizer, [refine_messages(p, a, prog, fb) for p, a, prog, fb in items],
                   [format_response(p.reference_solution or "") for p, _, _, _ in items], max_len)


def fresh_probabilities(fresh: _Examples, problem_weights: np.ndarray, n_agents: int) -> np.ndarray:
    """Sampling probability of each fresh example: its problem's weight, renormalised over the examples kept
    (fresh example ``k`` came from problem ``fresh.source[k] // n_agents``)."""
    p = np.array([problem_weights[k // n_agents] for k in fresh.source])
    return p / p.sum()


def batch_indices(data_seed: int, step: int, fresh_p: np.ndarray, n_fresh: int, n_refine: int, harvest_share: float,
                  n_f: int, n_c: int, n_s: int) -> list[int]:
    """Example indices of one step's batch: ``n_fresh`` fresh examples drawn with ``fresh_p`` and ``n_refine``
    repair examples, ``harvest_share`` of them the policy's own failures once there are any. Examples are
    numbered fresh (``n_f``), then corrupted (``n_c``), then self-made failures (``n_s``). Depends only on
    (``data_seed``, ``step``) and the counts: resuming needs no RNG state."""
    g = np.random.default_rng([data_seed, step])
    idx = list(g.choice(n_f, size=n_fresh, p=fresh_p))
    if n_refine:
        n_self = int(round(n_refine * harvest_share)) if n_s else 0
        n_corr = n_refine - n_self if n_c else 0
        n_self = n_refine - n_corr if n_s else 0
        idx += list(n_f + g.integers(0, n_c, n_corr)) if n_corr else []
        idx += list(n_f + n_c + g.integers(0, n_s, n_self)) if n_self else []
    return idx


# ----------------------------------------------------------------------------------------------------
# Batches and the loss
# ----------------------------------------------------------------------------------------------------

def _batch(ex: _Examples, idx: Sequence[int], pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded input ids, attention mask and next-token targets (-100 on prompt and padding)."""
    width = max(len(ex.ids[i]) for i in idx)
    ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), width), dtype=torch.long)
    tgt = torch.full((len(idx), width), -100, dtype=torch.long)
    for r, i in enumerate(idx):
        seq = torch.tensor(ex.ids[i], dtype=torch.long)
        ids[r, : len(seq)] = seq
        mask[r, : len(seq)] = 1
        # target at position t is token t+1; response tokens start at n_prompt
        tgt[r, ex.n_prompt[i] - 1 : len(seq) - 1] = seq[ex.n_prompt[i]:]
    return ids, mask, tgt


def response_loss_sum(model, ids: torch.Tensor, mask: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy over response positions. The LM head runs only on those positions (most tokens
    are prompt), when the model exposes its decoder and output embeddings (every HF causal LM does)."""
    sel = tgt != -100
    decoder, head = getattr(model, "get_decoder", None), getattr(model, "get_output_embeddings", None)
    if decoder is not None and head is not None and decoder() is not None and head() is not None:
        hidden = decoder()(input_ids=ids, attention_mask=mask).last_hidden_state
        logits = head()(hidden[sel])
        return F.cross_entropy(logits.float(), tgt[sel], reduction="sum")
    logits = model(input_ids=ids, attention_mask=mask).logits
    return F.cross_entropy(logits.float()[sel], tgt[sel], reduction="sum")


def _accumulate(model, ex: _Examples, idx: list[int], pad: int, micro: int) -> torch.Tensor:
    """Gradients of the token-mean response loss of one batch, accumulated over length-sorted micro-batches.

    Why: fresh prompts (~120 tokens) and refinement prompts (~200) mixed in one padded batch waste about half
    the compute on padding; sorting by length and padding each micro-batch separately roughly halves the
    step time on CPU. The sum over micro-batches divided by the batch's response-token count equals the
    token mean over the whole batch."""
    idx = sorted(idx, key=lambda i: len(ex.ids[i]))
    n_tok = sum(len(ex.ids[i]) - ex.n_prompt[i] for i in idx)
    model.zero_grad(set_to_none=True)
    total = 0.0
    step = max(1, micro) if micro > 0 else len(idx)
    for s in range(0, len(idx), step):
        ids, mask, tgt = _batch(ex, idx[s : s + step], pad)
        part = response_loss_sum(model, ids, mask, tgt) / n_tok
        part.backward()
        total += float(part.detach())
    return torch.tensor(total)

