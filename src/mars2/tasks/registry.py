"""Task registry: one name → one split dict ``{"warmup"|"train"|"test": [Problem, ...]}`` (method.md §9).

``minicode`` is generated in-process; the real benchmarks are read from local files by ``loaders`` (never
downloaded).
"""
from __future__ import annotations

from typing import Any, Callable

from mars2.tasks.problem import Problem


def _minicode(**kwargs: Any) -> dict[str, list[Problem]]:
    from mars2.tasks.minicode import generate_minicode

    return generate_minicode(**kwargs)


def _livecodebench(**kwargs: Any) -> dict[str, list[Problem]]:
    from mars2.tasks.loaders import load_livecodebench

    return load_livecodebench(**kwargs)


def _deepcoder(**kwargs: Any) -> dict[str, list[Problem]]:
    from mars2.tasks.loaders import load_deepcoder

    return load_deepcoder(**kwargs)


def _verl_code(**kwargs: Any) -> dict[str, list[Problem]]:
    from mars2.tasks.loaders import load_verl_code

    return load_verl_code(**kwargs)


def _humaneval(**kwargs: Any) -> dict[str, list[Problem]]:
    from mars2.tasks.loaders import load_humaneval

    return load_humaneval(**kwargs)


TASKS: dict[str, Callable[..., dict[str, list[Problem]]]] = {
    "minicode": _minicode,
    "livecodebench": _livecodebench,
    "deepcoder": _deepcoder,
    "verl_code": _verl_code,
    "humaneval": _humaneval,
}


def require_split(name: str, splits: dict[str, list[Problem]], split: str) -> list[Problem]:
    """The problems of ``split`` for a run that uses it: a split the task does not have, or one with 0
    problems, raises ``TaskDataError`` / ``EmptySplitError`` (one line; train.py / evaluate.py exit 2)."""
    from mars2.tasks.loaders import EmptySplitError, TaskDataError

    if split not in splits:
        raise TaskDataError(f"{name}: no split {split!r} (this task has: {', '.join(splits) or 'none'})")
    if not splits[split]:
        raise EmptySplitError(name, split, None, "the split is empty")
    return splits[split]


def load_task(name: str, **kwargs: Any) -> dict[str, list[Problem]]:
    """Load task ``name`` with its keyword arguments; unknown names raise ``ValueError`` listing known ones."""
    try:
        factory = TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(TASKS))}") from None
    return factory(**kwargs)
