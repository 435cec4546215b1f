"""The warm start's training loop (`mars2.training.warm_start`): AdamW with linear warm-up then cosine decay,
a harvest of the policy's own failures at ``harvest_at``, the final weights cached by :func:`cache_key`
under a per-key lock (parallel jobs train one policy once), a partial checkpoint to resume from, and
several policies trained in parallel worker processes (:func:`warm_start_many`)."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from mars2.agents.base import AgentSpec
from mars2.tasks.problem import Problem
from mars2.training.warm_start.config import WARM_START_VERSION, WarmStartConfig
from mars2.training.warm_start.corruptions import build_refine_pool, harvest_failures
from mars2.training.warm_start.data import (
    _accumulate,
    _Examples,
    batch_indices,
    depth_weights,
    fresh_examples,
    fresh_probabilities,
    repair_examples,
    select_problems,
)

log = logging.getLogger("mars2.warm_start")


def lr_factor(step: int, steps: int, warmup: int, floor: float = 0.1) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine from 1 to ``floor``."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    prog = (step - warmup) / max(1, steps - warmup)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, prog)))



# ----------------------------------------------------------------------------------------------------
# Cache key and lock
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



def _cached(cache_dir: Path | str | None, key: str) -> bool:
    return cache_dir is not None and (Path(cache_dir) / f"{key}.pt").is_file()


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------
# One policy
# ----------------------------------------------------------------------------------------------------

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
    fresh = fresh_examples(tokenizer, ps, agents, cfg.max_len)
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
        refine = repair_examples(tokenizer, [(p, rng.choice(agents), prog, fb) for p, prog, fb in pool], cfg.max_len)
        if not refine.ids:
            n_refine_per_batch = 0
    if not fresh.ids:
        raise ValueError(f"warm start {tag}: every example is longer than max_len={cfg.max_len}")
    n_fresh_per_batch = cfg.batch_size - n_refine_per_batch
    both = _Examples(fresh.ids + refine.ids, fresh.n_prompt + refine.n_prompt)
    n_f, n_c = len(fresh.ids), len(refine.ids)
    n_s = 0  # self-made failures, appended to ``both`` after n_f + n_c when harvested
    harvest_steps = sorted({int(f * cfg.steps) for f in (cfg.harvest_at or [])}) if n_refine_per_batch else []
    pw = depth_weights(ps, cfg.depths)
    fresh_p = fresh_probabilities(fresh, pw, len(agents))

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
                        ex = repair_examples(tokenizer, got, cfg.max_len)
                        both.ids += ex.ids
                        both.n_prompt += ex.n_prompt
                        n_s += len(ex.ids)
                        harvest_log.append({"step": step, "failures": len(got) // len(cfg.feedback_styles),
                                            "examples": len(ex.ids), "of": cfg.harvest_n,
                                            "seconds": round(time.time() - t_h, 2)})
                    # Batch composition depends only on (data_seed, step) and the harvested examples so far:
                    # resuming needs no RNG state.
                    idx = batch_indices(cfg.data_seed, step, fresh_p, n_fresh_per_batch, n_refine_per_batch,
                                        cfg.harvest_share, n_f, n_c, n_s)
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



# ----------------------------------------------------------------------------------------------------
# Several policies, in parallel processes
# ----------------------------------------------------------------------------------------------------

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
