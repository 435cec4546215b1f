"""`python -m mars2.tasks stats task=<name> [task.<key>=<value> ...]`: load a task exactly as train.py /
evaluate.py would (the same conf/task/<name>.yaml, the same loader) and print its problem counts per split,
difficulty and execution mode, the test counts, and what the loader read (rows, filtered, malformed).

Plain Python + OmegaConf (no Hydra: the algorithm core stays framework-free): conf/task/<name>.yaml is read
with OmegaConf, ``paths.*`` are set like train.yaml sets them (``MARS2_DATA_DIR`` etc.), and ``task.<key>=
<value>`` overrides are applied as an OmegaConf dotlist (values parsed as YAML: ``task.strict=true``).
A missing, unreadable or empty file (a split with 0 problems), an unknown task, a bad ``task.*`` value or
(with ``task.strict=true``) a malformed row ends with one line on stderr and exit code 2.
"""
from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

from mars2.tasks.problem import Problem

USAGE = ("usage: python -m mars2.tasks stats task=<minicode|livecodebench|deepcoder|verl_code|humaneval> "
         "[task.<key>=<value> ...] [--json]")


def conf_dir() -> Path:
    """The repository's conf/ (``MARS2_ROOT``, else found from this file: src/mars2/tasks → repo root)."""
    root = os.environ.get("MARS2_ROOT")
    if root and (Path(root) / "conf").is_dir():
        return Path(root) / "conf"
    return Path(__file__).resolve().parents[3] / "conf"


def task_config(overrides: Sequence[str]) -> dict[str, Any]:
    """conf/task/<name>.yaml with ``paths`` as in train.yaml and the ``task.*`` overrides applied, resolved."""
    from omegaconf import OmegaConf

    name = "minicode"
    rest: list[str] = []
    for o in overrides:
        if o.startswith("task="):
            name = o.split("=", 1)[1]
        elif o.startswith("task."):
            rest.append(o)
        else:
            raise ValueError(f"unknown argument {o!r}; {USAGE}")
    path = conf_dir() / "task" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (conf_dir() / "task").glob("*.yaml"))
        raise ValueError(f"unknown task {name!r}: no {path} (known: {', '.join(known)})")
    root = os.environ.get("MARS2_ROOT", str(conf_dir().parent))
    paths = {
        "root_dir": root,
        "data_dir": os.environ.get("MARS2_DATA_DIR", f"{root}/data"),
        "models_dir": os.environ.get("MARS2_MODELS_DIR", f"{root}/models"),
        "cache_dir": os.environ.get("MARS2_CACHE_DIR", f"{root}/.cache/mars2"),
    }
    cfg = OmegaConf.merge(OmegaConf.create({"paths": paths}), {"task": OmegaConf.load(path)},
                          OmegaConf.from_dotlist(rest))
    out = OmegaConf.to_container(cfg, resolve=True)
    return dict(out["task"])  # type: ignore[index]


def split_stats(splits: Mapping[str, Sequence[Problem]]) -> dict[str, dict[str, Any]]:
    """Per split: ``problems``, ``by_difficulty``, ``by_mode``, ``by_family`` (minicode) / ``by_source``,
    mean public / hidden tests per problem, and problems without public or hidden tests."""
    out: dict[str, dict[str, Any]] = {}
    for split, probs in splits.items():
        n = len(probs)
        fam = Counter(str(p.meta.get("family")) for p in probs if p.meta.get("family"))
        out[split] = {
            "problems": n,
            "by_difficulty": dict(sorted(Counter(p.difficulty for p in probs).items())),
            "by_mode": dict(sorted(Counter(p.mode for p in probs).items())),
            "by_family": dict(sorted(fam.items())),
            "by_source": dict(sorted(Counter(p.source for p in probs).items())),
            "public_tests_mean": sum(len(p.public_tests) for p in probs) / n if n else 0.0,
            "hidden_tests_mean": sum(len(p.hidden_tests) for p in probs) / n if n else 0.0,
            "no_public_tests": sum(not p.public_tests for p in probs),
            "no_hidden_tests": sum(not p.hidden_tests for p in probs),
            "with_prelude": sum(bool(p.prelude) for p in probs),
            "prelude_lines": max((len(p.prelude.splitlines()) for p in probs), default=0),
        }
    return out


def format_stats(task: str, stats: Mapping[str, Mapping[str, Any]], report_line: str | None = None) -> str:
    """A plain-text table: one row per split, then one row per (split, difficulty, mode)."""
    lines = [f"task {task}"]
    if report_line:
        lines.append(report_line)
    head = f"{'split':<8} {'problems':>8} {'functional':>10} {'stdin':>6} {'public/pb':>9} {'hidden/pb':>9}  difficulty"
    lines.append(head)
    lines.append("-" * len(head))
    for split, s in stats.items():
        diff = " ".join(f"{d}:{n}" for d, n in s["by_difficulty"].items())
        lines.append(f"{split:<8} {s['problems']:>8} {s['by_mode'].get('functional', 0):>10} "
                     f"{s['by_mode'].get('stdin', 0):>6} {s['public_tests_mean']:>9.2f} {s['hidden_tests_mean']:>9.2f}  {diff}")
    total = sum(s["problems"] for s in stats.values())
    lines.append(f"{'total':<8} {total:>8}")
    fams = {k: s["by_family"] for k, s in stats.items() if s["by_family"]}
    if fams:
        lines.append("families: " + "; ".join(f"{k} " + " ".join(f"{f}:{n}" for f, n in v.items())
                                             for k, v in fams.items()))
    pre = sum(s.get("with_prelude", 0) for s in stats.values())
    if pre:
        k = max(s.get("prelude_lines", 0) for s in stats.values())
        lines.append(f"prelude: {pre} of {total} problems run after a {k}-line prelude (task.prelude)")
    warn = [f"{k}: {s['no_public_tests']} without public tests" for k, s in stats.items() if s["no_public_tests"]]
    warn += [f"{k}: {s['no_hidden_tests']} without hidden tests" for k, s in stats.items() if s["no_hidden_tests"]]
    if warn:
        lines.append("note: " + "; ".join(warn))
    return "\n".join(lines)


def by_difficulty_and_mode(splits: Mapping[str, Sequence[Problem]]) -> dict[str, dict[str, int]]:
    """``{split: {"<difficulty>/<mode>": count}}``."""
    return {s: dict(sorted(Counter(f"{p.difficulty}/{p.mode}" for p in ps).items())) for s, ps in splits.items()}


def main(argv: Sequence[str]) -> int:
    import logging

    from mars2.tasks.loaders import LoadReport, TaskDataError
    from mars2.tasks.registry import load_task

    args = list(argv)
    if not args or args[0] in ("-h", "--help") or args[0] != "stats":
        print(USAGE, file=sys.stderr if args and args[0] not in ("-h", "--help") else sys.stdout)
        return 0 if args and args[0] in ("-h", "--help") else 2
    as_json = "--json" in args
    args = [a for a in args[1:] if a != "--json"]
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        task = task_config(args)
        name = task.pop("name")
        report = LoadReport()
        kwargs = dict(task)
        if name != "minicode":
            kwargs["report"] = report
        splits = load_task(name, **kwargs)
    except (TaskDataError, ValueError, TypeError) as e:
        print(f"mars2: {e}", file=sys.stderr)
        return 2
    stats = split_stats(splits)
    line = report.line() if name != "minicode" else None
    if as_json:
        out = {"task": name, "splits": stats, "by_difficulty_and_mode": by_difficulty_and_mode(splits)}
        if line:
            out["load"] = {"rows": report.rows, "loaded": report.loaded, "filtered": report.filtered,
                           "malformed": dict(report.malformed)}
        print(json.dumps(out, indent=1))
    else:
        print(format_stats(name, stats, line))
        print("by difficulty/mode: " + "; ".join(
            f"{s} " + " ".join(f"{k}:{n}" for k, n in d.items()) for s, d in by_difficulty_and_mode(splits).items()))
    return 0
