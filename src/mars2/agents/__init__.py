"""Agents (method.md §1): specs, prompts, program extraction, policies (tiny or real checkpoints), the tiny
tokenizer. The generation backends that sample the policies are ``mars2.rollout``.

Heavy modules (torch, transformers) are imported lazily on first attribute access, so that
``import mars2.agents.base`` stays cheap for the algorithm core and its tests."""
from __future__ import annotations

import importlib
from typing import Any

from mars2.agents.base import AgentSpec

_LAZY = {
    "PolicySpec": "mars2.agents.models",
    "build_policy": "mars2.agents.models",
    "ModelNotFoundError": "mars2.agents.models",
    "count_parameters": "mars2.agents.models",
    "build_tiny_tokenizer": "mars2.agents.tokenizer",
}

__all__ = ["AgentSpec", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'mars2.agents' has no attribute {name!r}")
