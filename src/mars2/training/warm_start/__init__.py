"""Supervised warm start of the tiny policies on minicode warm-up problems (design.md "The miniature world").

A random-init tiny model cannot produce a single passing program, so RL would see only zero rewards. The
warm start teaches the two behaviours the search uses (method.md §1), in *exactly* the prompt formats of
`mars2.agents.prompts` and through the policy's chat template, so training and search prompts are
identical:

- **fresh**: ``fresh_messages(problem, agent)`` → ``format_response(reference)``;
- **refinement** (repair as a skill): ``refine_messages(problem, agent, buggy, feedback)`` →
  ``format_response(reference)``, where ``buggy`` is a realistic near miss of the reference — a mutation
  (:data:`CORRUPTIONS`: a missing step, swapped steps, an off-by-one or otherwise wrong constant, a wrong
  operator or primitive call, a wrong comparison, or a line of another problem's reference, the phrase→line
  mistake a tiny model makes) that fails at least one public test — and ``feedback`` is the *real* sandbox
  feedback of that program on the public tests, formatted by the search's own formatter
  (``mars2.sandbox.feedback.format_feedback``) in **every** style of ``feedback_styles`` (vanilla and T+ by
  default: one example per style for each buggy program), capped at the search's ``feedback_max_chars``.
  A share (``harvest_share``) of the refinement examples are the policy's *own* failures, sampled from it
  during the warm start (``harvest_at``), with their real feedback in every style.

The agent's system prompt is drawn per example from ``role_prompts`` so every role prompt is seen in
training. Loss is the token mean of the cross-entropy on response tokens (the response and its end-of-turn
token; the prompt is masked). AdamW, linear warm-up then cosine decay to 10 % of ``lr``. The final weights
are cached by a hash of (initial weights, model config, tokenizer, config, problems, role prompts); a
partial checkpoint every ``checkpoint_every`` steps makes an interrupted warm start resume.

Modules: :mod:`.config` (``WarmStartConfig``, the recipe version), :mod:`.corruptions` (the buggy programs of
the repair examples: corruptions, twin readings, the policy's own failures, with real sandbox feedback),
:mod:`.data` (problem selection and weights, examples encoded with the backends' prompt builder, batches,
the response loss), :mod:`.loop` (the optimisation loop, the cache by key, its lock, resume, parallel
processes).
"""
from __future__ import annotations

from mars2.training.warm_start.config import WARM_START_VERSION, WarmStartConfig
from mars2.training.warm_start.corruptions import (
    CORRUPTIONS,
    _donor_lines,
    build_refine_pool,
    corrupt_program,
    harvest_failures,
)
from mars2.training.warm_start.data import (
    _accumulate,
    _batch,
    _encode,
    _Examples,
    batch_indices,
    depth_weights,
    fresh_examples,
    repair_examples,
    response_loss_sum,
    select_problems,
)
from mars2.training.warm_start.loop import (
    _cache_lock,
    _cached,
    _params_digest,
    cache_key,
    lr_factor,
    warm_start,
    warm_start_many,
)

__all__ = [
    "CORRUPTIONS",
    "WARM_START_VERSION",
    "WarmStartConfig",
    "batch_indices",
    "build_refine_pool",
    "cache_key",
    "corrupt_program",
    "depth_weights",
    "fresh_examples",
    "harvest_failures",
    "lr_factor",
    "repair_examples",
    "response_loss_sum",
    "select_problems",
    "warm_start",
    "warm_start_many",
]
