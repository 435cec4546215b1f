"""`python -m mars2.cli.stats task=<name> [task.<key>=<value> ...] [--json]`: load a task exactly as train.py /
evaluate.py would (the same conf/task/<name>.yaml, the same loader) and print its problem counts per split,
difficulty and execution mode, the test counts, and what the loader read (rows, filtered, malformed).

OmegaConf without Hydra's composition: conf/task/<name>.yaml is read with OmegaConf beside ``paths`` from
conf/paths/default.yaml (the file train.yaml and evaluate.yaml use: ``MARS2_DATA_DIR`` etc.; ``root_dir``
defaults to this checkout), and ``task.<key>=<value>`` overrides are applied
as an OmegaConf dotlist (values parsed as YAML: ``task.strict=true``). A missing, unreadable or empty file (a
split with 0 problems), an unknown task, a bad ``task.*`` value or (with ``task.strict=true``) a malformed row
ends with one line on stderr and exit code 2. (``stats`` as the first argument is accepted, as before.)
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from mars2.tasks.stats import by_difficulty_and_mode, format_stats, split_stats

USAGE = ("usage: python -m mars2.cli.stats task=<minicode|livecodebench|deepcoder|verl_code|humaneval> "
         "[task.<key>=<value> ...] [--json]")


def conf_dir() -> Path:
    """The repository's conf/ (``MARS2_ROOT``, else found from this file: src/mars2/cli → repo root)."""
    root = os.environ.get("MARS2_ROOT")
    if root and (Path(root) / "conf").is_dir():
        return Path(root) / "conf"
    return Path(__file__).resolve().parents[3] / "conf"


def task_config(overrides: Sequence[str]) -> dict[str, Any]:
    """conf/task/<name>.yaml with ``paths`` of conf/paths/default.yaml and the ``task.*`` overrides applied,
    resolved."""
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
    paths = OmegaConf.load(conf_dir() / "paths" / "default.yaml")
    if "MARS2_ROOT" not in os.environ:  # train.py / evaluate.py set it to their checkout: do the same
        paths.root_dir = str(conf_dir().parent)
    cfg = OmegaConf.merge(OmegaConf.create({"paths": paths}), {"task": OmegaConf.load(path)},
                          OmegaConf.from_dotlist(rest))
    out = OmegaConf.to_container(cfg.task, resolve=True)  # paths.output_dir (Hydra's run dir) is not needed
    return dict(out)  # type: ignore[arg-type]


def main(argv: Sequence[str]) -> int:
    import logging

    from mars2.tasks.loaders import LoadReport, TaskDataError
    from mars2.tasks.registry import load_task

    args = list(argv)
    if args and args[0] == "stats":
        args = args[1:]
    if not args or args[0] in ("-h", "--help"):
        print(USAGE, file=sys.stdout if args else sys.stderr)
        return 0 if args else 2
    as_json = "--json" in args
    args = [a for a in args if a != "--json"]
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
