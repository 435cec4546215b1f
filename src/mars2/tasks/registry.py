"""Task registry: one name → one split dict ``{"warmup"|"train"|"test": [Problem, ...]}`` (method.md §9).

``minicode`` is generated in-process; the real benchmarks are read from local files by ``loaders`` (never
downloaded).
"""
from __future__ import annotations

import importlib
from typing import Any, Callable

from mars2.tasks.problem import Problem


# task name → the function that loads it (module, name; imported on first use). Its keyword arguments are the
# ``task.*`` keys of conf/task/<name>.yaml (the start-up validation reads its signature: mars2.schema).
LOADERS: dict[str, tuple[str, str]] = {
    "minicode": ("mars2.tasks.minicode", "generate_minicode"),
    "livecodebench": ("mars2.tasks.loaders", "load_livecodebench"),
    "deepcoder": ("mars2.tasks.loaders", "load_deepcoder"),
    "verl_code": ("mars2.tasks.loaders", "load_verl_code"),
    "humaneval": ("mars2.tasks.loaders", "load_humaneval"),
}


# problem source → its probe-input generator (module, name): extra inputs beyond a problem's tests, with the
# reference's outputs, for the behavioural diversity measures (EC@K, DA@K; method.md §7). A source without one
# (the real benchmarks carry no reference program to compute outputs) gets no probes.
PROBES: dict[str, tuple[str, str]] = {
    "minicode": ("mars2.tasks.minicode", "probe_tests"),
}


def probe_tests(problem: Problem, n: int, seed: int = 0) -> list:
    """``n`` probe tests for ``problem`` from its source's generator (``PROBES``); ``[]`` when it has none."""
    spec = PROBES.get(problem.source)
    if spec is None or n <= 0:
        return []
    return getattr(importlib.import_module(spec[0]), spec[1])(problem, n, seed)


def task_loader(name: str) -> Callable[..., dict[str, list[Problem]]]:
    """The loader of task ``name``; unknown names raise ``ValueError`` listing known ones."""
    try:
        module, fn = LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(sorted(LOADERS))}") from None
    return getattr(importlib.import_module(module), fn)


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
    return task_loader(name)(**kwargs)
