"""Rollout (method.md §1, §3 "Budgets", §5): growing search trees with the agents' policies.

- ``backend``: the generation protocol (requests in, sampled responses with log-probs out) and its explicit
  capabilities; ``hf_backend`` (transformers ``generate``, the miniature and small real runs),
  ``vllm_backend`` (one engine per policy, weight sync after updates), ``openai_backend`` (an
  OpenAI-compatible endpoint, for evaluation);
- ``runner``: many trees at once — each round every tree proposes its expansions (``mars2.search``), all the
  prompts go to the backend in one call, all the programs to the sandbox in one call, then the nodes are
  committed with their scores and feedback.

Heavy modules (torch, transformers, vllm) are imported lazily on first attribute access."""
from __future__ import annotations

import importlib
from typing import Any

from mars2.rollout.backend import BackendBase, BackendCapabilities, Generation, GenerationBackend, GenerationRequest

_LAZY = {
    "SearchRunner": "mars2.rollout.runner",
    "search_score": "mars2.rollout.runner",
    "HFBackend": "mars2.rollout.hf_backend",
    "VLLMBackend": "mars2.rollout.vllm_backend",
    "OpenAIBackend": "mars2.rollout.openai_backend",
}

__all__ = ["BackendBase", "BackendCapabilities", "Generation", "GenerationBackend", "GenerationRequest", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mars2.rollout' has no attribute {name!r}")
