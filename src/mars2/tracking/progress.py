"""One INFO line per training round, for log files and piped stdout (a SLURM job's ``.out``).

:class:`RoundLogLogger` is a Lightning logger that :func:`mars2.tracking.loggers.build_loggers` adds to every
run: it receives the metrics the rollout callback logs (the round's metrics, then — on rounds that are
evaluated — the held-out evaluation at the same step) and writes, through the python logger
``mars2.rounds``::

    round 3/20 | qwen3_a: reward 0.250 loss -0.012 kl 0.0021 clip 0.00 trained 8 | llama_a: ... | 41.2 s/round | eval pass@1 0.125 pass@1(search) 0.250 pass@N 0.375

The evaluation of round 0 (before any update) gets its own ``round 0/N (before training) | eval ...`` line.
On a round that is evaluated (``eval.every``, and the last round) the round's line waits for its evaluation,
so that one line carries both; any other round's line is written as soon as the round ends.

Where the lines go is the job-logging config's business (``conf/hydra/job_logging/mars2.yaml``): always the
run's log file; the console only when stdout is not a terminal (:class:`mars2.cli.quiet.TerminalRoundFilter`).
:func:`bar_summary` is the short form for a progress bar's description; :meth:`RoundLogLogger.attach` puts
it on the ``rounds`` bar of a rich ``Progress`` (the terminal view).
"""
from __future__ import annotations

import logging
import math
import re
from typing import Any, Mapping

from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from mars2.cli.quiet import ROUND_LOGGER

log = logging.getLogger(ROUND_LOGGER)

_POLICY_KEY = re.compile(r"^(?:rl/)?policy/([^/]+)/")
# (metric key, label) of the held-out evaluation, in the order shown
EVAL_FIELDS = (("eval/pass1", "pass@1"), ("eval/pass1_mcts", "pass@1(search)"), ("eval/pass_at_n", "pass@N"))


def _fmt(v: Any, digits: int = 3) -> str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return "?"
    if math.isnan(x):
        return "nan"
    return f"{x:.{digits}f}"


def is_round_metrics(m: Mapping[str, Any]) -> bool:
    """The rollout callback's per-round metrics (they carry the round time)."""
    return "time/round_s" in m


def is_eval_metrics(m: Mapping[str, Any]) -> bool:
    return any(k.startswith("eval/") for k in m)


def policies_of(m: Mapping[str, Any]) -> list[str]:
    """Policy ids in the order they first appear among the ``policy/<id>/`` and ``rl/policy/<id>/`` keys."""
    out: list[str] = []
    for k in m:
        hit = _POLICY_KEY.match(k)
        if hit and hit.group(1) not in out:
            out.append(hit.group(1))
    return out


def policy_part(m: Mapping[str, Any], pid: str) -> str:
    """``<pid>: reward R loss L kl K clip C trained N`` (loss/kl/clip only when the policy was updated)."""
    parts = [f"{pid}:"]
    reward = m.get(f"rl/policy/{pid}/reward_mean")
    if reward is not None:
        parts.append(f"reward {_fmt(reward)}")
    if f"policy/{pid}/loss" in m:
        parts += [f"loss {_fmt(m[f'policy/{pid}/loss'])}", f"kl {_fmt(m.get(f'policy/{pid}/kl'), 4)}",
                  f"clip {_fmt(m.get(f'policy/{pid}/clip_frac'), 2)}"]
    else:
        parts.append("no update")
    taken = m.get(f"policy/{pid}/taken")
    parts.append(f"trained {int(float(taken)) if taken is not None and not math.isnan(float(taken)) else 0}")
    return " ".join(parts)


def eval_part(m: Mapping[str, Any]) -> str:
    fields = [f"{label} {_fmt(m[k])}" for k, label in EVAL_FIELDS if k in m]
    return "eval " + " ".join(fields) if fields else "eval (no metrics)"


def round_line(step: int, total: int | None, rnd: Mapping[str, Any] | None, ev: Mapping[str, Any] | None) -> str:
    """The line of round ``step`` (``rnd``: its metrics, ``ev``: its evaluation; either may be None)."""
    head = f"round {step}/{total}" if total else f"round {step}"
    parts = [head + (" (before training)" if rnd is None and step == 0 else "")]
    if rnd is not None:
        parts += [policy_part(rnd, pid) for pid in policies_of(rnd)]
        parts.append(f"{_fmt(rnd.get('time/round_s'), 1)} s/round")
    if ev is not None:
        parts.append(eval_part(ev))
    return " | ".join(parts)


def bar_summary(m: Mapping[str, Any]) -> str:
    """Short key metrics for a progress bar's description: per-policy mean reward, mean loss, pass@1."""
    bits = []
    rewards = [m[f"rl/policy/{p}/reward_mean"] for p in policies_of(m) if f"rl/policy/{p}/reward_mean" in m]
    if rewards:
        bits.append("reward " + "/".join(_fmt(r, 2) for r in rewards))
    losses = [m[f"policy/{p}/loss"] for p in policies_of(m) if f"policy/{p}/loss" in m]
    if losses:
        bits.append("loss " + "/".join(_fmt(v, 3) for v in losses))
    if "eval/pass1" in m:
        bits.append(f"pass@1 {_fmt(m['eval/pass1'])}")
    return " · ".join(bits)


class RoundLogLogger(Logger):
    """Writes :func:`round_line` for every round it is told about (see the module docstring)."""

    def __init__(self, rounds: int | None = None, eval_every: int = 1, eval_at_start: bool = True) -> None:
        super().__init__()
        self.rounds = int(rounds) if rounds else None
        self.eval_every = max(1, int(eval_every or 1))
        self.eval_at_start = bool(eval_at_start)
        self._pending: tuple[int, dict[str, Any]] | None = None
        self.lines: list[str] = []  # what was written (for callers and tests)
        self.progress: Any = None  # a rich Progress (see attach)

    @property
    def name(self) -> str:
        return "rounds"

    @property
    def version(self) -> int:
        return 0

    def evaluated(self, step: int) -> bool:
        """Whether the rollout callback evaluates after round ``step`` (same rule as the callback)."""
        return step % self.eval_every == 0 or (self.rounds is not None and step == self.rounds)

    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass

    def attach(self, progress: Any) -> "RoundLogLogger":
        """Also show each round's key metrics (:func:`bar_summary`) in the description of the ``rounds`` task
        of a rich ``Progress`` (the terminal's view; train.py: ``lg.attach(progress)`` for its bars)."""
        self.progress = progress
        return self

    def _show_in_bar(self, rnd: Mapping[str, Any] | None, ev: Mapping[str, Any] | None) -> None:
        if self.progress is None:
            return
        summary = bar_summary({**(rnd or {}), **(ev or {})})
        try:
            for task in self.progress.tasks:
                if str(task.description).split(" ", 1)[0] == "rounds":
                    self.progress.update(task.id, description=f"rounds {summary}" if summary else "rounds")
        except Exception:  # the bars are cosmetic; the log line is what counts
            pass

    def _write(self, line: str, rnd: Mapping[str, Any] | None = None, ev: Mapping[str, Any] | None = None) -> None:
        self.lines.append(line)
        log.info(line)
        self._show_in_bar(rnd, ev)

    def _flush(self) -> None:
        if self._pending is not None:
            step, rnd = self._pending
            self._pending = None
            self._write(round_line(step, self.rounds, rnd, None), rnd)

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        m = dict(metrics)
        step = int(step if step is not None else m.get("round", 0))
        if is_round_metrics(m):
            self._flush()
            if self.evaluated(step):
                self._pending = (step, m)
            else:
                self._write(round_line(step, self.rounds, m, None), m)
        elif is_eval_metrics(m):
            if self._pending is not None and self._pending[0] == step:
                rnd = self._pending[1]
                self._pending = None
                self._write(round_line(step, self.rounds, rnd, m), rnd, m)
            else:
                self._flush()
                self._write(round_line(step, self.rounds, None, m), None, m)

    def save(self) -> None:
        pass

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self._flush()
