"""Body of `python train.py` (design.md "Data flow"): config → problems → team/policies (warm start) →
Lightning fit where a callback grows search trees each round and the module updates each ready policy."""
from __future__ import annotations

import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mars2.config import ConfigError, validate_config
from mars2.resources import SetupError

log = logging.getLogger("mars2")


def print_config(cfg: DictConfig) -> None:
    from rich.console import Console
    from rich.tree import Tree as RichTree

    tree = RichTree("[bold]config")
    for key in ("paradigm", "model", "search", "task", "rl", "rollout", "sandbox", "trainer", "eval"):
        if key in cfg:
            branch = tree.add(f"[cyan]{key}")
            branch.add(OmegaConf.to_yaml(cfg[key], resolve=True).strip())
    for key in ("name", "seed", "rounds"):
        tree.add(f"{key}: {cfg.get(key)}")
    Console(stderr=True).print(tree)


def hydra_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:
        return []


def run_train(cfg: DictConfig) -> float | None:
    """Entry used by train.py. Bad configs and missing resources end with one clear line and exit code 2
    (inside a ``-m`` sweep: FAILED.json + a failed job, and the sweep goes on — see `fail_job`); any other
    failure is recorded in results.json (status failed, FAILED.json) before it propagates."""
    from omegaconf.errors import OmegaConfBaseException

    from mars2.tracking.records import fail_job

    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
        validate_config(resolved)
    except (ConfigError, OmegaConfBaseException) as e:
        fail_job(f"config error: {e}")
    try:
        return train(resolved, cfg)
    except SetupError as e:
        fail_job(str(e))


def train(c: dict[str, Any], cfg: DictConfig | None = None) -> float | None:
    from mars2.cli.build import make_team, preflight

    agents = make_team(c)
    preflight(c, agents)  # real-scale runs stop here with a clear message if weights/GPUs are missing

    import lightning.pytorch as pl
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mars2.agents.team import team_policies
    from mars2.cli.build import build_backend, build_policies, build_sandbox, load_problems, pick, search_config
    from mars2.rl.buffers import PolicyBuffers
    from mars2.rl.objective import LossConfig
    from mars2.rl.samples import SampleConfig
    from mars2.tracking.loggers import build_loggers, finish_loggers
    from mars2.tracking.records import RunRecord, failure_status
    from mars2.training.data import BufferDataModule, BufferStream
    from mars2.training import checkpointing as ckpting
    from mars2.training.module import MarsModule
    from mars2.training.rollout import TreeSearchRollout
    from mars2.training.strategy import build_strategy, global_rank_from_env

    out = Path(c["paths"]["output_dir"])
    out.mkdir(parents=True, exist_ok=True)
    done = completed_run(out) if c.get("resume") == "auto" else None
    if done is not None:  # a rerun of a finished sweep (e.g. the study) skips the jobs that completed
        log.info("%s: already completed; nothing to resume (delete results.json to train again)", out)
        return (done.get("final") or {}).get("eval/pass1")
    # Distributed runs (trainer=ddp/fsdp) start this function once per rank; only rank 0 writes run files.
    rank0 = global_rank_from_env() == 0
    if cfg is not None and rank0:
        print_config(cfg)
    ckpt_path = resolve_resume(c.get("resume"), out)
    record = (RunRecord if rank0 else silent_record)(out, c, c["paths"]["root_dir"], hydra_overrides())
    if ckpt_path:
        record.data["resumed_from"] = ckpt_path
    t0 = time.time()
    trainer_cfg = dict(c["trainer"])
    threads = trainer_cfg.pop("num_threads", None)
    if threads:
        torch.set_num_threads(int(threads))
    pl.seed_everything(int(c["seed"]), workers=True, verbose=False)
    loggers = []
    sandbox = None
    try:
        problems = load_problems(c)
        log.info("problems: %s", {k: len(v) for k, v in problems.items()})
        sandbox = build_sandbox(c)
        policy_ids = team_policies(agents)
        models, tokenizers, warm = build_policies(c, policy_ids, problems, sandbox)
        record.data["warm_start"] = warm
        backend = build_backend(c, models, tokenizers, seed=int(c["seed"]))
        rl = c["rl"]
        tis = rl["tis"] if isinstance(rl["tis"], bool) else c["rollout"]["backend"] != "hf"
        loss_cfg = pick(LossConfig, rl, tis=tis, temperature=float(c["rollout"]["temperature"]))
        module = MarsModule(models, loss_cfg, c["model"]["optim"])
        if hasattr(backend, "on_policy_updated"):  # vLLM: sync the engine after each optimiser step of a policy
            module.on_policy_updated = backend.on_policy_updated
        buffers = PolicyBuffers(policy_ids, int(rl["train_batch_size"]), keep_remainder=bool(rl["keep_remainder"]))
        pad_ids = {pid: int(tokenizers[pid].pad_token_id) for pid in policy_ids}
        sample_cfg = pick(
            SampleConfig, rl, max_new_tokens=int(c["rollout"]["max_new_tokens"]),
            overlong_buffer=int(rl["overlong_buffer"]),
        )
        search = search_config(c["search"])
        eval_search = search_config(c["eval"]["search"])
        if ckpt_path and rank0:  # the CSV logger deletes metrics.csv on start: keep its rows for the restore
            ckpting.stash_metrics_csv(out)
        # Trackers live on rank 0 only (their run ids in logger_ids.json must be rank 0's); build_loggers
        # continues the interrupted run's wandb / MLflow runs on resume.
        loggers = build_loggers(c) if rank0 else []
        progress = Progress(
            TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), transient=False, disable=not rank0,
        )
        rollout = TreeSearchRollout(
            agents=agents, backend=backend, scorer=sandbox, train_problems=problems[c.get("train_split", "train")],
            test_problems=problems[c["eval"]["split"]], buffers=buffers, search=search, sample_cfg=sample_cfg,
            rollout_batch_size=int(rl["rollout_batch_size"]), reward_tests=rl["reward_tests"],
            eval_cfg=c["eval"], eval_search=eval_search, seed=int(c["seed"]), output_dir=out,
            on_eval=record.add_eval, on_restore=lambda evals, r: restore_record(record, evals, r),
            progress=progress if rank0 else None,
        )
        stream = BufferStream(
            buffers, lambda: module.policies, pad_ids, epochs_per_batch=int(rl["epochs_per_batch"]),
            before_round=rollout.run_round, temperature=loss_cfg.temperature, loss=loss_cfg.loss,
            full_params=lambda: rollout.full_params(all_ranks=True, for_backend=False),
        )
        ck = c.get("checkpoint") or {}
        ckpt = ckpting.RoundCheckpoint(
            out / "checkpoints", every=int(ck.get("every", c.get("ckpt_every", 5))),
            last_every=int(ck.get("last_every", 1)), keep=int(ck.get("keep", -1)),
        )
        trainer_cfg.pop("_target_", None)
        strategy = build_strategy(trainer_cfg.pop("strategy", None))
        trainer = pl.Trainer(
            **trainer_cfg, **({"strategy": strategy} if strategy is not None else {}),
            max_epochs=int(c["rounds"]), logger=loggers or False, callbacks=[rollout, ckpt],
            default_root_dir=str(out),
        )
        with progress:
            trainer.fit(module, datamodule=BufferDataModule(stream), ckpt_path=ckpt_path)
        if rank0:
            save_policies(models, tokenizers, out / "policies")
        final = record.data.get("final") or {}
        record.finish("completed", wall_s_train=time.time() - t0, history=rollout.history)
        if rank0:
            summarise(record.data)
        return final.get("eval/pass1")
    except BaseException as e:
        record.finish(failure_status(e), error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-4000:])
        raise
    finally:
        finish_loggers(loggers)
        if sandbox is not None:
            sandbox.close()


def completed_run(out: Path) -> dict[str, Any] | None:
    """results.json of ``out`` when that run finished (status completed and its policies saved), else None."""
    import json

    try:
        data = json.loads((out / "results.json").read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and data.get("status") == "completed" and (out / "policies").is_dir()
    return data if ok else None


def resolve_resume(resume: Any, out: Path) -> str | None:
    """``resume``: null (fresh), ``auto`` (this run dir's last complete checkpoint, if any) or a run dir /
    checkpoint path (see `mars2.training.checkpointing.find_resume_checkpoint`)."""
    from mars2.training.checkpointing import find_resume_checkpoint

    return find_resume_checkpoint(resume, out)


def restore_record(record: Any, evals: list[dict[str, float]], round_idx: int) -> None:
    """results.json of a resumed run: the evaluations in its checkpoint (later ones belonged to the lost
    round), and when it resumed."""
    record.data["evals"] = [{"round": int(m.get("round", 0)), **m} for m in evals]
    record.data["initial"] = record.data["evals"][0] if evals else None
    record.data["final"] = record.data["evals"][-1] if evals else None
    record.data.setdefault("resumes", []).append(
        {"round": round_idx, "checkpoint": record.data.get("resumed_from"), "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
    )
    record.flush()


def silent_record(*args: Any) -> Any:
    """Run record of a non-zero rank of a distributed run: same data, never written (rank 0 owns
    results.json)."""
    from mars2.tracking.records import RunRecord

    class SilentRecord(RunRecord):
        def flush(self) -> None:
            pass

        def finish(self, status: str, **extra: Any) -> None:
            self.data["status"] = status
            self.data.update(extra)

    return SilentRecord(*args)


def save_policies(models: dict[str, Any], tokenizers: dict[str, Any], folder: Path) -> None:
    """Trained policies in the real HF format, so evaluate.py loads them like any checkpoint."""
    for pid, model in models.items():
        model.save_pretrained(folder / pid)
        tokenizers[pid].save_pretrained(folder / pid)


def summarise(data: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"mars2 {data['config']['name']} (seed {data['config']['seed']})")
    table.add_column("metric")
    table.add_column("start", justify="right")
    table.add_column("end", justify="right")
    first, last = data.get("initial") or {}, data.get("final") or {}
    for key in ("eval/pass1", "eval/pass1_mcts", "eval/pass_at_n", "eval/avg_pass1"):
        if key in last:
            table.add_row(key, f"{first.get(key, float('nan')):.3f}", f"{last[key]:.3f}")
    table.add_row("wall s", "", f"{data.get('wall_s', 0):.0f}")
    Console(stderr=True).print(table)
