"""Problem counts of a task's splits (per split, difficulty, execution mode; test counts), as plain values
and as the text ``python -m mars2.cli.stats`` prints (the command, which reads conf/, lives in ``mars2.cli``)."""
from __future__ import annotations

from collections import Counter
from typing import Any, Mapping, Sequence

from mars2.tasks.problem import Problem

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
