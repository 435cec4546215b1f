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
from mars2.tasks.loaders import TaskDataError

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
    """Entry used by train.py. Bad configs and missing resources end with one clear line and exit code 2.
    Inside a ``-m`` sweep a job that fails (bad config, missing resources, or a crash) leaves FAILED.json and
    results.json (status failed) in its run dir, prints one line and returns None, so the sweep goes on and
    ends with `SweepSummary`'s one line per failed job instead of Hydra re-raising the first failure as a
    traceback. Optuna's TrialPruned still propagates (the sweeper records the trial as pruned)."""
    from omegaconf.errors import OmegaConfBaseException

    from mars2.tracking.records import JobFailed, fail_job, in_multirun

    multirun = in_multirun()
    if not multirun:
        refuse_sweep_without_multirun(hydra_overrides())
    try:
        try:
            resolved = OmegaConf.to_container(cfg, resolve=True)
            validate_config(resolved)
        except (ConfigError, OmegaConfBaseException) as e:
            fail_job(f"config error: {e}")
        try:
            return train(resolved, cfg)
        except RunDirInUse as e:  # never write into the run dir we refuse to touch
            print(f"mars2: {e}", file=sys.stderr)
            if multirun:
                return None
            sys.exit(2)
        except (SetupError, TaskDataError, ConfigError) as e:  # ConfigError: e.g. eval.extra_splits, read in train()
            fail_job(str(e))
    except JobFailed:  # fail_job printed the line and wrote FAILED.json
        return None
    except Exception as e:
        if not multirun or type(e).__name__ == "TrialPruned":
            raise
        print(f"mars2: job failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
              f"(traceback in {job_dir_hint()}/FAILED.json)", file=sys.stderr)
        return None


def job_dir_hint() -> str:
    from mars2.tracking.records import hydra_output_dir

    return str(hydra_output_dir() or "<run dir>")


def refuse_sweep_without_multirun(overrides: list[str]) -> None:
    """``+sweep=X`` without ``-m`` would run one job of the sweep file's defaults (its parameter lists are
    only read by a sweeper): say so and exit 2."""
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key == "sweep" and value and not o.startswith("~"):
            print(f"mars2: {o} is a sweep: add -m to run its jobs (python train.py -m {o}); without -m only one "
                  f"job with the defaults would run", file=sys.stderr)
            sys.exit(2)


PREVIOUS_RUN = ("checkpoints", "policies", "trees", "results.json")


def previous_run_files(out: Path) -> list[str]:
    """What a train.py run left in ``out`` that a fresh run would overwrite or mix with: checkpoints, saved
    policies, trees, or a results.json that is more than a start-up failure (status failed with nothing
    trained). Empty: the dir is new (Hydra's .hydra/ and logs do not count)."""
    import json

    found = []
    for name in PREVIOUS_RUN:
        p = out / name
        if name == "results.json":
            if not p.is_file():
                continue
            try:
                data = json.loads(p.read_text())
            except (OSError, ValueError):
                data = {}
            if isinstance(data, dict) and data.get("status") == "failed" and not data.get("evals"):
                continue  # a run that never started (config error, missing weights): nothing to lose
            found.append(name)
        elif p.is_dir() and any(p.iterdir()):
            found.append(name + "/")
    return found


def refuse_overwrite(c: dict[str, Any], out: Path, cfg: DictConfig | None) -> None:
    """A fresh run (``resume`` null) into a run dir that already holds a run: SetupError (one line) unless
    ``overwrite=true``. Rank 0 only (other ranks start after rank 0 has written its own files)."""
    if c.get("resume") not in (None, "", "null", "None", False):
        return
    if overwrite_requested(c, cfg):
        return
    found = previous_run_files(out)
    if found:
        raise RunDirInUse(
            f"{out} already holds a run ({', '.join(found)}): continue it with resume=auto "
            f"(hydra.run.dir={out} resume=auto), pick a new dir, or pass overwrite=true to start it over")


def overwrite_requested(c: dict[str, Any], cfg: DictConfig | None) -> bool:
    """``overwrite=true`` (conf/train.yaml's ``overwrite``; read with a default so that a config without
    the key means false)."""
    if cfg is not None:
        return bool(OmegaConf.select(cfg, "overwrite", default=False))
    return bool(c.get("overwrite", False))


class RunDirInUse(SetupError):
    """A fresh run would overwrite an existing run dir (19.4)."""


def train(c: dict[str, Any], cfg: DictConfig | None = None) -> float | None:
    from mars2.cli.build import make_team, preflight

    agents = make_team(c)
    # before any model loads: weights / GPUs / vLLM of real-scale runs, a trainer this machine can run
    preflight(c, agents, training=True)
    from mars2.training.strategy import global_rank_from_env

    out = Path(c["paths"]["output_dir"])
    # Distributed runs (trainer=ddp/fsdp) start this function once per rank; only rank 0 writes run files.
    rank0 = global_rank_from_env() == 0
    if rank0:  # before anything is loaded or written: an existing run is never overwritten silently
        refuse_overwrite(c, out, cfg)

    import lightning.pytorch as pl
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mars2.agents.team import team_policies
    from mars2.cli.build import (
        build_backend, build_policies, build_sandbox, close_backend, load_problems, loss_config, sample_config,
        search_config,
    )
    from mars2.rl.buffers import PolicyBuffers
    from mars2.tracking.loggers import build_loggers, finish_loggers
    from mars2.tracking.records import RunRecord, failure_status
    from mars2.training.data import BufferDataModule, BufferStream
    from mars2.training import checkpointing as ckpting
    from mars2.training.module import MarsModule
    from mars2.training.rollout import TreeSearchRollout
    from mars2.reward_model.online import RoundwiseRM
    from mars2.tasks.registry import require_split
    from mars2.training.strategy import build_strategy

    out.mkdir(parents=True, exist_ok=True)
    done = completed_run(out) if c.get("resume") == "auto" else None
    if done is not None:  # a rerun of a finished sweep (e.g. the study) skips the jobs that completed
        log.info("%s: already completed; nothing to resume (delete results.json to train again)", out)
        return (done.get("final") or {}).get("eval/pass1")
    if rank0 and not c.get("resume") and overwrite_requested(c, cfg):
        clear_previous_run(out)
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
    backend = None
    try:
        problems = load_problems(c)
        log.info("problems: %s", {k: len(v) for k, v in problems.items()})
        from mars2.evaluation import extra_splits_given, select_extra_splits  # eval.extra_splits (e.g. test_iid)

        extra_splits = select_extra_splits(
            c["task"]["name"], problems, c["eval"].get("extra_splits"), main=c["eval"]["split"],
            explicit=extra_splits_given(hydra_overrides()), n_problems=int(c["eval"].get("n_problems") or 0),
            log=log.info)
        sandbox = build_sandbox(c)
        policy_ids = team_policies(agents)
        models, tokenizers, warm = build_policies(c, policy_ids, problems, sandbox)
        record.data["warm_start"] = warm
        backend = build_backend(c, models, tokenizers, seed=int(c["seed"]))
        rl = c["rl"]
        loss_cfg = loss_config(c)  # rl.tis auto: on when the rollout engine is not the trainer
        module = MarsModule(models, loss_cfg, c["model"]["optim"])
        if backend.capabilities.holds_own_weights:  # vLLM: sync the engine after each optimiser step of a policy
            module.on_policy_updated = backend.on_policy_updated
        # the same on every rank: under FSDP every rank enters the full-weights gather, rank 0's engine syncs
        module.publish_weights = backend.capabilities.holds_own_weights
        buffers = PolicyBuffers(policy_ids, int(rl["train_batch_size"]), keep_remainder=bool(rl["keep_remainder"]))
        pad_ids = {pid: pad_id(tokenizers[pid], pid) for pid in policy_ids}
        sample_cfg = sample_config(c)
        search = search_config(c["search"])
        task_name, train_split = c["task"]["name"], c.get("train_split", "train")
        eval_search = search_config(c["eval"]["search"], "eval.search")
        if ckpt_path and rank0:  # the CSV logger deletes metrics.csv on start: keep its rows for the restore
            ckpting.stash_metrics_csv(out)
        # Trackers live on rank 0 only (their run ids in logger_ids.json must be rank 0's); build_loggers
        # continues the interrupted run's wandb / MLflow runs on resume.
        loggers = build_loggers(c) if rank0 else []
        progress = Progress(
            TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), transient=False, disable=not rank0,
        )
        for lg in loggers:  # the round logger puts each round's key metrics on the rich bar
            if hasattr(lg, "attach"):
                lg.attach(progress)
        rollout = TreeSearchRollout(
            agents=agents, backend=backend, scorer=sandbox, train_problems=require_split(task_name, problems, train_split),
            test_problems=require_split(task_name, problems, c["eval"]["split"]), train_split=train_split, buffers=buffers, search=search, sample_cfg=sample_cfg,
            rollout_batch_size=int(rl["rollout_batch_size"]), reward_tests=rl["reward_tests"],
            eval_cfg=c["eval"], eval_search=eval_search, seed=int(c["seed"]), output_dir=out,
            on_eval=record.add_eval, on_restore=lambda evals, r: restore_record(record, evals, r),
            progress=progress if rank0 else None, extra_splits=extra_splits,
            reward_model=RoundwiseRM.from_config(c.get("rm"), int(c["seed"])),  # experiment=reward_model: R_θ
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
        # every rank: under FSDP the full weights are gathered collectively, rank 0 writes
        ckpting.save_policies(models, tokenizers, out / "policies", root=trainer.strategy.model)
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
        if backend is not None:  # vLLM: engines shut down, exported weights (/tmp/mars2-vllm-*) removed
            close_backend(backend)
        if sandbox is not None:
            sandbox.close()


def pad_id(tokenizer: Any, pid: str) -> int:
    """The id training batches are padded with: the tokenizer's pad token, else its eos (Llama-3 style
    tokenizers have no pad token); neither is a SetupError naming the policy."""
    for tid in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if isinstance(tid, (list, tuple)):
            tid = tid[0] if tid else None
        if tid is not None:
            return int(tid)
    raise SetupError(f"policy {pid}: its tokenizer has neither a pad nor an eos token; set one in its "
                     f"tokenizer_config.json")


def clear_previous_run(out: Path) -> None:
    """``overwrite=true``: remove the previous run's checkpoints, policies, trees and records, so the new run
    does not mix with them (the dir's .hydra/ is the new run's own)."""
    import shutil

    for name in (*PREVIOUS_RUN, "FAILED.json", "metrics.csv", "logger_ids.json", "reward_model"):
        p = out / name
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        elif p.exists():
            p.unlink()
    if any((out / n).exists() for n in PREVIOUS_RUN):
        raise SetupError(f"overwrite=true: could not clear {out}")
    log.info("overwrite=true: cleared the previous run in %s", out)


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


try:  # Hydra is a dependency of the CLI; the callback base is only needed when Hydra loads this callback
    from hydra.experimental.callback import Callback as _HydraCallback
except Exception:  # pragma: no cover
    _HydraCallback = object  # type: ignore[misc,assignment]


class SweepSummary(_HydraCallback):
    """Hydra callback (``hydra.callbacks.sweep_summary._target_: mars2.cli.train.SweepSummary``): at the end of
    a ``-m`` sweep, one line per failed job (its FAILED.json) and a summary; exit code 1 when a job failed.
    The jobs themselves return normally after recording their failure (`run_train`), so Hydra does not end the
    sweep by re-raising the first failure as a traceback."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir", default=".")))
        lines, n_failed, n_jobs = sweep_report(sweep_dir)
        if not n_jobs:
            return
        for line in lines:
            print(line, file=sys.stderr)
        if n_failed:
            sys.exit(1)


def sweep_report(sweep_dir: Path) -> tuple[list[str], int, int]:
    """(lines, failed jobs, jobs) of the sweep in ``sweep_dir``: one line per job dir with a FAILED.json
    (its error's first line), then ``mars2: sweep <dir>: N job(s), K failed``."""
    import json

    jobs = sorted({p.parent.parent for p in sweep_dir.glob("*/.hydra/config.yaml")}, key=_job_order)
    lines = []
    failed = 0
    for job in jobs:
        marker = job / "FAILED.json"
        if not marker.is_file():
            continue
        failed += 1
        try:
            error = str(json.loads(marker.read_text()).get("error") or "failed")
        except (OSError, ValueError):
            error = "failed (unreadable FAILED.json)"
        lines.append(f"mars2: FAILED {job.name}: {error.splitlines()[0] if error else 'failed'}")
    lines.append(f"mars2: sweep {sweep_dir}: {len(jobs)} job(s), {failed} failed"
                 + (" (details in each job's FAILED.json)" if failed else ""))
    return lines, failed, len(jobs)


def _job_order(p: Path) -> tuple[int, str]:
    head = p.name.split("_", 1)[0]
    return (int(head), p.name) if head.isdigit() else (1 << 30, p.name)
