"""The study driver (study.py: plan → resumable jobs) and its results page (orderings computed from runs)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mars2.cli import study
from mars2.tracking import study_report

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "sweeps" / "study" / "plan.yaml"


def test_shipped_plan_expands_to_the_full_study(tmp_path):
    plan = study.load_plan(PLAN)
    assert len(plan["seeds"]) >= 5  # issue 18: paired statistics over >= 5 seeds
    jobs = study.build_jobs(plan, tmp_path, ROOT, [0, 1, 2], None, python="py")
    train = [j for j in jobs if j.stage == "train"]
    evals = [j for j in jobs if j.stage == "eval"]
    assert {j.name for j in train} >= {"grpo", "rs2", "homo", "hetero", "hetero3"}
    assert len(train) == 3 * len(plan["train"]["runs"])
    # unit by unit: every evaluation comes after its training job and before the next seed's first training job
    for i, j in enumerate(jobs):
        if j.stage == "eval":
            t = next(k for k, x in enumerate(jobs) if x.dir == j.after[0])
            assert t < i and all(x.stage == "eval" or x.dir == j.after[0] for x in jobs[t:i + 1])
    # both held-out splits, each in its own dir; the split is passed to evaluate.py
    assert {e.split for e in evals} == {"test", "test_iid"}
    e = next(e for e in evals if e.name == "t_plus" and e.run == "hetero" and e.split == "test_iid" and e.seed == 1)
    assert e.dir == tmp_path / "eval" / "test_iid" / "t_plus" / "hetero_s1" and "eval.split=test_iid" in e.cmd
    assert e.rel == Path("eval/test_iid/t_plus/hetero_s1")
    j = next(j for j in train if j.name == "hetero" and j.seed == 2)
    assert j.cmd[:2] == ["py", str(ROOT / "train.py")]
    assert "experiment=hetero" in j.cmd and "seed=2" in j.cmd and "resume=auto" in j.cmd
    assert f"hydra.run.dir={tmp_path / 'train' / 'hetero_s2'}" in j.cmd
    # every evaluation points at its training run and waits for it; equal budget for all searches
    for e in evals:
        assert e.after == [tmp_path / "train" / f"{e.run}_s{e.seed}"]
        assert f"ckpt={e.after[0]}" in e.cmd
        budgets = [a for a in e.cmd if a.startswith("eval.budget=")]
        assert budgets[-1] == ("eval.budget=32" if e.name.endswith("_b32") else "eval.budget=16")
    searches = {e.name: [a for a in e.cmd if a.startswith("search@eval.search=")] for e in evals}
    assert searches["best_of_n"] == ["search@eval.search=iid"] and searches["t_plus"] == ["search@eval.search=t_plus"]
    only = study.build_jobs(plan, tmp_path, ROOT, [0], ["grpo"], python="py")
    assert {j.run for j in only} == {"grpo"} and len([j for j in only if j.stage == "train"]) == 1


@pytest.mark.parametrize("bad, match", [
    ("seeds: [0]\n", "needs `train"),
    ("train: {runs: {a: experiment=grpo}}\n", "list of override strings"),
    ("train: {runs: {a: [x=1]}}\neval: {runs: {e: {of: [b], args: []}}}\n", "unknown train runs"),
    ("train: {runs: {a: [x=1]}}\neval: {runs: {e: {of: [a]}}}\n", "needs `args"),
    ("train: {runs: {a: [x=1]}}\nseeds: 3\n", "seeds must be"),
    ("train: {runs: {a: [x=1]}}\neval: {splits: test, runs: {}}\n", "eval.splits must be"),
    ("train: {runs: {a: [x=1]}}\neval: {runs: {e: {args: [], splits: [a/b]}}}\n", "splits must be"),
])
def test_bad_plans_get_a_clear_error(tmp_path, bad, match):
    p = tmp_path / "plan.yaml"
    p.write_text(bad)
    with pytest.raises(study.PlanError, match=match):
        study.load_plan(p)
    assert study.main(["--plan", str(p), "--dry-run"], repo=ROOT) == 2


def _writer(status: str, policies: bool = True, code: int = 0) -> str:
    """A job body that writes its run dir's results.json like train.py / evaluate.py do."""
    return (
        "import json, os, pathlib, sys\n"
        "d = pathlib.Path([a for a in sys.argv if a.startswith('hydra.run.dir=')][0].split('=', 1)[1])\n"
        "d.mkdir(parents=True, exist_ok=True)\n"
        # FAKE_FINAL: the 'final' metrics a training run reports (a rerun on another machine may differ)
        f"(d / 'results.json').write_text(json.dumps({{'status': {status!r}, "
        "'final': {'eval/pass1': float(os.environ.get('FAKE_FINAL', '0.5'))}}))\n"
        + ("(d / 'policies').mkdir(exist_ok=True)\n" if policies else "")
        + "(d / 'count').write_text(str(int((d / 'count').read_text()) + 1 if (d / 'count').exists() else 1))\n"
        f"sys.exit({code})\n"
    )


def _job(tmp_path, stage, name, body, after=()):
    d = tmp_path / stage / name
    return study.Job(stage, name, name, 0, d, [sys.executable, "-c", body, f"hydra.run.dir={d}"], list(after))


def test_run_jobs_skips_finished_retries_failed_and_respects_prerequisites(tmp_path):
    ok = _job(tmp_path, "train", "ok", _writer("completed"))
    bad = _job(tmp_path, "train", "bad", _writer("failed", code=1))
    no_policies = _job(tmp_path, "train", "nopol", _writer("completed", policies=False))
    ev_ok = _job(tmp_path, "eval", "e_ok", _writer("completed"), after=[ok.dir])
    ev_bad = _job(tmp_path, "eval", "e_bad", _writer("completed"), after=[bad.dir])
    said = []
    failed = study.run_jobs([ok, bad, no_policies], parallel=2, say=said.append)
    assert {j.name for j in failed} == {"bad", "nopol"}  # a train run without saved policies is not usable
    failed = study.run_jobs([ev_ok, ev_bad], parallel=1, say=said.append)
    assert [j.name for j in failed] == ["e_bad"] and not (ev_bad.dir / "results.json").exists()
    assert any("did not complete" in s for s in said)
    # rerun: the finished jobs are skipped, the failed one is retried
    study.run_jobs([ok, bad, ev_ok], parallel=2, say=said.append)
    assert (ok.dir / "count").read_text() == "1" and (ev_ok.dir / "count").read_text() == "1"
    assert (bad.dir / "count").read_text() == "2"
    assert "$ " in (bad.dir / "job.log").read_text()  # the command is logged next to the output


def test_ledger_resumes_on_a_machine_without_the_run_dirs(tmp_path, monkeypatch):
    """Issue 18: finished jobs are copied into the ledger; a fresh machine (no run dirs) skips what the ledger
    holds, redoes a training run only for a missing evaluation of it, and waits for it before that evaluation.
    Every evaluation in the ledger is of its training entry's checkpoint: a redone training run that reproduces
    the ledger's final metrics keeps its evaluations, one that does not gets them all redone."""
    import shutil

    root, ledger_dir = tmp_path / "study", tmp_path / "ledger"
    ledger = study.Ledger(ledger_dir)

    def job(stage, name, after=None):
        d = root / stage / name
        return study.Job(stage, name, name, 0, d, [sys.executable, "-c", _writer("completed"), f"hydra.run.dir={d}"],
                         [after.dir] if after else [], rel=d.relative_to(root),
                         train_rel=after.rel if after else None)

    tr, tr2 = job("train", "t"), job("train", "t2")
    ev1, ev2 = job("eval", "e1", tr), job("eval", "e2", tr)
    ev3 = job("eval", "e3", tr2)
    assert study.run_jobs([tr, ev1, tr2, ev3], parallel=2, ledger=ledger) == []
    for j in (tr, ev1, tr2, ev3):
        assert json.loads((ledger_dir / j.rel / "results.json").read_text())["status"] == "completed"
        meta = json.loads((ledger_dir / j.rel / "job.json").read_text())
        assert meta["stage"] == j.stage and meta["seconds"] >= 0 and "loadavg" in meta
        assert 0 < meta["cpu_s"] < 60  # the job's own CPU time (a Python start-up), not the study's
    stamp = json.loads((ledger_dir / tr.rel / "job.json").read_text())["finished"]
    assert json.loads((ledger_dir / ev1.rel / "job.json").read_text())["train_finished"] == stamp

    shutil.rmtree(root)  # a fresh clone: only the ledger is left
    said = []
    # e2 is new: its training run must be redone first (its checkpoint is gone); t2 and e3 are not rerun, and
    # e1 is not either: the rerun reproduced t's final metrics, so e1 is of the same checkpoint
    assert study.run_jobs([tr, ev1, ev2, tr2, ev3], parallel=2, say=said.append, ledger=ledger) == []
    assert (tr.dir / "count").read_text() == "1" and (ev2.dir / "count").read_text() == "1"
    assert not tr2.dir.exists() and not ev1.dir.exists() and not ev3.dir.exists()
    starts = [s for s in said if s.startswith("study: start")]
    assert len(starts) == 2 and "train" in starts[0] and "eval e2" in starts[1]  # e2 waited for its training run
    assert said[0] == "study: 2/5 jobs already completed"  # e1 waits to see whether t's rerun reproduces it
    new_stamp = json.loads((ledger_dir / tr.rel / "job.json").read_text())["finished"]
    assert json.loads((ledger_dir / ev1.rel / "job.json").read_text())["train_finished"] == new_stamp

    # another fresh machine whose rerun of t differs (floating point): t's evaluations are all redone
    shutil.rmtree(root)
    shutil.rmtree(ledger_dir / ev2.rel)
    monkeypatch.setenv("FAKE_FINAL", "0.25")
    said = []
    assert study.run_jobs([tr, ev1, ev2, tr2, ev3], parallel=1, say=said.append, ledger=ledger) == []
    starts = [s for s in said if s.startswith("study: start")]
    assert [s.split(" seed")[0] for s in starts] == ["study: start train t", "study: start eval e1",
                                                     "study: start eval e2"]
    stamp = json.loads((ledger_dir / tr.rel / "job.json").read_text())["finished"]
    for e in (ev1, ev2):
        assert json.loads((ledger_dir / e.rel / "job.json").read_text())["train_finished"] == stamp
    assert json.loads((ledger_dir / tr.rel / "results.json").read_text())["final"]["eval/pass1"] == 0.25


def test_stale_ledger_evaluations_are_dropped_and_redone(tmp_path):
    """An evaluation that finished before its training entry (written by an older study.py, without
    ``train_finished``) is of an earlier checkpoint: dropped from the ledger at start and redone."""
    root, ledger_dir = tmp_path / "study", tmp_path / "ledger"
    ledger = study.Ledger(ledger_dir)
    tr = study.Job("train", "t", "t", 0, root / "train" / "t", [sys.executable, "-c", _writer("completed"),
                   f"hydra.run.dir={root / 'train' / 't'}"], rel=Path("train/t"))
    ev = study.Job("eval", "e", "t", 0, root / "eval" / "e", [sys.executable, "-c", _writer("completed"),
                   f"hydra.run.dir={root / 'eval' / 'e'}"], [tr.dir], rel=Path("eval/e"), train_rel=tr.rel)
    for j, finished in ((tr, "2026-12-02T14:49:20+0000"), (ev, "2026-12-02T07:10:00+0000")):
        (ledger_dir / j.rel).mkdir(parents=True)
        (ledger_dir / j.rel / "results.json").write_text(json.dumps({"status": "completed", "final": {}}))
        (ledger_dir / j.rel / "job.json").write_text(json.dumps({"stage": j.stage, "finished": finished}))
    assert ledger.stale(ev) and not ledger.has(ev) and not ledger.stale(tr)
    tr.dir.mkdir(parents=True)  # the training run's checkpoint is here: only the evaluation is redone
    (tr.dir / "results.json").write_text(json.dumps({"status": "completed", "final": {}}))  # = the ledger's
    (tr.dir / "policies").mkdir()
    said = []
    assert study.run_jobs([tr, ev], parallel=1, say=said.append, ledger=ledger) == []
    assert said[0].startswith("study: dropped 1 stale evaluation(s)")
    assert [s.split(" seed")[0] for s in said if s.startswith("study: start")] == ["study: start eval e"]
    assert ledger.has(ev) and (ev.dir / "count").read_text() == "1"
    # --reledger of both (same run dirs): the training entry keeps its time, so the evaluation stays valid
    tr_meta = json.loads((ledger_dir / tr.rel / "job.json").read_text())
    assert ledger.backfill([tr, ev], say=lambda _: None) == 2
    assert json.loads((ledger_dir / tr.rel / "job.json").read_text())["finished"] == tr_meta["finished"]
    assert ledger.has(ev) and not ledger.stale(ev)


def test_ordering_verdicts():
    assert study_report.ordering([("a", (0.1, 0.05, 0.15)), ("b", (0.3, 0.2, 0.4))]) == "holds (significant)"
    assert study_report.ordering([("a", (0.1, 0.0, 0.25)), ("b", (0.2, 0.1, 0.3))]) == "direction only (within CIs)"
    assert study_report.ordering([("a", (0.3, 0.2, 0.4)), ("b", (0.1, 0.0, 0.2))]) == "does not hold"
    assert study_report.ordering([("a", (0.1, 0.0, 0.2)), ("b", (0.1, 0.0, 0.2))]) == "does not hold"  # ties
    assert study_report.ordering([("a", (0.1, 0.0, 0.2)), ("b", None)]).startswith("incomplete")


def _run(d: Path, initial: dict, final: dict, cfg: dict | None = None) -> None:
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({
        "status": "completed", "config": cfg or {"paradigm": "single"}, "initial": initial, "final": final,
        "evals": [{"round": 0, **initial}, {"round": 10, **final}], "wall_s": 60}))


def test_report_reads_the_runs_and_computes_the_orderings(tmp_path):
    plan = {"train": {"runs": {"grpo": [], "rs2": [], "homo": [], "hetero": []}},
            "eval": {"runs": {"best_of_n": {"of": ["hetero"], "args": []}, "ab_mcts": {"of": ["hetero"], "args": []},
                              "t_plus": {"of": ["hetero"], "args": []}}}}
    # Pass@1 after training rises along the chain with tight seeds; Pass@1(MCTS) falls
    for i, name in enumerate(["grpo", "rs2", "homo", "hetero"]):
        for s in (0, 1, 2):
            _run(tmp_path / "train" / f"{name}_s{s}", {"eval/pass1": 0.2, "eval/pass1_mcts": 0.5},
                 {"eval/pass1": 0.2 + 0.1 * i + 0.001 * s, "eval/pass1_mcts": 0.5 - 0.1 * i})
    for j, e in enumerate(["best_of_n", "ab_mcts", "t_plus"]):
        for s in (0, 1, 2):
            _run(tmp_path / "eval" / e / f"hetero_s{s}", {}, {"eval/pass1_mcts": 0.6 - 0.05 * j + 0.01 * s,
                                                              "eval/pass_at_n": 0.7})
    page = study_report.write_report(plan, tmp_path, tmp_path / "docs", [0, 1, 2])
    text = page.read_text()
    verdicts = dict(line.strip("| ").split(" | ") for line in text.splitlines()
                    if line.startswith("| ") and ("<" in line) and line.count("|") == 3)
    assert verdicts["GRPO < RS² < homo < hetero on Pass@1 (after training)"] == "holds (significant)"
    assert verdicts["GRPO < RS² < homo < hetero on Pass@1(MCTS) (after training)"] == "does not hold"
    assert verdicts["best-of-N < AB-MCTS < T+ for hetero ×2"] == "does not hold"
    assert "| hetero ×2 | 3 | 20.0 | 50.1 ± 0.2 | 30.1 ± 0.2 |" in text  # before, after ± CI, paired Δ
    assert (tmp_path / "docs" / "results" / "scaling_law.png").stat().st_size > 1000
    assert "77.7" in text  # the paper's anchors are on the page


def test_ledger_keeps_tree_diagnostics_and_backfills_them(tmp_path):
    from test_study_report import tree

    root, ledger = tmp_path / "study", study.Ledger(tmp_path / "ledger")
    d = root / "eval" / "test" / "ab_mcts" / "hetero_s0"
    body = _writer("completed") + ""
    body = body.replace("sys.exit(0)\n", f"(d / 'trees').mkdir()\n(d / 'trees' / 'seed0.json').write_text("
                                         f"{json.dumps(json.dumps({'team': [tree()]}))})\nsys.exit(0)\n")
    j = study.Job("eval", "ab_mcts", "hetero", 0, d, [sys.executable, "-c", body, f"hydra.run.dir={d}"],
                  rel=d.relative_to(root))
    assert study.run_jobs([j], parallel=1, ledger=ledger) == []
    diag = json.loads((ledger.path / j.rel / "diagnostics.json").read_text())
    assert (diag["nodes"], diag["gen"], diag["cont"]) == (8, 2, 6)  # tree_diagnostics.summarize of the saved tree
    (ledger.path / j.rel / "diagnostics.json").unlink()
    meta = (ledger.path / j.rel / "job.json").read_text()
    assert ledger.backfill([j], say=lambda _: None) == 1
    assert (ledger.path / j.rel / "diagnostics.json").is_file() and (ledger.path / j.rel / "job.json").read_text() == meta


def test_ledger_copies_are_compact_and_keep_what_the_page_reads(tmp_path):
    src, dst = tmp_path / "run", tmp_path / "ledger"
    src.mkdir()
    data = {"status": "completed", "final": {"eval/pass1": 0.25}, "history": [{"round": 1, "x": 2}],
            "metrics": {"eval/pass1": {"mean": 0.25, "per_problem": [0.0, 1.0, 0.0, 0.0], "n_problems": 4}}}
    (src / "results.json").write_text(json.dumps(data, indent=2))
    (src / "eval_per_problem.json").write_text(json.dumps({"format": "f", "evals": [{"round": 0}]}, indent=2))
    j = study.Job("eval", "e", "r", 0, src, ["py", "x"], rel=Path("e"))
    study.Ledger(dst).record(j, 1.0, 0.5)
    out = json.loads((dst / "e" / "results.json").read_text())
    assert out["metrics"] == {"eval/pass1": {"mean": 0.25, "n_problems": 4}}
    assert {k: out[k] for k in ("status", "final", "history")} == {k: data[k] for k in ("status", "final", "history")}
    assert "\n " not in (dst / "e" / "eval_per_problem.json").read_text()
    assert json.loads((dst / "e" / "eval_per_problem.json").read_text()) == {"format": "f", "evals": [{"round": 0}]}
