"""End-to-end runs of the entry points in subprocesses, as a user runs them (debug=fast sizes)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.setdefault("MARS2_CACHE_DIR", str(ROOT / ".cache" / "mars2"))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "fast"
    p = run([str(ROOT / "train.py"), "debug=fast", f"hydra.run.dir={out}"], cwd=ROOT)
    assert p.returncode == 0, p.stderr[-4000:]
    return out


def test_train_debug_fast_end_to_end(fast_run):
    res = json.loads((fast_run / "results.json").read_text())
    assert res["status"] == "completed"
    assert res["config"]["paradigm"] == "heterogeneous" and res["config"]["n_agents"] == 2
    # evaluated at start and after each of the 2 rounds
    assert [e["round"] for e in res["evals"]] == [0, 1, 2]
    for key in ("eval/pass1", "eval/pass1_mcts", "eval/pass_at_n"):
        assert 0.0 <= res["final"][key] <= 1.0
    assert len(res["history"]) == 2 and res["history"][0]["search/nodes"] == 2 * 4  # 2 trees x budget 4
    metrics = (fast_run / "metrics.csv").read_text()
    assert "eval/pass1_mcts" in metrics and "search/score_mean" in metrics
    assert (fast_run / ".hydra" / "config.yaml").is_file()
    for pid in ("qwen3_a", "llama_a"):
        assert (fast_run / "policies" / pid / "config.json").is_file()
    assert (fast_run / "checkpoints" / "last.ckpt").is_file()


def test_evaluate_on_a_trained_run(fast_run, tmp_path):
    p = run([str(ROOT / "evaluate.py"), f"ckpt={fast_run}", "eval.n_problems=4", "eval.budget=2",
             "eval.tts_budgets=[1,2]", f"hydra.run.dir={tmp_path}"], cwd=ROOT)
    assert p.returncode == 0, p.stderr[-4000:]
    assert "eval/pass1_mcts" in p.stdout
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["config"]["paradigm"] == "heterogeneous" and res["config"]["n_problems"] == 4
    assert 0.0 <= res["final"]["eval/pass1"] <= 1.0


def test_multirun_sweep_over_paradigms(tmp_path):
    p = run([str(ROOT / "train.py"), "-m", "paradigm=single,homogeneous,heterogeneous", "debug=fast",
             "rounds=1", "eval.at_start=false", f"hydra.sweep.dir={tmp_path}"], cwd=ROOT, timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    results = sorted(tmp_path.glob("*/results.json"))
    assert len(results) == 3
    paradigms = {json.loads(r.read_text())["config"]["paradigm"] for r in results}
    assert paradigms == {"single", "homogeneous", "heterogeneous"}


@pytest.mark.parametrize("size,model_id", [("8b", "Qwen/Qwen3-8B"), ("14b", "Qwen/Qwen3-14B"), ("32b", "Qwen/Qwen3-32B")])
def test_real_scale_dry_run_and_clear_refusal(size, model_id, tmp_path):
    p = run([str(ROOT / "train.py"), f"model={size}", "--cfg", "job", "--resolve"], cwd=ROOT)
    assert p.returncode == 0, p.stderr
    assert model_id in p.stdout and "backend: vllm" in p.stdout and "bf16-true" in p.stdout
    p = run([str(ROOT / "train.py"), f"model={size}", f"hydra.run.dir={tmp_path}"], cwd=ROOT)
    assert p.returncode == 2
    assert "no weights found" in p.stderr and "GPU" in p.stderr
    assert "Traceback" not in p.stderr


def test_bad_config_is_one_clear_line(tmp_path):
    p = run([str(ROOT / "train.py"), "paradigm.n_agents=5", f"hydra.run.dir={tmp_path}"], cwd=ROOT)
    assert p.returncode == 2
    assert "paradigm.n_agents" in p.stderr and "Traceback" not in p.stderr
