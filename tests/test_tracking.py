"""Tracking (design.md "Experiment management"): run records and failure markers, the tree-node table,
wandb offline and MLflow-on-sqlite round trips (logged, finished, read back), Optuna pruning through the
Lightning logger hook, and compare.py's tables and plots on hand-made runs with hand-computed CIs."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from mars2.tracking import compare, readers
from mars2.tracking.records import FAILED_MARKER, JobFailed, RunRecord, fail_job, failure_status
from mars2.tracking.trees import sample_tree_nodes, tree_node_rows

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T_975_DF2 = 4.302652729749464  # two-sided 95 % t quantile, 2 degrees of freedom (3 seeds)


def train_cfg(overrides: list[str], out: Path) -> dict:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    return OmegaConf.to_container(cfg, resolve=True)


def tree_json(problem: str, nodes: list[tuple[int, int, int, str, float, bool]]) -> dict:
    """A saved tree: virtual root + (id, parent, depth, agent, score, hidden_pass) nodes."""
    out = [{"id": 0, "parent_id": None, "depth": 0, "agent_name": "", "program": None, "text": "", "score": 0.0}]
    for i, parent, depth, agent, score, hidden in nodes:
        out.append({"id": i, "parent_id": parent, "depth": depth, "agent_name": agent, "policy_id": agent + "_p",
                    "program": f"def f(x):\n    return x + {i}", "text": "", "score": score, "reward": score,
                    "hidden_pass": hidden})
    return {"version": 1, "problem_id": problem, "nodes": out}


def write_run(run_dir: Path, *, paradigm: str, search: str, n_agents: int, seed: int, pass1: list[float],
              agents: tuple[str, ...] = ("solver@qwen3_a",), extra_final: dict | None = None,
              status: str = "completed") -> Path:
    """A run dir as train.py leaves it (results.json with evals and history, a tree file)."""
    evals = []
    for r, v in enumerate(pass1):
        e = {"round": float(r), "eval/pass1": v, "eval/pass1_mcts": min(1.0, v + 0.1), "eval/pass_at_n": min(1.0, v + 0.2),
             "eval/tts/1": v, "eval/tts/2": min(1.0, v + 0.05), "eval/tts/4": min(1.0, v + 0.1)}
        evals.append(e)
    if extra_final:
        evals[-1].update(extra_final)
    history = [{"round": float(r), **{f"agent/{a}/reward": 0.1 * r + 0.01 * k for k, a in enumerate(agents)}}
               for r in range(1, len(pass1))]
    data = {"status": status, "config": {"name": f"{paradigm}-{search}", "seed": seed, "paradigm": paradigm,
                                         "n_agents": n_agents, "model": "tiny", "search": search, "train_budget": 4},
            "initial": evals[0], "final": evals[-1], "evals": evals, "history": history}
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "results.json").write_text(json.dumps(data))
    (run_dir / "trees").mkdir(exist_ok=True)
    (run_dir / "trees" / "eval_round0000.json").write_text(json.dumps({"team": [
        tree_json("p1", [(1, 0, 1, agents[0], 1.0, True), (2, 1, 2, agents[-1], 0.5, False)]),
        tree_json("p2", [(1, 0, 1, agents[-1], 0.0, False)])]}))
    return run_dir


# -- records and failure markers ---------------------------------------------------------------------------------
def test_failed_run_leaves_a_marker_and_a_status(tmp_path):
    rec = RunRecord(tmp_path, {"name": "x", "seed": 1, "paradigm": {"name": "single", "n_agents": 1},
                               "model": {"name": "tiny"}, "search": {"mode": "iid", "budget": 4},
                               "rl": {"loss": "gspo", "shaping": "tree"}, "eval": {"budget": 2},
                               "task": {"name": "minicode"}, "rounds": 1}, tmp_path, [])
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "running"
    assert not (tmp_path / FAILED_MARKER).exists()
    rec.finish("failed", error="ValueError: boom", traceback="tb")
    marker = json.loads((tmp_path / FAILED_MARKER).read_text())
    assert marker["status"] == "failed" and marker["error"] == "ValueError: boom"
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "failed"


def test_failure_status_names():
    class TrialPruned(Exception):  # optuna.TrialPruned is recognised by name, without importing optuna
        pass

    assert failure_status(TrialPruned()) == "pruned"
    assert failure_status(KeyboardInterrupt()) == "interrupted"
    assert failure_status(SystemExit(1)) == "interrupted"  # Lightning's exit after a Ctrl-C
    assert failure_status(RuntimeError("x")) == "failed"


def test_fail_job_single_run_exits_2_and_sweep_job_raises(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        fail_job("config error: `search.budget` must be >= 1", tmp_path / "a", multirun=False)
    assert e.value.code == 2
    assert "search.budget" in capsys.readouterr().err
    assert json.loads((tmp_path / "a" / "results.json").read_text())["status"] == "failed"
    with pytest.raises(JobFailed, match="no weights"):  # Hydra catches Exception per job: the sweep goes on
        fail_job("no weights found", tmp_path / "b", multirun=True)
    assert json.loads((tmp_path / "b" / FAILED_MARKER).read_text())["error"] == "no weights found"


# -- tree tables --------------------------------------------------------------------------------------------------
def test_tree_node_rows_skip_the_root_and_sample_deterministically(tmp_path):
    run = write_run(tmp_path / "r", paradigm="heterogeneous", search="ab_mcts", n_agents=2, seed=0, pass1=[0.1, 0.2],
                    agents=("solver@qwen3_a", "debugger@llama_a"))
    rows = tree_node_rows(run / "trees" / "eval_round0000.json", 0)
    assert [(r["problem"], r["node"], r["parent"], r["depth"], r["agent"]) for r in rows] == [
        ("p1", 1, 0, 1, "solver@qwen3_a"), ("p1", 2, 1, 2, "debugger@llama_a"), ("p2", 1, 0, 1, "debugger@llama_a")]
    assert rows[0]["hidden_pass"] is True and rows[1]["score"] == 0.5 and "return x + 2" in rows[1]["code"]
    two = sample_tree_nodes(run / "trees", 2, seed=3)
    assert len(two) == 2 and two == sample_tree_nodes(run / "trees", 2, seed=3)
    assert len(sample_tree_nodes(run / "trees", 10)) == 3
    assert sample_tree_nodes(tmp_path / "missing", 5) == []


# -- compare: tables and plots --------------------------------------------------------------------------------------
@pytest.fixture()
def study(tmp_path) -> Path:
    """Runs of the scaling-law study, 3 seeds each, with hand-picked final Pass@1."""
    root = tmp_path / "multirun"
    finals = {("heterogeneous", "ab_mcts", 2): [0.4, 0.5, 0.6], ("single", "iid", 1): [0.1, 0.2, 0.3],
              ("homogeneous", "ab_mcts", 2): [0.3, 0.3, 0.3], ("single", "ab_mcts", 1): [0.2, 0.25, 0.3]}
    for (paradigm, search, n), vals in finals.items():
        agents = ("solver@qwen3_a", "debugger@llama_a") if paradigm == "heterogeneous" else ("solver@qwen3_a",)
        for seed, v in enumerate(vals):
            write_run(root / f"{paradigm}-{search}-s{seed}", paradigm=paradigm, search=search, n_agents=n, seed=seed,
                      pass1=[0.05, v / 2, v], agents=agents)
    write_run(root / "broken", paradigm="single", search="iid", n_agents=1, seed=9, pass1=[0.9], status="failed")
    return root


def test_compare_table_means_and_cis_over_seeds(study):
    runs = compare.find_results([study])
    assert len(runs) == 12  # the failed run is left out
    rows = compare.compare_table(runs, ["eval/pass1"])
    assert [r["label"] for r in rows] == ["GRPO", "RS²", "homo×2", "hetero×2"]  # scaling-law order
    grpo = rows[0]
    mean, lo, hi = grpo["eval/pass1@final"]
    half = T_975_DF2 * 0.1 / math.sqrt(3)  # values 0.1, 0.2, 0.3: s = 0.1
    assert mean == pytest.approx(0.2) and lo == pytest.approx(0.2 - half) and hi == pytest.approx(0.2 + half)
    assert grpo["eval/pass1@initial"] == pytest.approx((0.05, 0.05, 0.05))
    assert rows[2]["eval/pass1@final"] == pytest.approx((0.3, 0.3, 0.3))  # no spread, no interval
    assert rows[3]["seeds"] == 3
    md = compare.markdown_table(rows, ["eval/pass1"])
    assert "| GRPO | 3 | 0.050 → 0.200 ± 0.248 |" in md


def test_groups_that_share_a_label_show_what_differs(tmp_path):
    for b in (4, 8):
        run = write_run(tmp_path / f"b{b}", paradigm="single", search="iid", n_agents=1, seed=0, pass1=[0.1, 0.2])
        data = json.loads((run / "results.json").read_text())
        data["config"]["train_budget"] = b
        (run / "results.json").write_text(json.dumps(data))
    rows = compare.compare_table(compare.find_results([tmp_path]), ["eval/pass1"])
    assert [r["label"] for r in rows] == ["GRPO (train_budget=4)", "GRPO (train_budget=8)"]


def test_plots_are_written_and_diversity_is_optional(study, tmp_path):
    from mars2.tracking.plots import make_plots

    runs = compare.find_results([study])
    files, notes = make_plots(runs, tmp_path / "plots")
    names = sorted(p.name for p in files)
    assert names == ["eval_curves.png", "scaling_law.png", "training_curves.png", "tts_curves.png"]
    assert all(p.read_bytes()[:8] == PNG_MAGIC and p.stat().st_size > 5000 for p in files)
    assert any("diversity.png" in n and "eval/div" in n for n in notes)
    # with diversity metrics in the final evaluations, the diversity bars appear
    for r in runs:
        r["final"] = {**r["final"], "eval/div/ec": 2.0, "eval/div/ec_lo": 1.0, "eval/div/k": 4.0,
                      "eval/diversity/semantic": 0.3}
    assert compare.diversity_metrics(runs) == ["eval/div/ec", "eval/diversity/semantic"]
    files, notes = make_plots(runs, tmp_path / "plots2")
    assert "diversity.png" in {p.name for p in files} and not notes


def test_training_curves_find_agents(study):
    from mars2.tracking.plots import agent_names

    runs = [r for r in compare.find_results([study]) if r["config"]["paradigm"] == "heterogeneous"]
    assert agent_names(runs, "reward") == ["debugger@llama_a", "solver@qwen3_a"]


def test_compare_cli_on_run_dirs(study, tmp_path):
    out = tmp_path / "cmp"
    p = subprocess.run([sys.executable, str(ROOT / "compare.py"), str(study), "--out", str(out)],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "GRPO" in p.stdout and "hetero×2" in p.stdout and "pass1_mcts" in p.stdout
    assert "left out 1 failed" in p.stderr and "diversity.png: skipped" in p.stderr
    assert (out / "scaling_law.png").read_bytes()[:8] == PNG_MAGIC
    table = json.loads((out / "comparison.json").read_text())
    assert table[0]["label"] == "GRPO" and table[0]["eval/pass1@final"][0] == pytest.approx(0.2)
    p = subprocess.run([sys.executable, str(ROOT / "compare.py"), str(tmp_path / "nothing")],
                       capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert p.returncode == 1 and "no completed runs" in p.stderr


def test_run_dir_without_history_reads_metrics_csv(tmp_path):
    run = write_run(tmp_path / "r", paradigm="single", search="iid", n_agents=1, seed=0, pass1=[0.1, 0.3])
    data = json.loads((run / "results.json").read_text())
    data.pop("history")
    (run / "results.json").write_text(json.dumps(data))
    (run / "metrics.csv").write_text("agent/solver@q/reward,eval/pass1,round,step\n0.25,,1.0,1\n,0.3,1.0,1\n")
    r = readers.read_run_dir(run)
    assert r["history"] == [{"round": 1.0, "agent/solver@q/reward": 0.25}]
    assert r["final"]["eval/pass1"] == 0.3  # results.json's evals win over the CSV


# -- MLflow round trip ---------------------------------------------------------------------------------------------
def _log_a_run(loggers: list, rounds: int = 3) -> None:
    for r in range(rounds):
        for lg in loggers:
            lg.log_metrics({"agent/solver@qwen3_a/reward": 0.1 * r, "agent/debugger@llama_a/reward": 0.2 * r,
                            "search/nodes": 8.0, "round": float(r)}, step=r)
            lg.log_metrics({"eval/pass1": 0.25 * r, "eval/tts/1": 0.1, "eval/tts/2": 0.2, "round": float(r)}, step=r)


def _finish_record(out: Path, c: dict, rounds: int = 3) -> None:
    rec = RunRecord(out, c, ROOT, [])
    for r in range(rounds):
        rec.add_eval(r, {"eval/pass1": 0.25 * r, "eval/tts/1": 0.1, "eval/tts/2": 0.2})
    rec.finish("completed", history=[{"round": float(r), "agent/solver@qwen3_a/reward": 0.1 * r} for r in range(1, rounds)])
    (out / "trees").mkdir(exist_ok=True)
    (out / "trees" / "eval_round0002.json").write_text(json.dumps({"team": [
        tree_json("p1", [(1, 0, 1, "solver@qwen3_a", 1.0, True), (2, 1, 2, "debugger@llama_a", 0.0, False)])]}))


def test_mlflow_sqlite_round_trip_and_resume(tmp_path):
    from mlflow.tracking import MlflowClient

    from mars2.tracking.loggers import Mars2MLFlowLogger, build_loggers, finish_loggers

    out = tmp_path / "run"
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    c = train_cfg(["logger=mlflow", f"logger.mlflow.tracking_uri={uri}",
                   f"logger.mlflow.artifact_location={tmp_path}/artifacts", "seed=3"], out)
    loggers = build_loggers(c)
    assert [type(lg).__name__ for lg in loggers] == ["CSVLogger", "Mars2MLFlowLogger", "RoundLogLogger"]
    try:
        _log_a_run(loggers)
        _finish_record(out, c)
    finally:
        finish_loggers(loggers)
    run_id = json.loads((out / "logger_ids.json").read_text())["mlflow"]

    runs = readers.read_mlflow(uri)
    assert len(runs) == 1
    r = runs[0]
    assert r["ref"] == run_id and r["status"] == "completed"
    assert r["config"]["paradigm"] == "heterogeneous" and r["config"]["n_agents"] == 2 and r["config"]["seed"] == 3
    assert len(r["params"]) > 50 and r["params"]["model.name"] == "tiny"  # the flattened config
    assert [e["eval/pass1"] for e in r["evals"]] == [0.0, 0.25, 0.5]
    assert r["history"][2]["agent/debugger_llama_a/reward"] == pytest.approx(0.4)  # '@' → '_' for MLflow
    client = MlflowClient(tracking_uri=uri)
    assert client.get_run(run_id).info.status == "FINISHED"
    arts = {a.path for a in client.list_artifacts(run_id)} | {a.path for a in client.list_artifacts(run_id, "plots")}
    assert {"results.json", "metrics.csv", "plots/eval_curves.png", "plots/tts_curves.png"} <= arts
    table = json.loads(Path(client.download_artifacts(run_id, "trees/nodes.json", str(tmp_path / "dl"))).read_text())
    assert table["columns"][:3] == ["round", "search", "problem"] and len(table["data"]) == 2

    # resume=auto in the same run dir continues the same MLflow run
    c2 = {**c, "resume": "auto"}
    loggers = build_loggers(c2)
    try:
        ml = [lg for lg in loggers if isinstance(lg, Mars2MLFlowLogger)][0]
        assert ml.run_id == run_id
        # the round the kill interrupted is redone and logged again at its step: not a second point there
        ml.log_metrics({"eval/pass1": 0.5, "eval/pass_at_n": 0.5}, step=2)
        ml.log_metrics({"eval/pass1": 0.75}, step=3)
    finally:
        finish_loggers(loggers)
    assert [e["eval/pass1"] for e in readers.read_mlflow(uri)[0]["evals"]] == [0.0, 0.25, 0.5, 0.75]
    steps = [m.step for m in client.get_metric_history(run_id, "eval/pass1")]
    assert sorted(steps) == [0, 1, 2, 3]


# -- wandb offline round trip ----------------------------------------------------------------------------------------
@pytest.fixture()
def wandb_offline_env(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb_home" / var.lower()))
    monkeypatch.setenv("WANDB_SILENT", "true")


def test_wandb_offline_round_trip(wandb_offline_env, tmp_path):
    from mars2.tracking.loggers import build_loggers, finish_loggers

    out = tmp_path / "run"
    c = train_cfg(["logger=wandb", "seed=5"], out)
    loggers = build_loggers(c)
    assert [type(lg).__name__ for lg in loggers] == ["CSVLogger", "Mars2WandbLogger", "RoundLogLogger"]
    try:
        _log_a_run(loggers)
        _finish_record(out, c)
    finally:
        finish_loggers(loggers)
    assert os.environ.get("WANDB_MODE") is None  # WandbLogger's process-wide "dryrun" is undone
    wid = json.loads((out / "logger_ids.json").read_text())["wandb"]

    runs = readers.read_wandb_offline([out])
    assert len(runs) == 1
    r = runs[0]
    assert r["wandb"]["id"] == wid and r["wandb"]["project"] == "mars2"
    assert r["wandb"]["group"] == "heterogeneous-tiny-ab_mcts"  # not under Hydra: the run name
    assert r["wandb"]["tags"] == ["heterogeneous", "tiny", "ab_mcts", "agents=2"]
    assert r["status"] == "completed" and r["config"]["seed"] == 5 and r["config"]["paradigm"] == "heterogeneous"
    assert [e["eval/pass1"] for e in r["evals"]] == [0.0, 0.25, 0.5]
    assert r["history"][2]["agent/debugger@llama_a/reward"] == pytest.approx(0.4)
    assert r["summary"]["final/eval/pass1"] == 0.5
    table = next(iter((Path(r["ref"]).parent / "files" / "media" / "table" / "trees").glob("nodes_*.table.json")))
    data = json.loads(table.read_text())
    assert data["columns"][:3] == ["round", "search", "problem"] and len(data["data"]) == 2

    # resume=auto continues the same wandb run id (offline: a second local segment of that run)
    loggers = build_loggers({**c, "resume": "auto"})
    try:
        assert loggers[1]._id == wid
        loggers[1].log_metrics({"eval/pass1": 0.75, "round": 3.0}, step=3)
    finally:
        finish_loggers(loggers)
    segments = readers.read_wandb_offline([out])
    assert {s["wandb"]["id"] for s in segments} == {wid}
    assert any(e.get("eval/pass1") == 0.75 for s in segments for e in s["evals"])


def test_wandb_disabled_is_skipped(monkeypatch, tmp_path):
    from mars2.tracking.loggers import build_loggers, finish_loggers

    monkeypatch.setenv("WANDB_MODE", "disabled")
    c = train_cfg(["logger=all"], tmp_path / "r")
    assert list(c["logger"]) == ["csv", "wandb", "mlflow"]
    del c["logger"]["mlflow"]  # (an MLflow store costs ~10 s to create; the round trip above covers it)
    loggers = build_loggers(c)
    try:
        assert [type(lg).__name__ for lg in loggers] == ["CSVLogger", "RoundLogLogger"]
    finally:
        finish_loggers(loggers, status="completed")


# -- Optuna pruning hook ---------------------------------------------------------------------------------------------
def test_pruning_logger_reports_eval_metric_and_prunes(tmp_path, monkeypatch):
    import optuna

    from mars2.tracking.pruning import OptunaPruning

    url = f"sqlite:///{tmp_path}/optuna.db"
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    trial = study.ask()
    assert OptunaPruning.from_env({}) is None  # not under the sweeper: no hook
    env = {"MARS2_OPTUNA_STORAGE": url, "MARS2_OPTUNA_STUDY": "s", "MARS2_OPTUNA_TRIAL": str(trial.number),
           "MARS2_OPTUNA_PRUNER": json.dumps({"_target_": "optuna.pruners.ThresholdPruner", "lower": 0.2})}
    hook = OptunaPruning.from_env(env)
    hook.log_metrics({"search/nodes": 8.0}, step=0)  # not the metric: nothing reported
    hook.log_metrics({"eval/pass1": 0.5}, step=0)
    hook.log_metrics({"eval/pass1": 0.4}, step=0)  # a re-run round: the first report stays
    with pytest.raises(optuna.TrialPruned, match="round 1"):
        hook.log_metrics({"eval/pass1": 0.1}, step=1)
    assert study.trials[0].intermediate_values == {0: 0.5, 1: 0.1}


def test_wandb_file_being_written_is_incomplete_not_an_error(tmp_path):
    """finish() can return while the wandb service is still writing: a torn or garbled last record means
    "not complete yet" (the reader waits), never a DecodeError out of the job's cleanup."""
    import struct

    pytest.importorskip("wandb")
    torn = tmp_path / "run-torn.wandb"
    torn.write_bytes(b":W&B\x00\x00\x00" + struct.pack("<IHB", 0, 100, 1) + b"x" * 10)
    assert list(readers.wandb_records(torn)) == []
    assert readers.wandb_run_complete(torn) is False
    garbled = tmp_path / "run-garbled.wandb"
    garbled.write_bytes(b":W&B\x00\x00\x00" + struct.pack("<IHB", 0, 4, 1) + b"\xff\xff\xff\xff")
    assert list(readers.wandb_records(garbled)) == [b"\xff\xff\xff\xff"]
    assert readers.wandb_run_complete(garbled) is False


def test_plot_labels_ticks_clipping_and_no_data(tmp_path):
    """What a reader needs on the figures: readable names, the CI and n, the node budget, integer rounds,
    rates within [0, 1], and "no data" where a group has nothing."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    from mars2.tracking import plots

    assert plots.metric_label("eval/pass1_mcts") == "Pass@1 of the search's final answer"
    assert plots.metric_label("eval/div/ec").startswith("EC@K") and plots.agent_label("solver@qwen3_a") == "solver (qwen3_a)"
    assert plots.is_rate("eval/pass1") and plots.is_rate("eval/div/da") and not plots.is_rate("eval/div/ec")
    # a CI that would leave [0, 1] is clipped: values 0.9, 1.0, 1.0 → t-interval above 1
    m, lo, hi = plots._ci([0.9, 1.0, 1.0], rate=True)
    assert hi == 1.0 and lo < m < 1.0

    runs = []
    for seed, v in enumerate([0.9, 1.0, 1.0]):
        runs.append({"status": "completed", "config": {"paradigm": "heterogeneous", "search": "ab_mcts", "n_agents": 2,
                                                         "seed": seed, "eval_budget": 8},
                     "evals": [{"round": float(r), "eval/pass1": v * r / 2} for r in range(3)],
                     "final": {"eval/pass1": v, "eval/div/ec": 3.0, "eval/div/k": 8.0}, "initial": {"eval/pass1": 0.0},
                     "history": []})
    runs.append({"status": "completed", "config": {"paradigm": "single", "search": "iid", "n_agents": 1, "seed": 0},
                 "evals": [{"round": 0.0, "eval/pass1": 0.1}], "final": {"eval/pass1": 0.1}, "initial": {}, "history": []})
    groups = compare.group_runs(runs)
    captured = {}
    import matplotlib.figure

    real_savefig = matplotlib.figure.Figure.savefig

    def keep(fig, path, **kw):
        captured[Path(path).name] = fig
        return real_savefig(fig, path, **kw)

    matplotlib.figure.Figure.savefig = keep
    try:
        assert plots.eval_curves(groups, tmp_path / "e.png") and plots.scaling_law_chart(groups, tmp_path / "s.png")
        assert plots.diversity_bars(groups, tmp_path / "d.png")
    finally:
        matplotlib.figure.Figure.savefig = real_savefig
    e = captured["e.png"]
    ax = e.axes[0]
    assert ax.get_ylim() == (0.0, 1.0) and ax.get_xlabel() == "training round"
    assert all(float(t).is_integer() for t in ax.get_xticks())
    assert "95 % CI over seeds (n = 1–3 seeds)" in e._suptitle.get_text() and "8 nodes per problem" in e._suptitle.get_text()
    texts = [t.get_text() for a in e.axes for t in a.texts]
    assert texts.count("no data") == 1  # the second metric (pass1_mcts) has no curve
    s = captured["s.png"].axes[0]
    assert "95 % CI" in s.get_title() and "8 nodes per problem" in s.get_title()
    assert "Pass@1 (single sample)" in [t.get_text() for t in s.get_legend().get_texts()]
    d = captured["d.png"].axes[0]
    assert "K = 8 candidates per problem" in d.get_title() and d.get_ylabel() == "distinct behaviour classes among K"
    assert "no data" in [t.get_text() for t in d.texts]  # GRPO has no diversity metrics


@pytest.mark.slow
def test_example_figures_for_docs(tmp_path):
    """docs/img/plots_*.png: every figure of compare.py on an example study (4 configurations × 3 seeds,
    synthetic numbers in the real run-record format), kept small (< 300 KB each)."""
    import random

    from mars2.tracking.plots import make_plots

    rng = random.Random(0)
    root = tmp_path / "multirun"
    conf = {("single", "iid", 1): 0.20, ("single", "ab_mcts", 1): 0.26, ("homogeneous", "ab_mcts", 2): 0.31,
            ("heterogeneous", "ab_mcts", 2): 0.38}
    for (paradigm, search, n), end in conf.items():
        agents = ("solver@qwen3_a", "debugger@llama_a") if paradigm == "heterogeneous" else ("solver@qwen3_a",)
        for seed in range(3):
            curve = [min(1.0, max(0.0, 0.12 + (end - 0.12) * r / 5 + rng.gauss(0, 0.02))) for r in range(6)]
            div = None if paradigm == "single" and search == "iid" else {
                "eval/div/ec": 1.5 + n + rng.gauss(0, 0.2), "eval/div/k": 8.0,
                "eval/div/structural": min(1.0, 0.3 + 0.1 * n + rng.gauss(0, 0.03)),
                "eval/div/semantic": 0.2 + 0.05 * n + rng.gauss(0, 0.02), "eval/div/da": min(1.0, 0.1 * n + rng.gauss(0, 0.02))}
            run = write_run(root / f"{paradigm}-{search}-s{seed}", paradigm=paradigm, search=search, n_agents=n,
                            seed=seed, pass1=curve, agents=agents, extra_final=div)
            data = json.loads((run / "results.json").read_text())
            data["config"]["eval_budget"] = 8
            for e in data["evals"]:
                v = e["eval/pass1"]
                e.update({f"eval/tts/{b}": min(1.0, v + 0.06 * math.log2(b)) for b in (1, 2, 4, 8)})
                e["eval/pass1_mcts"] = e["eval/tts/8"]
            data["final"] = data["evals"][-1]
            (run / "results.json").write_text(json.dumps(data))
    files, notes = make_plots(compare.find_results([root]), tmp_path / "plots")
    assert len(files) == 5 and not notes
    img = ROOT / "docs" / "img"
    for f in files:
        dst = img / f"plots_{f.name}"
        dst.write_bytes(f.read_bytes())
        assert dst.stat().st_size < 300_000
