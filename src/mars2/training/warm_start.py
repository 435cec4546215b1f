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

Calibration (measured on this machine, see the report in ``WarmStartConfig``'s docstring).
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from mars2.agents.base import AgentSpec
from mars2.agents.prompts import format_response, fresh_messages, refine_messages
from mars2.tasks.problem import Problem

log = logging.getLogger("mars2.warm_start")

# Bump when the data recipe or the loss changes so that stale cached weights are not reused.
WARM_START_VERSION = 3  # 3: twin readings of vague steps as repair examples; 2: both feedback styles, ...


@dataclass
class WarmStartConfig:
    """Warm-start knobs (design.md "The miniature world"; defaults = the calibrated tiny preset).

    ``depths``: which warm-up problems to use, by difficulty (None = all); repeats weight a depth
    (``[1, 2, 2, 3]``: a quarter of the fresh examples at depth 1, half at 2, a quarter at 3). ``refine_fraction``: share of
    refinement examples in every batch. ``n_refine_pool``: how many distinct corrupted programs are built
    and run in the sandbox (each is reused across steps). ``max_len``: examples longer than this many tokens
    are dropped. ``harvest_at``: fractions of ``steps`` at which the policy itself samples ``harvest_n``
    fresh solutions (T=1) to warm-up problems; those failing a public test become refinement examples with
    their real feedback, and from then on ``harvest_share`` of the refinement examples of a batch are such
    self-made failures (the errors a policy actually makes differ from synthetic edits).
    ``feedback_styles``: the feedback formats of the refinement examples (``mars2.sandbox.feedback.STYLES``),
    one example per style for every buggy program; ``max_feedback_chars``: their length cap (the search's
    ``feedback_max_chars`` default, so warm-start and search prompts match). ``twin_share``: for a problem
    with an underspecified step (minicode ``meta["vague"]``), the probability that its buggy program is the
    other reading of that step (``mars2.tasks.minicode.alternative_solution``: e.g. ascending where the
    examples show descending), so that the warm start teaches the repair "the feedback says reading A
    fails: use reading B", which a fresh sample cannot make."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 3e-3
    warmup_steps: int = 20
    weight_decay: float = 0.0
    refine_fraction: float = 0.3
    max_len: int = 384
    seed: int = 0
    data_seed: int = 0
    depths: list[int] | None = None
    enabled: bool = True
    n_refine_pool: int = 768
    grad_clip: float = 1.0
    checkpoint_every: int = 50
    micro_batch_size: int = 8
    harvest_at: list[float] = field(default_factory=lambda: [0.5])
    harvest_n: int = 256
    harvest_share: float = 0.5
    feedback_styles: list[str] = field(default_factory=lambda: ["vanilla", "t_plus"])
    max_feedback_chars: int = 600
    twin_share: float = 0.5

    def __post_init__(self) -> None:
        from mars2.sandbox.feedback import STYLES

        styles = [self.feedback_styles] if isinstance(self.feedback_styles, str) else list(self.feedback_styles)
        bad = [s for s in styles if s not in STYLES]
        if not styles or bad:
            raise ValueError(f"warm_start.feedback_styles must be a non-empty list of {STYLES}, got {self.feedback_styles!r}")
        self.feedback_styles = styles
        if self.max_feedback_chars < 1:
            raise ValueError(f"warm_start.max_feedback_chars must be >= 1, got {self.max_feedback_chars}")


# ----------------------------------------------------------------------------------------------------
# Corruptions of reference programs
# ----------------------------------------------------------------------------------------------------

_OPERATOR_SWAPS: tuple[tuple[str, str], ...] = (
    (" + ", " - "), (" - ", " + "), (" * ", " + "), (" // ", " % "), (" % ", " // "),
    (" > ", " < "), (" < ", " > "), (" >= ", " > "), (" <= ", " < "), (" == ", " != "), (" != ", " == "),
    ("min(", "max("), ("max(", "min("), ("sum(", "len("), ("len(", "sum("),
    ("reverse=True", "reverse=False"), ("[::-1]", "[1:]"), (".upper()", ".lower()"), (".lower()", ".upper()"),
    ("isalpha()", "isdigit()"), ("isdigit()", "isalpha()"), (" not in ", " in "),
)
_INT = re.compile(r"(?<![\w.])(-?\d+)(?![\w.])")


def _body_lines(lines: list[str]) -> list[int]:
    """Indices of lines a corruption may touch: everything except the ``def`` line and blank lines."""
    return [i for i, ln in enumerate(lines) if ln.strip() and not ln.lstrip().startswith("def ")]


_COMPARISON_SWAPS: tuple[tuple[str, str], ...] = (
    (" >= ", " > "), (" > ", " >= "), (" <= ", " < "), (" < ", " <= "), (" == ", " != "), (" != ", " == "),
)
# The near-miss bugs of issue 17, by name: missing step (drop_line), swapped steps (swap_lines), wrong
# constant (constant: ±1 or ±2), off-by-one (off_by_one: ±1), wrong operator / wrong primitive call
# (operator), wrong comparison (comparison: > vs >=, == vs !=), wrong primitive (foreign_line: a step of
# another problem in place of one of this problem's steps).
CORRUPTIONS = ("drop_line", "swap_lines", "constant", "off_by_one", "operator", "comparison", "foreign_line")


def corrupt_program(program: str, rng: random.Random, donor_lines: Sequence[str] = (),
                    kind: str | None = None) -> tuple[str, str] | None:
    """One small edit of ``program`` → ``(kind, new_program)``, or None if the edit does not apply.

    Kinds (drawn uniformly unless given): ``drop_line``, ``swap_lines`` (two adjacent transformation
    lines), ``constant`` (an integer literal ±1 or ±2), ``off_by_one`` (an integer literal ±1),
    ``operator`` (e.g. ``+``→``-``, ``min``→``max``), ``comparison`` (``>``→``>=``, ``==``→``!=``, ...),
    ``foreign_line`` (a transformation line replaced by one from ``donor_lines``)."""
    lines = program.rstrip("\n").split("\n")
    body = _body_lines(lines)
    kind = kind or rng.choice(CORRUPTIONS)
    new = list(lines)
    if kind == "drop_line":
        # Keep at least one body line so the function is not empty (that would not parse).
        if len(body) < 2:
            return None
        del new[rng.choice(body)]
    elif kind == "swap_lines":
        pairs = [(a, b) for a, b in zip(body, body[1:]) if b == a + 1 and not lines[b].lstrip().startswith(("return", "print"))]
        if not pairs:
            return None
        a, b = rng.choice(pairs)
        new[a], new[b] = new[b], new[a]
    elif kind in ("constant", "off_by_one"):
        spots = [(i, m) for i in body for m in _INT.finditer(lines[i])]
        if not spots:
            return None
        i, m = rng.choice(spots)
        val = int(m.group(1)) + rng.choice((-2, -1, 1, 2) if kind == "constant" else (-1, 1))
        new[i] = lines[i][: m.start(1)] + str(val) + lines[i][m.end(1):]
    elif kind in ("operator", "comparison"):
        swaps = _OPERATOR_SWAPS if kind == "operator" else _COMPARISON_SWAPS
        spots = [(i, a, b) for i in body for a, b in swaps if a in lines[i]]
        if not spots:
            return None
        i, a, b = rng.choice(spots)
        new[i] = lines[i].replace(a, b, 1)
    else:  # foreign_line: the phrase→line confusion, replacing one transformation line
        cands = [i for i in body if re.match(r"\s*(xs|s) = ", lines[i]) and "input()" not in lines[i]]
        if not cands or not donor_lines:
            return None
        i = rng.choice(cands)
        var = lines[i].strip().split(" ", 1)[0]
        donors = [d for d in donor_lines if d.startswith(f"{var} = ") and d != lines[i].strip()]
        if not donors:
            return None
        indent = lines[i][: len(lines[i]) - len(lines[i].lstrip())]
        new[i] = indent + rng.choice(donors)
    out = "\n".join(new)
    if out.strip() == program.strip():
        return None
    try:
        compile(out, "<corrupted>", "exec")
    except (SyntaxError, ValueError):
        return None
    return kind, out


def _donor_lines(problems: Sequence[Problem]) -> list[str]:
    seen: dict[str, None] = {}
    for p in problems:
        for ln in (p.reference_solution or "").split("\n"):
            s = ln.strip()
            if re.match(r"(xs|s) = ", s) and "input()" not in s:
                seen.setdefault(s, None)
    return list(seen)


def build_refine_pool(
    problems: Sequence[Problem], n: int, seed: int, sandbox: Any, feedback_style: str | Sequence[str] = "vanilla",
    max_feedback_chars: int = 1200, weights: Sequence[float] | None = None, twin_share: float = 0.0,
) -> list[tuple[Problem, str, str]]:
    """Up to ``n`` corrupted programs, each failing at least one public test, as triples (problem, corrupted
    program, real public-test feedback) — one triple per style when ``feedback_style`` is a list of styles
    (program-major: the styles of one program are adjacent). Problems are drawn round-robin over a seeded
    shuffle (or with ``weights``), and all candidates run in one ``sandbox.evaluate_many`` batch (public
    tests only: the feedback uses nothing else, and hidden tests would triple the sandbox time).
    ``twin_share``: for a problem with a vague step (minicode), the probability that the candidate is the
    other reading of that step instead of a :func:`corrupt_program` edit."""
    from mars2.sandbox.feedback import format_feedback
    from mars2.tasks.minicode import alternative_solution

    if n <= 0 or not problems:
        return []
    rng = random.Random(f"warm_start|refine|{seed}")
    donors = _donor_lines(problems)
    order = list(problems)
    rng.shuffle(order)
    cands: list[tuple[Problem, str]] = []
    seen: set[tuple[str, str]] = set()
    # 1.5×: some candidates pass the public tests (an edit that changes nothing observable) and are dropped.
    want = int(n * 1.5) + 8
    tries = 0
    while len(cands) < want and tries < 20 * want:
        p = order[tries % len(order)] if weights is None else rng.choices(problems, weights=weights)[0]
        tries += 1
        alt = alternative_solution(p) if twin_share > 0 and (p.meta or {}).get("vague") else None
        if alt is not None and rng.random() < twin_share:
            res: tuple[str, str] | None = ("twin", alt)
        else:
            res = corrupt_program(p.reference_solution or "", rng, donors)
        if res is None or (p.id, res[1]) in seen:
            continue
        seen.add((p.id, res[1]))
        cands.append((p, res[1]))
    public_only = [(dataclasses.replace(p, hidden_tests=()), prog) for p, prog in cands]
    evals = sandbox.evaluate_many(public_only)
    styles = [feedback_style] if isinstance(feedback_style, str) else list(feedback_style)
    pool: list[tuple[Problem, str, str]] = []
    kept = 0
    for (p, prog), ev in zip(cands, evals):
        if ev.public.all_passed:
            continue
        pool += [(p, prog, format_feedback(ev.public, st, max_feedback_chars)) for st in styles]
        kept += 1
        if kept >= n:
            break
    return pool


def harvest_failures(
    model, tokenizer, problems: Sequence[Problem], agents: Sequence[AgentSpec], n: int, seed: int, sandbox: Any,
    weights: Sequence[float] | None = None, max_new_tokens: int = 128, feedback_style: str | Sequence[str] = "vanilla",
    max_feedback_chars: int = 1200,
) -> list[tuple[Problem, AgentSpec, str | None, str]]:
    """The policy's own failures: ``n`` fresh solutions sampled at temperature 1 (seeded) for problems drawn
    with ``weights``; those failing a public test (or with no code) → (problem, agent, program, feedback),
    one tuple per style when ``feedback_style`` is a list of styles."""
    from mars2.rollout.backend import GenerationRequest
    from mars2.agents.extraction import extract_program
    from mars2.rollout.hf_backend import HFBackend
    from mars2.sandbox.feedback import format_feedback

    if n <= 0:
        return []
    rng = random.Random(f"warm_start|harvest|{seed}")
    chosen = rng.choices(list(problems), weights=weights, k=n)
    who = [rng.choice(list(agents)) for _ in chosen]
    backend = HFBackend({"p": model}, {"p": tokenizer}, max_new_tokens=max_new_tokens, temperature=1.0, seed=seed)
    gens = backend.generate([GenerationRequest("p", fresh_messages(p, a)) for p, a in zip(chosen, who)])
    progs = [extract_program(g.text) for g in gens]
    evals = sandbox.evaluate_many([(dataclasses.replace(p, hidden_tests=()), prog) for p, prog in zip(chosen, progs)])
    styles = [feedback_style] if isinstance(feedback_style, str) else list(feedback_style)
    return [(p, a, prog, format_feedback(ev.public, st, max_feedback_chars))
            for p, a, prog, ev in zip(chosen, who, progs, evals) if not ev.public.all_passed for st in styles]


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


# ----------------------------------------------------------------------------------------------------
# Cache key
# ----------------------------------------------------------------------------------------------------

def _params_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_key(model, tokenizer, problems: Sequence[Problem], cfg: WarmStartConfig, role_prompts: Sequence[str]) -> str:
    """Hash of everything that determines the warm-started weights (the initial weights included, so the
    policy's init seed and architecture are covered)."""
    from mars2.agents.tokenizer import tokenizer_fingerprint

    c = dataclasses.asdict(cfg)
    for k in ("enabled", "checkpoint_every", "micro_batch_size"):  # do not change the result (up to rounding)
        c.pop(k, None)
    payload = {
        "version": WARM_START_VERSION,
        "config": model.config.to_dict() if hasattr(model, "config") else type(model).__name__,
        "params": _params_digest(model),
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "warm_start": c,
        "problems": hashlib.sha256(
            "\n".join(f"{p.id}|{p.statement}|{p.reference_solution}" for p in problems).encode()
        ).hexdigest(),
        "roles": list(role_prompts),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:20]


# ----------------------------------------------------------------------------------------------------
# The loop
# ----------------------------------------------------------------------------------------------------

def lr_factor(step: int, steps: int, warmup: int, floor: float = 0.1) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 to ``floor``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    prog = (step - warmup) / max(1, steps - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, prog)))


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


@contextlib.contextmanager
def _cache_lock(cache_dir: Path | str | None, name: str):
    """Serialise warm starts of one cached result (``name``: its cache key) across processes sharing a cache
    (parallel sweep jobs): the second waits, then loads what the first cached instead of training again."""
    if cache_dir is None:
        yield
        return
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, at worst both train and the last rename wins
        yield
        return
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with open(Path(cache_dir) / f".lock-{name}", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def warm_start(
    model: torch.nn.Module,
    tokenizer,
    problems: list[Problem],
    cfg: WarmStartConfig,
    cache_dir: Path | str | None,
    sandbox: Any = None,
    progress: bool = True,
    tag: str = "",
    role_prompts: Sequence[str] | None = None,
    on_step: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Warm-start ``model`` in place (see the module docstring). Returns stats: ``loss`` (per step),
    ``final_loss``, ``seconds``, ``cached``, ``steps``, ``n_fresh``, ``n_refine``, ``key``, ``resumed_from``.

    ``sandbox`` runs the corrupted programs for refinement feedback (a default `mars2.sandbox.Sandbox` is
    made when None and refinement is on). ``role_prompts``: system prompts sampled per example (None → no
    system prompt). At most one process per cached result works at a time: parallel jobs that need the same
    warm-started policy train it once; jobs that need different ones do not wait for each other."""
    roles = list(role_prompts) if role_prompts else [""]
    ps = select_problems(problems, cfg.depths)
    if not ps:
        raise ValueError(f"warm start {tag}: no warm-up problems with a reference solution at depths {cfg.depths}")
    key = cache_key(model, tokenizer, ps, cfg, roles)
    with _cache_lock(cache_dir, key):
        return _warm_start(model, tokenizer, ps, roles, key, cfg, cache_dir, sandbox, progress, tag, on_step)


def _cached(cache_dir: Path | str | None, key: str) -> bool:
    return cache_dir is not None and (Path(cache_dir) / f"{key}.pt").is_file()


def _job(args: tuple) -> tuple[str, dict[str, Any]]:
    """One warm start in a worker process (spawned: a fresh interpreter, no inherited threads or sandbox
    servers): ``threads`` torch threads, its own sandbox, results written to the shared cache."""
    (tag, model_bytes, tokenizer, problems, cfg, cache_dir, sandbox_config, role_prompts, threads) = args
    torch.set_num_threads(max(1, int(threads)))
    import io

    from mars2.sandbox import Sandbox

    model = torch.load(io.BytesIO(model_bytes), map_location="cpu", weights_only=False)

    with Sandbox(sandbox_config) as sandbox:
        stats = warm_start(model, tokenizer, problems, cfg, cache_dir, sandbox=sandbox, progress=False, tag=tag,
                           role_prompts=role_prompts)
    stats.pop("loss", None)  # the parent reads the full stats from the cache
    return tag, stats


def _to_bytes(model: torch.nn.Module) -> bytes:
    """The module as bytes: sent to a worker as a copy. (Sending the module itself would move its tensors to
    shared memory, and the worker's training would then change this process's weights in place.)"""
    import io

    buf = io.BytesIO()
    torch.save(model, buf)
    return buf.getvalue()


def warm_start_many(
    models: dict[str, torch.nn.Module],
    tokenizers: dict[str, Any],
    problems: list[Problem],
    cfgs: dict[str, WarmStartConfig],
    cache_dir: Path | str | None,
    sandbox: Any = None,
    progress: bool = True,
    role_prompts: Sequence[str] | None = None,
    processes: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Warm-start several policies (``models[pid]`` with ``cfgs[pid]``, in place); returns stats per pid.

    Policies whose result is not cached yet are trained in parallel worker processes, one process per
    policy and the cores split between them (``processes``: at most that many at a time; default: one per
    core this process may use). Why: the per-step work of a tiny model is too small for two threads to
    share well — two processes with one thread each train ~1.6x as many steps per second as one process
    with two threads. Each worker writes the cache under the per-key lock of :func:`warm_start`, then this
    process loads every policy from the cache, so the weights are those of a warm start run alone (up to
    float rounding of the thread count, as for ``micro_batch_size``). Runs sequentially in this process
    when there is no cache, only one policy to train, one core, or a sandbox that is not a
    `mars2.sandbox.Sandbox` (a test double cannot be sent to another process)."""
    roles = list(role_prompts) if role_prompts else [""]
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    procs = max(1, int(processes) if processes else cores)
    todo = []
    for pid, model in models.items():
        cfg = cfgs[pid]
        if not (cfg.enabled and cfg.steps > 0):
            continue
        ps = select_problems(problems, cfg.depths)
        if ps and not _cached(cache_dir, cache_key(model, tokenizers[pid], ps, cfg, roles)):
            todo.append(pid)
    from mars2.sandbox import Sandbox, SandboxConfig

    sandbox_config = SandboxConfig() if sandbox is None else getattr(sandbox, "config", None)
    parallel = (cache_dir is not None and len(todo) >= 2 and procs >= 2
                and (sandbox is None or isinstance(sandbox, Sandbox)) and isinstance(sandbox_config, SandboxConfig))
    out: dict[str, dict[str, Any]] = {}
    wall = None
    if parallel:
        import multiprocessing as mp

        n = min(procs, len(todo))
        threads = max(1, cores // n)
        log.info("warm start: %d policies in %d processes x %d thread(s): %s", len(todo), n, threads, ", ".join(todo))
        t0 = time.time()
        jobs = [(pid, _to_bytes(models[pid]), tokenizers[pid], problems, cfgs[pid], str(cache_dir), sandbox_config,
                 roles, threads) for pid in todo]
        with mp.get_context("spawn").Pool(n) as pool:
            for pid, st in pool.imap_unordered(_job, jobs):
                out[pid] = st
                log.info("warm start %s: trained in a worker in %.0f s", pid, st.get("seconds", float("nan")))
        wall = time.time() - t0
    for pid, model in models.items():
        cfg = cfgs[pid]
        if not (cfg.enabled and cfg.steps > 0):
            continue
        st = warm_start(model, tokenizers[pid], problems, cfg, cache_dir, sandbox=sandbox, progress=progress, tag=pid,
                        role_prompts=roles)
        if pid in out:  # trained by a worker just now: report it as trained, not as a cache hit
            st.update(cached=False, seconds=out[pid].get("seconds"), parallel_wall_seconds=wall,
                      parallel_processes=min(procs, len(todo)))
        out[pid] = st
    return out


def _warm_start(model: torch.nn.Module, tokenizer, ps: list[Problem], roles: list[str], key: str,
                cfg: WarmStartConfig, cache_dir: Path | str | None, sandbox: Any, progress: bool, tag: str,
                on_step: Callable[[int, float], None] | None) -> dict[str, Any]:
    """:func:`warm_start` on the selected problems ``ps`` under the lock of its cache ``key``."""
    t0 = time.time()
    final = partial = None
    if cache_dir is not None:
        cache_dir = Path(cache_dir)
        cache_dir.mkdir(parents=True, exist_ok=True)
        final = cache_dir / f"{key}.pt"
        partial = cache_dir / f"{key}.partial.pt"
        if final.is_file():
            blob = torch.load(final, map_location="cpu", weights_only=False)
            model.load_state_dict(blob["state_dict"])
            stats = dict(blob["stats"])
            stats.update(cached=True, seconds=time.time() - t0, train_seconds=blob["stats"].get("seconds"))
            log.info("warm start %s: loaded cached weights %s", tag, final)
            return stats

    # ---- data ------------------------------------------------------------------------------------
    rng = random.Random(f"warm_start|data|{cfg.data_seed}")
    agents = [AgentSpec(name=f"role{i}", role_prompt=r, policy_id=tag or "policy") for i, r in enumerate(roles)]
    fresh_msgs, fresh_resp = [], []
    for p in ps:
        for a in agents:
            fresh_msgs.append(fresh_messages(p, a))
            fresh_resp.append(format_response(p.reference_solution or ""))
    fresh = _encode(tokenizer, fresh_msgs, fresh_resp, cfg.max_len)
    refine = _Examples()
    n_refine_per_batch = int(round(cfg.batch_size * cfg.refine_fraction)) if cfg.refine_fraction > 0 else 0
    if n_refine_per_batch > 0:
        if sandbox is None:
            from mars2.sandbox import Sandbox

            sandbox = Sandbox()
        t_pool = time.time()
        pool = build_refine_pool(ps, cfg.n_refine_pool, cfg.data_seed, sandbox, feedback_style=cfg.feedback_styles,
                                 max_feedback_chars=cfg.max_feedback_chars,
                                 weights=list(depth_weights(ps, cfg.depths)) if cfg.depths else None,
                                 twin_share=cfg.twin_share)
        log.info("warm start %s: %d refinement examples in %.1f s", tag, len(pool), time.time() - t_pool)
        msgs = [refine_messages(p, rng.choice(agents), prog, fb) for p, prog, fb in pool]
        refine = _encode(tokenizer, msgs, [format_response(p.reference_solution or "") for p, _, _ in pool], cfg.max_len)
        if not refine.ids:
            n_refine_per_batch = 0
    if not fresh.ids:
        raise ValueError(f"warm start {tag}: every example is longer than max_len={cfg.max_len}")
    n_fresh_per_batch = cfg.batch_size - n_refine_per_batch
    both = _Examples(fresh.ids + refine.ids, fresh.n_prompt + refine.n_prompt)
    n_f, n_c = len(fresh.ids), len(refine.ids)
    n_s = 0  # self-made failures, appended to ``both`` after n_f + n_c when harvested
    harvest_steps = sorted({int(f * cfg.steps) for f in (cfg.harvest_at or [])}) if n_refine_per_batch else []
    # fresh example k came from problem source[k] // len(agents)
    pw = depth_weights(ps, cfg.depths)
    fresh_p = np.array([pw[k // len(agents)] for k in fresh.source])
    fresh_p = fresh_p / fresh_p.sum()

    # ---- optimisation ------------------------------------------------------------------------------
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(s, cfg.steps, cfg.warmup_steps))
    losses: list[float] = []
    harvest_log: list[dict[str, Any]] = []
    start = 0
    if partial is not None and partial.is_file():
        blob = torch.load(partial, map_location="cpu", weights_only=False)
        model.load_state_dict(blob["state_dict"])
        opt.load_state_dict(blob["optimizer"])
        sched.load_state_dict(blob["scheduler"])
        losses = list(blob["loss"])
        start = int(blob["step"])
        harvested = blob.get("harvested") or ([], [])
        both.ids += harvested[0]
        both.n_prompt += harvested[1]
        n_s = len(harvested[0])
        harvest_log = list(blob.get("harvest_log", []))
        log.info("warm start %s: resuming at step %d", tag, start)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.train()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            with _progress(progress, f"warm start {tag}".strip(), cfg.steps, start) as advance:
                for step in range(start, cfg.steps):
                    if step in harvest_steps:
                        t_h = time.time()
                        got = harvest_failures(model, tokenizer, ps, agents, cfg.harvest_n, cfg.seed * 1009 + step,
                                               sandbox, weights=list(pw), feedback_style=cfg.feedback_styles,
                                               max_feedback_chars=cfg.max_feedback_chars)
                        ex = _encode(tokenizer, [refine_messages(p, a, prog, fb) for p, a, prog, fb in got],
                                     [format_response(p.reference_solution or "") for p, _, _, _ in got], cfg.max_len)
                        both.ids += ex.ids
                        both.n_prompt += ex.n_prompt
                        n_s += len(ex.ids)
                        harvest_log.append({"step": step, "failures": len(got) // len(cfg.feedback_styles),
                                            "examples": len(ex.ids), "of": cfg.harvest_n,
                                            "seconds": round(time.time() - t_h, 2)})
                    # Batch composition depends only on (data_seed, step) and the harvested examples so far:
                    # resuming needs no RNG state.
                    g = np.random.default_rng([cfg.data_seed, step])
                    idx = list(g.choice(n_f, size=n_fresh_per_batch, p=fresh_p))
                    if n_refine_per_batch:
                        n_self = int(round(n_refine_per_batch * cfg.harvest_share)) if n_s else 0
                        n_corr = n_refine_per_batch - n_self if n_c else 0
                        n_self = n_refine_per_batch - n_corr if n_s else 0
                        idx += list(n_f + g.integers(0, n_c, n_corr)) if n_corr else []
                        idx += list(n_f + n_c + g.integers(0, n_s, n_self)) if n_self else []
                    loss = _accumulate(model, both, idx, pad, cfg.micro_batch_size)
                    if cfg.grad_clip > 0:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                    opt.step()
                    sched.step()
                    losses.append(float(loss.detach()))
                    advance(losses[-1])
                    if on_step is not None:
                        on_step(step, losses[-1])
                    if partial is not None and cfg.checkpoint_every > 0 and (step + 1) % cfg.checkpoint_every == 0 \
                            and step + 1 < cfg.steps:
                        _atomic_save({"state_dict": model.state_dict(), "optimizer": opt.state_dict(),
                                      "scheduler": sched.state_dict(), "loss": losses, "step": step + 1,
                                      "harvested": (both.ids[n_f + n_c:], both.n_prompt[n_f + n_c:]),
                                      "harvest_log": harvest_log}, partial)
    finally:
        model.train(was_training)
    stats = {
        "cached": False,
        "seconds": time.time() - t0,
        "loss": losses,
        "final_loss": float(np.mean(losses[-10:])) if losses else float("nan"),
        "steps": cfg.steps,
        "n_problems": len(ps),
        "n_fresh": n_f,
        "n_refine": len(refine.ids),
        "n_self_refine": n_s,
        "harvest": harvest_log,
        "key": key,
        "resumed_from": start,
    }
    if final is not None:
        _atomic_save({"state_dict": model.state_dict(), "stats": stats}, final)
        if partial is not None and partial.is_file():
            partial.unlink()
    return stats


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


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class _progress:
    """A rich progress bar with the running loss (a no-op when ``enabled`` is False)."""

    def __init__(self, enabled: bool, desc: str, total: int, start: int) -> None:
        self.enabled, self.desc, self.total, self.start = enabled, desc, total, start
        self._p = None

    def __enter__(self) -> Callable[[float], None]:
        if not self.enabled:
            return lambda loss: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self._p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("loss {task.fields[loss]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                           transient=False)
        self._p.__enter__()
        task = self._p.add_task(self.desc, total=self.total, completed=self.start, loss="-")
        return lambda loss: self._p.update(task, advance=1, loss=f"{loss:.3f}")

    def __exit__(self, *exc: Any) -> None:
        if self._p is not None:
            self._p.__exit__(*exc)
