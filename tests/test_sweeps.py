"""Sweeps that survive (design.md "Experiment management"): every job of every sweep file composes and
validates; the mars2_optuna sweeper (search space grammar, resume after a kill to n_trials in total, failed
and pruned trials recorded without ending the study); the SLURM preset's job shape; failed jobs of a `-m`
sweep leave markers while the rest goes on. Slow: submitit_local, a real train.py Optuna trial, and a tiny
sweep tracked by all loggers and compared from run dirs, MLflow and wandb."""
import itertools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict

from mars2.config import validate_config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
SWEEPS = sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml"))


def env(**extra: str) -> dict:
    e = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
         "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    e.setdefault("MARS2_CACHE_DIR", str(ROOT / ".cache" / "mars2"))
    e.update(extra)
    return e


def run(args: list[str], cwd: Path, timeout: int = 900, **extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env(**extra), capture_output=True, text=True,
                          timeout=timeout)


def compose_hydra(overrides: list[str]):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def job_dict(cfg) -> dict:
    with open_dict(cfg):
        cfg.paths.output_dir = "/tmp/mars2-test-out"
        del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=True)


# -- every job of every sweep ---------------------------------------------------------------------------------------
def sweep_jobs(sweep: str) -> list[list[str]]:
    """The job overrides of a sweep file (cartesian product of hydra.sweeper.params; one seed, since seeds do
    not change validity; an Optuna search space contributes its interval's midpoint)."""
    params = compose_hydra([f"+sweep={sweep}"]).hydra.sweeper.params or {}
    parser = OverridesParser.create()
    axes = []
    for o in parser.parse_overrides([f"{k}={v}" for k, v in params.items()]):
        key = o.get_key_element()
        if o.is_interval_sweep():
            iv = o.value()
            axes.append([f"{key}={(iv.start + iv.end) / 2}"])
        elif o.is_sweep_override():
            values = list(o.sweep_string_iterator())
            axes.append([f"{key}={v}" for v in (values[:1] if key == "seed" else values)])
        else:
            axes.append([o.input_line])
    return [list(combo) for combo in itertools.product(*axes)]


@pytest.mark.parametrize("sweep", SWEEPS)
def test_every_job_of_every_sweep_composes_and_validates(sweep):
    jobs = sweep_jobs(sweep)
    assert jobs
    for job in jobs:
        c = job_dict(compose_hydra([f"+sweep={sweep}", *job]))
        validate_config(c)


def test_sweep_grids_are_the_study():
    assert len(sweep_jobs("scaling_paradigm")) == 5  # grpo, rs2, homo, hetero, hetero_3agents (x 3 seeds)
    teams = {(j[0], j[1]) for j in sweep_jobs("agents_count")}
    assert ("paradigm=heterogeneous", "paradigm.n_agents=4") in teams and len(teams) == 8
    c = compose_hydra(["+sweep=search_budget"])
    assert c.eval.budget == 60 and list(c.eval.tts_budgets)[-1] == 60
    assert compose_hydra(["+sweep=optuna_lr"]).hydra.sweeper._target_.endswith("Mars2OptunaSweeper")


# -- SLURM preset ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "overrides,nodes,gpus,tasks",
    [
        ([], 1, 0, 1),  # tiny on CPU: one task, no GPU
        (["trainer=gpu"], 1, 1, 1),  # one GPU per process
        (["model=14b"], 1, 6, 6),  # FSDP devices=auto: the team's GPUs (the whole roster: 3 policies x 2)
        (["model=14b", "paradigm.n_agents=3"], 1, 6, 6),
        (["model=32b", "paradigm=single", "trainer.num_nodes=2"], 2, 4, 4),  # one 32B policy: gpus 4
        (["model=8b", "trainer.devices=8"], 1, 8, 8),
    ],
)
@pytest.mark.filterwarnings(r"ignore:\s*'hydra/launcher/submitit_slurm' is validated")  # the schema name match
def test_slurm_preset_job_shape_follows_the_trainer(overrides, nodes, gpus, tasks):
    for launcher in ("slurm", "submitit_slurm"):
        h = compose_hydra([f"hydra/launcher={launcher}", *overrides]).hydra.launcher
        assert h._target_.endswith("SlurmLauncher")
        assert (h.nodes, h.gpus_per_node, h.tasks_per_node) == (nodes, gpus, tasks)


def test_slurm_job_shape_dry_run_from_the_command_line():
    p = run([str(ROOT / "train.py"), "model=14b", "paradigm.n_agents=3", "hydra/launcher=slurm", "--cfg", "all",
             "--resolve"], cwd=ROOT, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    launcher = p.stdout.split("  launcher:", 1)[1]
    assert "SlurmLauncher" in launcher and "gpus_per_node: 6" in launcher and "tasks_per_node: 6" in launcher


def test_slurm_preset_fields_are_what_submitit_accepts():
    from hydra_plugins.hydra_submitit_launcher.config import SlurmQueueConf

    h = compose_hydra(["hydra/launcher=slurm"]).hydra.launcher
    assert set(h.keys()) == set(OmegaConf.structured(SlurmQueueConf).keys())


# -- Optuna sweeper --------------------------------------------------------------------------------------------------
def test_search_space_from_override_grammar():
    import optuna.distributions as od

    from hydra_plugins.mars2_optuna_sweeper.optuna_sweeper import distribution_from_override

    parser = OverridesParser.create()

    def dist(s: str):
        return distribution_from_override(parser.parse_override(s))

    assert dist("a=tag(log, interval(1e-5, 1e-3))") == od.FloatDistribution(1e-5, 1e-3, log=True)
    assert dist("a=interval(0.1, 0.9)") == od.FloatDistribution(0.1, 0.9)
    assert dist("a=tag(int, interval(2, 9))") == od.IntDistribution(2, 9)
    assert dist("a=tag(int, log, interval(1, 64))") == od.IntDistribution(1, 64, log=True)
    assert dist("a=range(4, 17, 4)") == od.IntDistribution(4, 16, step=4)  # Hydra ranges exclude the stop
    assert dist("a=x,y,z") == od.CategoricalDistribution(["x", "y", "z"])
    assert dist("a=choice(1, 2, 4)") == od.CategoricalDistribution([1, 2, 4])


TOY_APP = '''
import os, signal
import hydra

@hydra.main(version_base="1.3", config_path="conf", config_name="app")
def main(cfg):
    n = int(os.environ["MARS2_OPTUNA_TRIAL"])  # set by the sweeper through hydra.job.env_set
    if n == int(os.environ.get("KILL_AT_TRIAL", -1)):
        os.kill(os.getpid(), signal.SIGKILL)  # the sweep dies mid-trial (kill -9, node loss)
    if n == int(os.environ.get("FAIL_AT_TRIAL", -1)):
        raise RuntimeError("boom")
    from mars2.tracking.optuna_trial import TrialReporter
    reporter = TrialReporter.from_env()
    bad = n == int(os.environ.get("PRUNE_AT_TRIAL", -1))
    for step in range(2):
        reporter.report({"eval/pass1": -1.0 if bad else 1.0}, step)
    return -(float(cfg.x) - 0.3) ** 2

if __name__ == "__main__":
    main()
'''

TOY_CONF = '''
defaults:
  - override hydra/sweeper: mars2_optuna
  - override hydra/sweeper/pruner: threshold
  - _self_
name: toy
seed: 0
x: 0.0
paths: {{root_dir: {root}}}
hydra:
  searchpath: [file://{conf}]
  sweeper:
    study_name: toy
    n_trials: 5
    params: {{x: "interval(0.0, 1.0)"}}
'''


def only_study(url: str, prefix: str) -> str:
    """The one study of the storage (named <study_name>-<search-space digest>)."""
    import optuna

    names = optuna.get_all_study_names(storage=url)
    assert len(names) == 1 and names[0].startswith(prefix + "-"), names
    return names[0]


def test_optuna_sweep_killed_then_resumed_to_n_trials(tmp_path):
    """A cheap objective through the real sweeper and basic launcher: killed during trial 2, then re-run with
    n_trials=6: the stale trial is failed (interrupted) and retried with its parameters, a crashing trial is
    FAIL, a pruned one PRUNED, and the study stops at 6 finished trials."""
    import optuna

    (tmp_path / "conf").mkdir()
    (tmp_path / "app.py").write_text(TOY_APP)
    (tmp_path / "conf" / "app.yaml").write_text(textwrap.dedent(TOY_CONF.format(root=tmp_path, conf=CONF)))
    url = f"sqlite:///{tmp_path}/optuna.db"
    assert f"{tmp_path}/optuna.db" in url
    p = run(["app.py", "-m", f"hydra.sweep.dir={tmp_path}/s1"], cwd=tmp_path, timeout=300, KILL_AT_TRIAL="2")
    assert p.returncode == -9, p.stderr[-3000:]
    name = only_study(url, "toy")
    study = optuna.load_study(study_name=name, storage=url)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "RUNNING"]
    killed_x = study.trials[2].params["x"]

    p = run(["app.py", "-m", f"hydra.sweep.dir={tmp_path}/s2", "hydra.sweeper.n_trials=6"], cwd=tmp_path,
            timeout=300, FAIL_AT_TRIAL="4", PRUNE_AT_TRIAL="5")
    assert p.returncode == 0, p.stderr[-3000:]
    trials = optuna.load_study(study_name=name, storage=url).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "FAIL", "PRUNED", "COMPLETE"]
    assert trials[2].user_attrs == {"interrupted": True}
    assert trials[3].params["x"] == killed_x and trials[3].user_attrs == {"retry_of": 2}
    assert trials[4].user_attrs["error"] == "RuntimeError: boom"
    assert trials[5].intermediate_values == {0: -1.0}  # pruned at its first report
    assert trials[6].intermediate_values == {0: 1.0, 1: 1.0}
    # the resumed sampler does not replay the first run's points
    assert trials[6].params["x"] not in {t.params["x"] for t in trials[:6]}
    res = OmegaConf.load(tmp_path / "s2" / "optimization_results.yaml")
    assert res.trials == {"complete": 4, "interrupted": 1, "fail": 1, "pruned": 1}
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert res.best_trial == best.number and res.best_value == pytest.approx(-(best.params["x"] - 0.3) ** 2)

    # a third run has nothing left to do
    p = run(["app.py", "-m", f"hydra.sweep.dir={tmp_path}/s3", "hydra.sweeper.n_trials=6"], cwd=tmp_path, timeout=300)
    assert p.returncode == 0 and len(optuna.load_study(study_name=name, storage=url).trials) == 7


def test_optuna_trial_that_does_not_compose_aborts_and_is_not_counted(tmp_path):
    """A misspelt search-space key: one line on stderr, exit 2, nothing launched, the trial not counted (a
    corrected rerun of the same study runs all n_trials). A different search space gets its own study."""
    import optuna

    from hydra_plugins.mars2_optuna_sweeper.optuna_sweeper import space_digest, study_name_for

    (tmp_path / "conf").mkdir()
    (tmp_path / "app.py").write_text(TOY_APP)
    (tmp_path / "conf" / "app.yaml").write_text(textwrap.dedent(TOY_CONF.format(root=tmp_path, conf=CONF)))
    url = f"sqlite:///{tmp_path}/optuna.db"
    p = run(["app.py", "-m", f"hydra.sweep.dir={tmp_path}/s1", "hydra.sweeper.n_trials=2", "xx=interval(0.0,1.0)"],
            cwd=tmp_path, timeout=300)
    assert p.returncode == 2
    err = [ln for ln in p.stderr.splitlines() if "mars2_optuna" in ln]  # (optuna logs its "study created" too)
    assert len(err) == 1 and "does not compose" in err[0] and "Could not override 'xx'" in err[0], p.stderr
    assert "sweep aborted" in err[0] and "Traceback" not in p.stderr
    assert not list((tmp_path / "s1").glob("0*")), "a job was launched"
    (bad,) = [optuna.load_study(study_name=n, storage=url) for n in optuna.get_all_study_names(storage=url)]
    assert [t.state.name for t in bad.trials] == ["FAIL"] and bad.trials[0].user_attrs["not_composed"] is True
    # the same (still misspelt) command again: the not-composed trial did not count, it aborts again
    p = run(["app.py", "-m", f"hydra.sweep.dir={tmp_path}/s2", "hydra.sweeper.n_trials=2", "xx=interval(0.0,1.0)"],
            cwd=tmp_path, timeout=300)
    assert p.returncode == 2 and "0/2 trials done" in p.stdout + p.stderr
    # the space x ∈ [0, 1] (the app's own) runs; x ∈ [0, 2] goes to another study
    for hi, sweep in ((1.0, "s3"), (2.0, "s4")):
        p = run(["app.py", "-m", f"hydra.sweep.dir={tmp_path}/{sweep}", "hydra.sweeper.n_trials=2",
                 f"x=interval(0.0,{hi})"], cwd=tmp_path, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
    od = optuna.distributions
    names = {study_name_for("toy", {"x": od.FloatDistribution(0.0, hi)}) for hi in (1.0, 2.0)}
    assert len(names) == 2 and names <= set(optuna.get_all_study_names(storage=url))
    for n in names:
        assert [t.state.name for t in optuna.load_study(study_name=n, storage=url).trials] == ["COMPLETE", "COMPLETE"]
    assert space_digest({"x": od.FloatDistribution(0.0, 1.0)}) == space_digest({"x": od.FloatDistribution(0.0, 1.0)})
    assert study_name_for("toy", {"x": od.FloatDistribution(0.0, 1.0)}, space_in_name=False) == "toy"


# -- failed jobs in a -m sweep ------------------------------------------------------------------------------------------
def test_failed_jobs_leave_markers_and_the_sweep_goes_on(tmp_path):
    """Job 0 has a bad config, job 1 has no weights (real-scale model): each leaves FAILED.json and a failed
    results.json, job 1 runs although job 0 failed, and the sweep ends with one line per failed job and a
    summary (mars2.cli.train.SweepSummary, ``++`` so this works whether conf/train.yaml lists it or not),
    exit code 1, no traceback."""
    p = run([str(ROOT / "train.py"), "-m", "search.budget=0,4", "model=8b", f"hydra.sweep.dir={tmp_path}",
             "++hydra.callbacks.sweep_summary._target_=mars2.cli.train.SweepSummary"], cwd=ROOT, timeout=300)
    assert p.returncode == 1
    assert "Traceback" not in p.stdout + p.stderr
    assert len([ln for ln in p.stderr.splitlines() if ln.startswith("mars2: FAILED ")]) == 2
    assert f"mars2: sweep {tmp_path}: 2 job(s), 2 failed" in p.stderr
    jobs = sorted(d for d in tmp_path.iterdir() if d.is_dir())
    assert [d.name.split("_")[0] for d in jobs] == ["0", "1"]
    errors = [json.loads((d / "FAILED.json").read_text())["error"] for d in jobs]
    assert "config error" in errors[0] and "search.budget" in errors[0]
    assert "no weights found" in errors[1]
    assert [json.loads((d / "results.json").read_text())["status"] for d in jobs] == ["failed", "failed"]


# -- slow: real runs -----------------------------------------------------------------------------------------------------
FAST = ["debug=fast", "eval.n_problems=2", "task.n_test=4"]


@pytest.mark.slow
def test_submitit_local_one_job_sweep(tmp_path):
    p = run([str(ROOT / "train.py"), "-m", "hydra/launcher=submitit_local", *FAST, "rounds=1", "eval.at_start=false",
             "seed=0", f"hydra.sweep.dir={tmp_path}"], cwd=ROOT, timeout=1200)
    assert p.returncode == 0, p.stderr[-4000:]
    results = list(tmp_path.glob("*/results.json"))
    assert len(results) == 1
    res = json.loads(results[0].read_text())
    assert res["status"] == "completed" and [e["round"] for e in res["evals"]] == [1]
    assert list((tmp_path / ".submitit").iterdir())  # submitit's own job folder: it really went through submitit


@pytest.mark.slow
def test_optuna_sweep_with_a_real_training_trial(tmp_path):
    import optuna

    url = f"sqlite:///{tmp_path}/optuna.db"
    p = run([str(ROOT / "train.py"), "-m", "+sweep=optuna_lr", *FAST, "rounds=1", "hydra.sweeper.n_trials=1",
             f"hydra.sweeper.storage={url}", f"hydra.sweep.dir={tmp_path}/s"], cwd=ROOT, timeout=1200)
    assert p.returncode == 0, p.stderr[-4000:]
    (trial,) = optuna.load_study(study_name=only_study(url, "optuna_lr"), storage=url).trials
    assert trial.state.name == "COMPLETE" and 1e-5 <= trial.params["model.optim.lr"] <= 3e-3
    (res_file,) = (tmp_path / "s").glob("*/results.json")
    res = json.loads(res_file.read_text())
    assert res["status"] == "completed"
    assert trial.value == pytest.approx(res["final"]["eval/pass1"])
    # the pruning hook reported eval/pass1 at every evaluation (round 0 before RL, round 1)
    assert trial.intermediate_values == pytest.approx({int(e["round"]): e["eval/pass1"] for e in res["evals"]})
    assert any(f"model.optim.lr={trial.params['model.optim.lr']}" in o for o in res["overrides"])


@pytest.mark.slow
def test_tiny_sweep_tracked_everywhere_then_compared(tmp_path):
    """A 3-job `-m` sweep with CSV + wandb (offline) + MLflow (sqlite); compare.py reads the same runs from the
    run dirs, from MLflow and from wandb, and writes its table and PNGs."""
    sweep = tmp_path / "multirun"
    store = f"sqlite:///{tmp_path}/mlflow.db"  # the default store under paths.root_dir = $MARS2_ROOT
    p = run([str(ROOT / "train.py"), "-m", "paradigm=single,heterogeneous", "search=iid,ab_mcts", "seed=0", *FAST,
             "rounds=1", "logger=all", f"hydra.sweep.dir={sweep}"],
            cwd=ROOT, timeout=2400, MARS2_ROOT=str(tmp_path), WANDB_MODE="offline", WANDB_SILENT="true",
            WANDB_CONFIG_DIR=str(tmp_path / "wandb_cfg"), WANDB_CACHE_DIR=str(tmp_path / "wandb_cache"))
    assert p.returncode == 0, p.stderr[-4000:]
    assert len(list(sweep.glob("*/results.json"))) == 4
    from mars2.tracking import readers

    by_dir = {(r["config"]["paradigm"], r["config"]["search"]): r["final"]["eval/pass1"] for r in readers.read_run_dirs([sweep])}
    by_ml = {(r["config"]["paradigm"], r["config"]["search"]): r["final"]["eval/pass1"] for r in readers.read_mlflow(store)}
    wb = readers.read_wandb_offline([sweep])
    by_wb = {(r["config"]["paradigm"], r["config"]["search"]): r["final"]["eval/pass1"] for r in wb}
    assert len(by_dir) == 4 and by_dir == pytest.approx(by_ml) and by_dir == pytest.approx(by_wb)
    assert all(r["status"] == "completed" and r["history"] for r in wb)
    out = tmp_path / "cmp"
    for source in ([str(sweep)], ["--mlflow", store], ["--wandb", str(sweep)]):
        p = run([str(ROOT / "compare.py"), *source, "--out", str(out)], cwd=tmp_path, timeout=300)
        assert p.returncode == 0, p.stderr[-3000:]
        for label in ("GRPO", "RS²", "hetero×2"):
            assert label in p.stdout
        assert (out / "scaling_law.png").read_bytes()[:4] == b"\x89PNG"
        assert (out / "tts_curves.png").is_file() and (out / "training_curves.png").is_file()
