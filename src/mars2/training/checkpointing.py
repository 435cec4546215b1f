"""Checkpoints and exact resume of a training run (design.md principle 4, issue 8).

What a checkpoint holds (one Lightning checkpoint file, written by `RoundCheckpoint` at the end of a round):

* the LightningModule: policies, frozen references (when ``kl_coef > 0``), per-policy step counters;
* every optimiser and LR scheduler (Lightning's own ``optimizer_states`` / ``lr_schedulers``);
* the loop position (the round = epoch counter);
* the `TreeSearchRollout` state: data position (data epoch, problem cursor, rounds done), the per-policy
  buffers, the round history and every evaluation so far (results.json is rebuilt from them), the Python /
  NumPy / torch RNG states and the generation backend's counters (its per-call seed depends on them). The
  search seeds themselves are derived from (seed, round), so they need no state.

Files (under ``<run dir>/checkpoints/``):

* ``last.ckpt`` — the resume point, rewritten every ``last_every`` rounds (default 1: a kill loses at most the
  round in progress). Written to ``last.ckpt.tmp`` and renamed over ``last.ckpt`` only once complete
  (``os.replace`` is atomic on POSIX), so a half-written file is never picked.
* ``roundNNNN.ckpt`` — kept snapshots every ``every`` rounds (and at the last round), NNNN = rounds done;
  a hard link to the same bytes as ``last.ckpt`` when the file system allows (no second write).

Resume: ``resume=auto`` (the same run dir: ``hydra.run.dir=<dir> resume=auto``) or ``resume=<run dir | .ckpt>``.
`find_resume_checkpoint` picks ``last.ckpt``, else the newest snapshot; ``*.tmp`` files never.

Tracking continuity: the CSV logger deletes an existing ``metrics.csv`` when it starts, so before the
loggers are built `stash_metrics_csv` moves it aside; after the checkpoint is restored the rollout callback
writes back the rows of rounds ≤ the restored round (`restore_metrics_csv`), so the rows of the lost round
are dropped and re-logged by its re-run. wandb / MLflow continue their runs from the ids in
``<run dir>/logger_ids.json``, which `mars2.tracking.loggers.build_loggers` writes and reads (rank 0 only).
"""
from __future__ import annotations

import csv
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any, Mapping

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint

LAST = "last.ckpt"
SNAPSHOT_RE = re.compile(r"^round(\d+)\.ckpt$")
CSV_STASH = "metrics.before_resume.csv"


# -- atomic file operations -------------------------------------------------------------------------------------
def _replace(src: Path, dst: Path) -> None:
    """Move ``src`` onto ``dst`` atomically for files; for directories (sharded FSDP checkpoints) the old one
    is moved to ``dst.old`` first, which `find_resume_checkpoint` also accepts, so a kill between the two
    renames still leaves one complete checkpoint."""
    if src.is_dir():
        old = dst.with_name(dst.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        if dst.exists():
            os.replace(dst, old)
        os.replace(src, dst)
        if old.exists():
            shutil.rmtree(old)
    else:
        os.replace(src, dst)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists():
        path.unlink()


class RoundCheckpoint(Checkpoint):
    """Saves the resume checkpoint and the kept snapshots at the end of a round (= epoch).

    Being a `Checkpoint`, Lightning runs it after the other callbacks' ``on_train_epoch_end``, so the rollout
    callback has already logged and evaluated the round and its state (history, evals, RNG) is complete.
    Every rank calls ``trainer.save_checkpoint`` (FSDP gathers or shards collectively; only rank 0 writes a
    single-file checkpoint); the renames happen on rank 0 after a barrier."""

    def __init__(self, dirpath: str | Path, every: int = 5, last_every: int = 1, keep: int = -1) -> None:
        super().__init__()
        self.dirpath = Path(dirpath)
        self.every = int(every)
        self.last_every = max(1, int(last_every))
        self.keep = int(keep)
        self.saved: list[Path] = []  # snapshots written by this process, for logging / tests

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or getattr(trainer, "fast_dev_run", False):
            return
        round_idx = trainer.current_epoch + 1  # rounds done, including this one
        final = trainer.max_epochs is not None and round_idx >= trainer.max_epochs
        snapshot = self.every > 0 and (round_idx % self.every == 0 or final)
        if not (snapshot or final or round_idx % self.last_every == 0):
            return
        last = self.dirpath / LAST
        tmp = self.dirpath / (LAST + ".tmp")
        if trainer.is_global_zero:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            _remove(tmp)  # leftover of a killed save
        trainer.strategy.barrier("mars2_ckpt_pre")
        trainer.save_checkpoint(tmp, weights_only=False)
        trainer.strategy.barrier("mars2_ckpt_saved")
        if trainer.is_global_zero:
            _replace(tmp, last)
            if snapshot:
                self._snapshot(last, self.dirpath / f"round{round_idx:04d}.ckpt")
                self._prune()
        trainer.strategy.barrier("mars2_ckpt_done")

    def _snapshot(self, last: Path, dst: Path) -> None:
        tmp = dst.with_name(dst.name + ".tmp")
        _remove(tmp)
        if last.is_dir():
            shutil.copytree(last, tmp)
        else:
            try:
                os.link(last, tmp)  # same bytes, no second write; later replaces of last.ckpt do not touch it
            except OSError:
                shutil.copyfile(last, tmp)
        _replace(tmp, dst)
        self.saved.append(dst)

    def _prune(self) -> None:
        if self.keep < 0:
            return
        snaps = sorted(snapshots(self.dirpath), key=lambda rp: rp[0])
        for _, path in snaps[: max(0, len(snaps) - self.keep)]:
            _remove(path)


def snapshots(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(round, path) of the complete ``roundNNNN.ckpt`` snapshots in ``ckpt_dir``."""
    out = []
    if ckpt_dir.is_dir():
        for p in ckpt_dir.iterdir():
            m = SNAPSHOT_RE.match(p.name)
            if m:
                out.append((int(m.group(1)), p))
    return out


def find_resume_checkpoint(resume: Any, output_dir: str | Path) -> str | None:
    """Checkpoint to resume from: ``resume`` is None/empty (fresh run), ``auto`` (this run dir; None when it
    has no checkpoint yet, so ``resume=auto`` is safe on a first start), a run dir, a ``checkpoints/`` dir or
    a checkpoint path. Picks ``last.ckpt`` (or ``last.ckpt.old`` left by a killed directory swap), else the
    newest snapshot; never a ``*.tmp``. An explicit path without a checkpoint is an error."""
    from mars2.resources import SetupError

    if resume is None or str(resume).strip() in ("", "null", "None", "false", "False"):
        return None
    auto = str(resume) == "auto"
    p = Path(output_dir) if auto else Path(str(resume)).expanduser()
    if p.is_dir() and not SNAPSHOT_RE.match(p.name) and p.name != LAST:
        ckpt_dir = p / "checkpoints" if (p / "checkpoints").is_dir() else p
        for name in (LAST, LAST + ".old"):
            if (ckpt_dir / name).exists():
                return str(ckpt_dir / name)
        snaps = snapshots(ckpt_dir)
        if snaps:
            return str(max(snaps)[1])
        if auto:
            return None
        raise SetupError(f"resume={resume}: no checkpoint in {ckpt_dir} (expected {LAST} or roundNNNN.ckpt)")
    if p.exists() and not p.name.endswith(".tmp"):
        return str(p)
    if auto:
        return None
    raise SetupError(f"resume={resume}: no checkpoint at {p}")


# -- RNG ---------------------------------------------------------------------------------------------------------
def plain(obj: Any) -> Any:
    """``obj`` with NumPy scalars / arrays turned into Python numbers / lists, so a checkpoint loads with
    ``torch.load(weights_only=True)`` (Lightning's default on some paths; no pickled code)."""
    if isinstance(obj, dict):
        return {k: plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(plain(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def rng_state() -> dict[str, Any]:
    """Python, NumPy and torch (CPU, and CUDA when initialised) global RNG states, as plain values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [str(name), [int(k) for k in keys], int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    if "python" in state:
        py = state["python"]
        # a JSON/pickle round trip may turn the inner tuple into a list
        random.setstate((py[0], tuple(py[1]), py[2]) if isinstance(py, (list, tuple)) else py)
    if "numpy" in state:
        name, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))
    if "torch" in state:
        torch.set_rng_state(torch.as_tensor(state["torch"], dtype=torch.uint8).cpu())
    if "cuda" in state and torch.cuda.is_available():
        try:
            torch.cuda.set_rng_state_all(state["cuda"])
        except Exception:  # a different GPU count: the CUDA streams are not part of the search anyway
            pass


# -- metrics.csv continuity --------------------------------------------------------------------------------------
def stash_metrics_csv(output_dir: str | Path) -> Path | None:
    """Move ``metrics.csv`` aside before the loggers are built (Lightning's CSV logger deletes it on start).
    An existing stash means an earlier resume never got as far as restoring it: it stays the source."""
    out = Path(output_dir)
    stash = out / CSV_STASH
    if stash.is_file():
        return stash
    src = out / "metrics.csv"
    if src.is_file():
        os.replace(src, stash)
        return stash
    return None


def read_metric_rows(path: Path, max_step: int) -> list[dict[str, Any]]:
    """Rows of a metrics.csv with ``step ≤ max_step``, numbers as floats and empty cells dropped."""
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            try:
                step = float(row.get("step", ""))
            except ValueError:
                continue
            if step > max_step:
                continue
            clean: dict[str, Any] = {}
            for k, v in row.items():
                if v is None or v == "":
                    continue
                try:
                    clean[k] = float(v)
                except ValueError:
                    clean[k] = v
            clean["step"] = int(step)
            rows.append(clean)
    return rows


def restore_metrics_csv(loggers: list[Any], output_dir: str | Path, max_step: int,
                        fallback_rows: list[tuple[int, dict[str, float]]] | None = None) -> int:
    """Write the stashed rows with ``step ≤ max_step`` back through every CSV logger (so later rows append to
    them), then delete the stash. Without a stash, ``fallback_rows`` (``(step, metrics)`` in logging order,
    from the checkpoint) are replayed. Returns the number of rows restored."""
    from lightning.pytorch.loggers import CSVLogger

    out = Path(output_dir)
    stash = out / CSV_STASH
    csv_loggers = [lg for lg in loggers if isinstance(lg, CSVLogger)]
    if not csv_loggers:
        return 0
    if stash.is_file():
        rows = read_metric_rows(stash, max_step)
    else:
        rows = [{**m, "step": int(step)} for step, m in (fallback_rows or []) if step <= max_step]
    for lg in csv_loggers:
        exp = lg.experiment
        if not hasattr(exp, "metrics"):
            continue
        exp.metrics = [dict(r) for r in rows] + list(exp.metrics)
        exp.save()
    if stash.is_file():
        stash.unlink()
    return len(rows)


# -- trained policies in the HF format ----------------------------------------------------------------------------
def save_policies(models: Mapping[str, Any], tokenizers: Mapping[str, Any], folder: str | Path,
                  root: Any = None) -> list[Path]:
    """Write each trained policy (weights, config, tokenizer) as an HF folder ``folder/<policy id>`` that
    ``from_pretrained`` / evaluate.py load like any checkpoint. Returns the folders written (rank 0).

    **Every rank must call this** in a distributed run. ``root`` is the outermost module of the run
    (``trainer.strategy.model``; `MarsModule.wrapped_root`): when it is FSDP-sharded, each policy's full state
    dict is gathered collectively on every rank (`gather_full_state_dict`) and rank 0 writes it — calling
    ``save_pretrained`` on rank 0 alone would run FSDP's state-dict collectives on one rank and hang. Unsharded
    (single process, DDP) rank 0 writes each policy's own weights. Ends with a barrier, so no rank moves on
    (or exits) before the files exist."""
    import torch.distributed as dist

    from mars2.training.strategy import gather_full_state_dict, is_sharded

    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    sharded = root is not None and is_sharded(root)
    folder = Path(folder)
    written = []
    for pid, model in models.items():
        state = gather_full_state_dict(root, model) if sharded else None  # collective when sharded
        if rank != 0:
            continue
        target = folder / pid
        if state is None:
            model.save_pretrained(target)
        else:
            model.save_pretrained(target, state_dict=state)
        tokenizers[pid].save_pretrained(target)
        written.append(target)
    if distributed:
        dist.barrier()
    return written
