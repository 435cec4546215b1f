"""Body of `python study.py`: the miniature study of a plan file (default ``sweeps/study/plan.yaml``) as
resumable ``train.py`` / ``evaluate.py`` jobs, then the results page (:mod:`mars2.tracking.study_report`).

Each job is an ordinary run with its own run dir, so everything else (compare.py, the trackers, resume)
works on it too. A rerun of the same command skips finished jobs (``results.json`` status completed), lets
killed training jobs continue from their last checkpoint (``resume=auto``) and retries failed ones; failures
do not stop the other jobs, and the command exits 1 when any job failed.

Resuming on another machine (issue 18): run dirs hold checkpoints and stay out of git, so every finished job
also copies its small result files (``results.json``, ``eval_per_problem.json``, plus ``job.json``: command,
commit, seconds, load) into the **ledger** (default ``docs/results/runs/``, same layout as the run dirs). The
ledger is what the results page is built from, and a job found there is finished even where its run dir is
gone; commit the ledger and a fresh clone continues the study where it stopped. Jobs run unit by unit (a
training run, then the evaluations of its checkpoint), so at most ``--jobs`` units are in flight when a
session stops; a training run is redone only when an evaluation of it is still missing and its checkpoint is
not on this machine.

One checkpoint per run: every evaluation in the ledger is of the checkpoint its training entry describes. An
evaluation records which training entry it evaluated (``job.json`` ``train_finished``; older entries: it must
have finished after its training). When a training run is redone, its new ``final`` metrics are compared with
the ledger's: the same (a bit-reproducible rerun on the same code and machine) keeps its evaluations; different
(another machine's floating point, changed code) drops them from the ledger and they are redone against the new
checkpoint. Stale evaluations found at start are dropped the same way, never mixed into the results page.

Held-out splits: each evaluation runs once per split in the plan's ``eval.splits`` (default ``[test]``; an
evaluation's own ``splits`` overrides it), in ``eval/<split>/<name>/<run>_s<seed>``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

STAGES = ("train", "eval", "report")
LEDGER_FILES = ("results.json", "eval_per_problem.json")  # what the results page reads (small; checkpoints stay out)


@dataclass
class Job:
    stage: str
    name: str                 # plan entry (train run or evaluation)
    run: str                  # train run this job belongs to (== name for train jobs)
    seed: int
    dir: Path
    cmd: list[str]
    after: list[Path] = field(default_factory=list)  # run dirs that must have completed first
    split: str = "test"       # held-out split of an evaluation job
    rel: Path = Path()        # dir relative to the study root (= its place in the ledger)
    train_rel: Path | None = None  # an evaluation's training run, relative to the study root


class PlanError(ValueError):
    pass


def load_plan(path: str | Path) -> dict[str, Any]:
    import yaml

    try:
        plan = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise PlanError(f"cannot read study plan {path}: {e}") from e
    if not isinstance(plan, dict) or not isinstance(plan.get("train"), dict) or not plan["train"].get("runs"):
        raise PlanError(f"{path}: a study plan needs `train: {{runs: {{name: [overrides]}}}}`")
    runs = plan["train"]["runs"]
    for name, args in runs.items():
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            raise PlanError(f"{path}: train.runs.{name} must be a list of override strings")
    for name, spec in ((plan.get("eval") or {}).get("runs") or {}).items():
        if not isinstance(spec, dict) or not isinstance(spec.get("args"), list):
            raise PlanError(f"{path}: eval.runs.{name} needs `args: [overrides]` (and `of: [train runs]`)")
        if "splits" in spec and (not isinstance(spec["splits"], list) or not spec["splits"]
                                 or not all(isinstance(x, str) and x and "/" not in x for x in spec["splits"])):
            raise PlanError(f"{path}: eval.runs.{name}.splits must be a non-empty list of split names")
        unknown = [r for r in spec.get("of") or [] if r not in runs]
        if unknown:
            raise PlanError(f"{path}: eval.runs.{name}.of names unknown train runs {unknown}")
    splits = (plan.get("eval") or {}).get("splits", ["test"])
    if not isinstance(splits, list) or not splits or not all(isinstance(x, str) and x and "/" not in x
                                                              for x in splits):
        raise PlanError(f"{path}: eval.splits must be a non-empty list of split names")
    seeds = plan.get("seeds", [0])
    if not isinstance(seeds, list) or not all(isinstance(s, int) for s in seeds):
        raise PlanError(f"{path}: seeds must be a list of ints")
    return plan


def run_name(run: str, seed: int) -> str:
    return f"{run}_s{seed}"


def train_dir(root: Path, run: str, seed: int) -> Path:
    return root / "train" / run_name(run, seed)


def completed(run_dir: Path, need_policies: bool = False) -> bool:
    try:
        data = json.loads((run_dir / "results.json").read_text())
    except (OSError, ValueError):
        return False
    return data.get("status") == "completed" and (not need_policies or (run_dir / "policies").is_dir())


def eval_dir(root: Path, split: str, name: str, run: str, seed: int) -> Path:
    return root / "eval" / split / name / run_name(run, seed)


def build_jobs(plan: dict[str, Any], root: Path, repo: Path, seeds: Sequence[int], only: Sequence[str] | None,
               python: str = sys.executable) -> list[Job]:
    """Every job of the plan, unit by unit: for each seed and training run, the training job and then every
    evaluation of its checkpoint (each evaluation once per held-out split)."""
    jobs: list[Job] = []
    train = plan["train"]
    ev = plan.get("eval") or {}
    splits = list(ev.get("splits") or ["test"])
    wanted = [r for r in train["runs"] if not only or r in only]
    for seed in seeds:
        for run in wanted:
            d = train_dir(root, run, seed)
            cmd = [python, str(repo / "train.py"), *train.get("common", []), *train["runs"][run], f"seed={seed}",
                   f"hydra.run.dir={d}", "resume=auto"]
            jobs.append(Job("train", run, run, seed, d, cmd, rel=d.relative_to(root)))
            for name, spec in (ev.get("runs") or {}).items():
                if run not in (spec.get("of") or list(train["runs"])):
                    continue
                for split in spec.get("splits") or splits:
                    e = eval_dir(root, split, name, run, seed)
                    cmd = [python, str(repo / "evaluate.py"), f"ckpt={d}", *ev.get("common", []), *spec["args"],
                           f"eval.split={split}", f"seed={seed}", f"hydra.run.dir={e}"]
                    jobs.append(Job("eval", name, run, seed, e, cmd, after=[d], split=split,
                                    rel=e.relative_to(root), train_rel=d.relative_to(root)))
    return jobs


def _git_commit(repo: Path) -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=10)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


class Ledger:
    """The committed record of finished jobs (see module docstring): ``<dir>/<job.rel>/{results.json, ...}``."""

    def __init__(self, path: Path | None, repo: Path | None = None):
        self.path = path
        self.repo = repo

    def has(self, job: Job) -> bool:
        return self.path is not None and completed(self.path / job.rel) and not self.stale(job)

    def _meta(self, rel: Path) -> dict[str, Any] | None:
        try:
            return json.loads((self.path / rel / "job.json").read_text()) if self.path is not None else None
        except (OSError, ValueError):
            return None

    def stale(self, job: Job) -> bool:
        """An evaluation in the ledger that is not of the checkpoint its training entry describes."""
        if job.stage != "eval" or job.train_rel is None:
            return False
        ev, tr = self._meta(job.rel), self._meta(job.train_rel)
        if ev is None or tr is None or not tr.get("finished"):
            return False
        if "train_finished" in ev:
            return ev["train_finished"] != tr["finished"]
        return str(ev.get("finished") or "") < str(tr["finished"])  # same-format UTC-offset stamps of one clock

    def drop(self, job: Job) -> None:
        """Remove a job's ledger entry (a stale evaluation; git history keeps the old files)."""
        if self.path is not None and (self.path / job.rel).is_dir():
            shutil.rmtree(self.path / job.rel)

    def prune(self, jobs: Sequence[Job], say=print) -> int:
        stale = [j for j in jobs if self.stale(j)]
        for j in stale:
            self.drop(j)
        if stale:
            say(f"study: dropped {len(stale)} stale evaluation(s) from the ledger (their training run was redone "
                f"since): {', '.join(sorted({str(j.train_rel) for j in stale}))}")
        return len(stale)

    def _final(self, rel: Path) -> Any:
        try:
            return json.loads((self.path / rel / "results.json").read_text()).get("final")
        except (OSError, ValueError, AttributeError):
            return None

    def record(self, job: Job, seconds: float, cpu_s: float | None = None, evals: Sequence[Job] = (),
               finished: str | None = None) -> None:
        """Copy a finished job into the ledger. For a training job, ``evals`` are the evaluations of its
        checkpoint: kept (restamped) where the rerun reproduced the ledger's ``final`` metrics, else dropped."""
        if self.path is None:
            return
        dst = self.path / job.rel
        dst.mkdir(parents=True, exist_ok=True)
        old_final = self._final(job.rel) if job.stage == "train" else None
        same_ckpt = job.stage == "train" and old_final is not None and _same_final(old_final, job.dir)
        for name in LEDGER_FILES:
            if (job.dir / name).is_file():
                _copy_compact(job.dir / name, dst / name)
        meta = {"stage": job.stage, "name": job.name, "run": job.run, "seed": job.seed, "split": job.split,
                "cmd": [Path(job.cmd[1]).name, *job.cmd[2:]], "seconds": round(seconds, 1),
                "cpu_s": None if cpu_s is None else round(cpu_s, 3),
                "finished": finished or time.strftime("%Y-%m-%dT%H:%M:%S%z"), "loadavg": [round(x, 2) for x in os.getloadavg()],
                "commit": _git_commit(self.repo) if self.repo else None}
        if job.stage == "eval" and job.train_rel is not None:
            tr = self._meta(job.train_rel)
            meta["train_finished"] = tr.get("finished") if tr else None
        (dst / "job.json").write_text(json.dumps(meta, indent=1) + "\n")
        if job.stage == "train" and old_final is not None:
            for e in evals:
                ev = self._meta(e.rel)
                if ev is None:
                    continue
                if same_ckpt:  # the same checkpoint again: its evaluations stay valid
                    ev["train_finished"] = meta["finished"]
                    (self.path / e.rel / "job.json").write_text(json.dumps(ev, indent=1) + "\n")
                else:
                    self.drop(e)
                    _set_aside(e.dir)
        diag = _diagnostics(job.dir)
        if diag is not None:
            (dst / "diagnostics.json").write_text(json.dumps(diag) + "\n")

    def backfill(self, jobs: Sequence[Job], say=print) -> int:
        """Copy every finished job whose run dir is here into the ledger again (result files and diagnostics;
        its job.json seconds and load are kept). Returns how many."""
        n = 0
        for job in jobs:
            if self.path is None or not completed(job.dir):
                continue
            old = self.path / job.rel / "job.json"
            keep = json.loads(old.read_text()) if old.is_file() else None
            self.record(job, float((keep or {}).get("seconds") or 0.0), (keep or {}).get("cpu_s"),
                        evals=[e for e in jobs if e.train_rel == job.rel], finished=(keep or {}).get("finished"))
            if keep:
                old.write_text(json.dumps(keep, indent=1) + "\n")
            n += 1
        say(f"study: re-recorded {n} finished job(s) into {self.path}")
        return n


def _set_aside(run_dir: Path) -> None:
    """Move a finished local evaluation of an earlier checkpoint to ``<dir>.stale`` (kept, not read)."""
    if completed(run_dir):
        aside = run_dir.with_name(run_dir.name + ".stale")
        shutil.rmtree(aside, ignore_errors=True)
        run_dir.rename(aside)


def _same_final(old_final: Any, run_dir: Path) -> bool:
    try:
        new = json.loads((run_dir / "results.json").read_text()).get("final")
    except (OSError, ValueError, AttributeError):
        return False
    # through JSON both ways, so NaN == NaN and float formatting are the ledger's
    return json.dumps(old_final, sort_keys=True) == json.dumps(new, sort_keys=True)


def _copy_compact(src: Path, dst: Path) -> None:
    """Copy a result file into the ledger without indentation, and without ``results.json``'s per-problem
    lists under ``metrics`` (the same outcomes are in ``eval_per_problem.json``): a third of the bytes."""
    try:
        data = json.loads(src.read_text())
    except ValueError:
        shutil.copyfile(src, dst)
        return
    if src.name == "results.json" and isinstance(data.get("metrics"), dict):
        data["metrics"] = {k: ({kk: vv for kk, vv in v.items() if kk != "per_problem"} if isinstance(v, dict) else v)
                           for k, v in data["metrics"].items()}
    dst.write_text(json.dumps(data, separators=(",", ":")) + "\n")


def _diagnostics(run_dir: Path) -> dict[str, Any] | None:
    """Search diagnostics of a run's saved trees (depth-wise repair, GEN/CONT shares) for the ledger; a
    problem reading them is reported in the dict, never raised (the job itself has finished)."""
    if not (run_dir / "trees").is_dir():
        return None
    try:
        from mars2.tracking.tree_diagnostics import summarize
    except ImportError:
        return None
    try:
        return summarize(run_dir)
    except Exception as e:  # noqa: BLE001 - a diagnostic must not lose the job's results
        return {"error": f"{type(e).__name__}: {e}"}


def _start(job: Job) -> subprocess.Popen:
    job.dir.mkdir(parents=True, exist_ok=True)
    log = open(job.dir / "job.log", "ab")
    log.write(f"\n$ {' '.join(job.cmd)}\n".encode())
    log.flush()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(job.cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=Path(job.cmd[1]).parent)


def _done(job: Job, ledger: Ledger) -> bool:
    if ledger.stale(job):
        return False
    return completed(job.dir, need_policies=job.stage == "train") or ledger.has(job)


def _todo(jobs: Sequence[Job], ledger: Ledger) -> list[Job]:
    """The jobs still to run: an evaluation not finished anywhere; a training job not finished anywhere, or
    finished only in the ledger while an evaluation of it is still to run and its checkpoint is not here;
    and every evaluation of a training job that runs (again), which `run_jobs` skips at its turn if the
    rerun reproduced the checkpoint (:meth:`Ledger.record`)."""
    evals_left = {a for e in jobs if e.stage == "eval" and not _done(e, ledger) for a in e.after}
    trains = {j.dir for j in jobs if j.stage == "train" and not completed(j.dir, need_policies=True)
              and (not ledger.has(j) or j.dir in evals_left)}
    return [j for j in jobs if (j.dir in trains if j.stage == "train"
                                else not _done(j, ledger) or any(a in trains for a in j.after))]


def _reap(proc: subprocess.Popen) -> float | None:
    """None while ``proc`` runs; once it has exited, its CPU seconds (user + system, with the descendants it
    waited for: the sandbox servers, the warm-start workers), and ``proc.returncode`` is set. CPU time does not
    depend on how loaded the machine was, so the ledger can say what the study costs on an idle one."""
    if proc.returncode is not None:
        return 0.0
    try:
        pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
    except ChildProcessError:  # reaped elsewhere
        proc.poll()
        return 0.0 if proc.returncode is not None else None
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_utime + ru.ru_stime


def run_jobs(jobs: Sequence[Job], parallel: int, say=print, ledger: Ledger | None = None) -> list[Job]:
    """Run the jobs that have not completed, ``parallel`` at a time, in order; a job waits for the run dirs it
    needs (``after``) while they are being made, and is skipped when one of them did not complete. Each
    finished job is copied into the ``ledger``. Returns the failed (or skipped) jobs."""
    ledger = ledger or Ledger(None)
    ledger.prune(jobs, say)
    pending = _todo(jobs, ledger)
    done = len(jobs) - len(pending)
    if done:
        say(f"study: {done}/{len(jobs)} jobs already completed")
    producing = {j.dir for j in pending if j.stage == "train"}
    failed: list[Job] = []
    running: list[tuple[Job, subprocess.Popen, float]] = []
    try:
        while pending or running:
            for job in list(pending):
                if len(running) >= parallel:
                    break
                if any(a in producing and not completed(a, need_policies=True) for a in job.after):
                    continue  # its training run is still to come or running: wait for it
                pending.remove(job)
                if job.stage == "eval" and _done(job, ledger):
                    continue  # its training run was redone and reproduced the checkpoint: still valid
                if not all(completed(a, need_policies=True) for a in job.after):
                    say(f"study: skip {job.stage} {job.rel} of {job.name}: its training run did not complete")
                    failed.append(job)
                    continue
                say(f"study: start {job.stage} {job.name} seed {job.seed}{'' if job.stage == 'train' else ' ' + job.split}"
                    f" -> {job.dir}")
                if job.stage == "eval":
                    _set_aside(job.dir)  # a stale local result (of an earlier checkpoint), if any
                running.append((job, _start(job), time.time()))
            time.sleep(0.5)
            for item in list(running):
                job, proc, t0 = item
                cpu = _reap(proc)
                if cpu is None:
                    continue
                running.remove(item)
                producing.discard(job.dir)
                ok = proc.returncode == 0 and completed(job.dir, need_policies=job.stage == "train")
                say(f"study: {'done' if ok else 'FAILED'} {job.stage} {job.name} seed {job.seed} "
                    f"({time.time() - t0:.0f} s){'' if ok else f', exit {proc.returncode}, see {job.dir}/job.log'}")
                if ok:
                    ledger.record(job, time.time() - t0, cpu,
                                  evals=[e for e in jobs if e.stage == "eval" and e.train_rel == job.rel])
                else:
                    failed.append(job)
    except KeyboardInterrupt:
        for _, proc, _ in running:
            proc.terminate()
        for _, proc, _ in running:
            proc.wait()
        raise
    return failed


def main(argv: Sequence[str] | None = None, repo: Path | None = None) -> int:
    repo = repo or Path(__file__).resolve().parents[3]
    ap = argparse.ArgumentParser(prog="study.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--plan", default=str(repo / "sweeps" / "study" / "plan.yaml"))
    ap.add_argument("--dir", default=str(repo / "study"), help="where the run dirs go (default: study/)")
    ap.add_argument("--jobs", type=int, default=1, help="jobs run in parallel")
    ap.add_argument("--stages", default=",".join(STAGES), help=f"comma list of {STAGES}")
    ap.add_argument("--only", default=None, help="comma list of train runs (and their evaluations)")
    ap.add_argument("--seeds", default=None, help="comma list overriding the plan's seeds")
    ap.add_argument("--out", default=str(repo / "docs"), help="results page folder (results.md + results/*.png)")
    ap.add_argument("--ledger", default=str(repo / "docs" / "results" / "runs"),
                    help="where finished jobs' result files are kept (commit it to resume elsewhere); 'none': off")
    ap.add_argument("--dry-run", action="store_true", help="print the commands of the jobs still to run")
    ap.add_argument("--reledger", action="store_true",
                    help="copy every finished run dir here into the ledger again (e.g. after adding diagnostics)")
    args = ap.parse_args(argv)

    try:
        plan = load_plan(args.plan)
    except PlanError as e:
        print(f"study.py: {e}", file=sys.stderr)
        return 2
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    bad = [s for s in stages if s not in STAGES]
    if bad:
        print(f"study.py: unknown stage(s) {bad}; choose from {STAGES}", file=sys.stderr)
        return 2
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(plan.get("seeds", [0]))
    only = [s.strip() for s in args.only.split(",")] if args.only else None
    if only and (unknown := [r for r in only if r not in plan["train"]["runs"]]):
        print(f"study.py: --only names unknown train runs {unknown}", file=sys.stderr)
        return 2
    root = Path(args.dir).resolve()
    ledger = Ledger(None if args.ledger == "none" else Path(args.ledger).resolve(), repo)
    jobs = [j for j in build_jobs(plan, root, repo, seeds, only) if j.stage in stages]
    failed: list[Job] = []
    if args.reledger:
        ledger.backfill(jobs)
    elif args.dry_run:
        for j in _todo(jobs, ledger):
            print(" ".join(j.cmd))
    elif jobs:
        failed = run_jobs(jobs, max(1, args.jobs), ledger=ledger)
    if "report" in stages and not args.dry_run:
        from mars2.tracking.study_report import write_report

        page = write_report(plan, ledger.path or root, Path(args.out), seeds)
        print(f"study: wrote {page}")
    if failed:
        print(f"study: {len(failed)} job(s) failed or were skipped: " + ", ".join(
            f"{j.stage}:{j.dir.relative_to(root)}" for j in failed), file=sys.stderr)
        return 1
    return 0
