"""Body of `python study.py`: the miniature study of a plan file (default ``sweeps/study/plan.yaml``) as
resumable ``train.py`` / ``evaluate.py`` jobs, then the results page (:mod:`mars2.tracking.study_report`).

Each job is an ordinary run with its own run dir, so everything else (compare.py, the trackers, resume)
works on it too. A rerun of the same command skips finished jobs (``results.json`` status completed), lets
killed training jobs continue from their last checkpoint (``resume=auto``) and retries failed ones; failures
do not stop the other jobs, and the command exits 1 when any job failed.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

STAGES = ("train", "eval", "report")


@dataclass
class Job:
    stage: str
    name: str                 # plan entry (train run or evaluation)
    run: str                  # train run this job belongs to (== name for train jobs)
    seed: int
    dir: Path
    cmd: list[str]
    after: list[Path] = field(default_factory=list)  # run dirs that must have completed first


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
        unknown = [r for r in spec.get("of") or [] if r not in runs]
        if unknown:
            raise PlanError(f"{path}: eval.runs.{name}.of names unknown train runs {unknown}")
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


def build_jobs(plan: dict[str, Any], root: Path, repo: Path, seeds: Sequence[int], only: Sequence[str] | None,
               python: str = sys.executable) -> list[Job]:
    jobs: list[Job] = []
    train = plan["train"]
    wanted = [r for r in train["runs"] if not only or r in only]
    for run in wanted:
        for seed in seeds:
            d = train_dir(root, run, seed)
            cmd = [python, str(repo / "train.py"), *train.get("common", []), *train["runs"][run], f"seed={seed}",
                   f"hydra.run.dir={d}", "resume=auto"]
            jobs.append(Job("train", run, run, seed, d, cmd))
    ev = plan.get("eval") or {}
    for name, spec in (ev.get("runs") or {}).items():
        for run in spec.get("of") or list(train["runs"]):
            if run not in wanted:
                continue
            for seed in seeds:
                src = train_dir(root, run, seed)
                d = root / "eval" / name / run_name(run, seed)
                cmd = [python, str(repo / "evaluate.py"), f"ckpt={src}", *ev.get("common", []), *spec["args"],
                       f"seed={seed}", f"hydra.run.dir={d}"]
                jobs.append(Job("eval", name, run, seed, d, cmd, after=[src]))
    return jobs


def _start(job: Job) -> subprocess.Popen:
    job.dir.mkdir(parents=True, exist_ok=True)
    log = open(job.dir / "job.log", "ab")
    log.write(f"\n$ {' '.join(job.cmd)}\n".encode())
    log.flush()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(job.cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=Path(job.cmd[1]).parent)


def run_jobs(jobs: Sequence[Job], parallel: int, say=print) -> list[Job]:
    """Run the jobs that have not completed, ``parallel`` at a time, in order; a job whose prerequisites did
    not complete is skipped. Returns the failed (or skipped) jobs."""
    pending = [j for j in jobs if not completed(j.dir, need_policies=j.stage == "train")]
    done = len(jobs) - len(pending)
    if done:
        say(f"study: {done}/{len(jobs)} jobs already completed")
    failed: list[Job] = []
    running: list[tuple[Job, subprocess.Popen, float]] = []
    try:
        while pending or running:
            while pending and len(running) < parallel:
                job = pending.pop(0)
                if not all(completed(a, need_policies=True) for a in job.after):
                    say(f"study: skip {job.stage} {job.dir.name} of {job.name}: its training run did not complete")
                    failed.append(job)
                    continue
                say(f"study: start {job.stage} {job.name} seed {job.seed} -> {job.dir}")
                running.append((job, _start(job), time.time()))
            time.sleep(0.5)
            for item in list(running):
                job, proc, t0 = item
                if proc.poll() is None:
                    continue
                running.remove(item)
                ok = proc.returncode == 0 and completed(job.dir, need_policies=job.stage == "train")
                say(f"study: {'done' if ok else 'FAILED'} {job.stage} {job.name} seed {job.seed} "
                    f"({time.time() - t0:.0f} s){'' if ok else f', exit {proc.returncode}, see {job.dir}/job.log'}")
                if not ok:
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
    ap.add_argument("--dry-run", action="store_true", help="print the commands of the jobs still to run")
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
    jobs = build_jobs(plan, root, repo, seeds, only)
    failed: list[Job] = []
    for stage in ("train", "eval"):
        if stage not in stages:
            continue
        todo = [j for j in jobs if j.stage == stage]
        if args.dry_run:
            for j in todo:
                if not completed(j.dir, need_policies=stage == "train"):
                    print(" ".join(j.cmd))
            continue
        failed += run_jobs(todo, max(1, args.jobs))
    if "report" in stages and not args.dry_run:
        from mars2.tracking.study_report import write_report

        page = write_report(plan, root, Path(args.out), seeds)
        print(f"study: wrote {page}")
    if failed:
        print(f"study: {len(failed)} job(s) failed or were skipped: " + ", ".join(
            f"{j.stage}:{j.dir.relative_to(root)}" for j in failed), file=sys.stderr)
        return 1
    return 0
