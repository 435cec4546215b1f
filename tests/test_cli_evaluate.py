"""evaluate.py through its real call path (issue 14.5, 14.8, 19.6): a served model behind a stub
OpenAI-compatible HTTP server on 127.0.0.1 (`FakeOpenAIServer`, a FAKE server: scripted answers), retries,
timeouts and a server that is down; the backend is closed after each seed; a killed run (only
checkpoints/last.ckpt) is evaluated from its last checkpoint."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_openai_backend import FakeOpenAIServer

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["eval.n_problems=2", "eval.budget=2", "eval.tts_budgets=[1,2]", "~logger", "task.n_warmup=20",
         "task.n_train=4", "task.n_test=2"]


def _evaluate(args, out: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.setdefault("MARS2_CACHE_DIR", str(ROOT / ".cache" / "mars2"))
    return subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *args, f"hydra.run.dir={out}"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=timeout)


def _one_error_line(p: subprocess.CompletedProcess) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr[-3000:])
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("mars2:")]
    assert len(lines) == 1, p.stderr[-3000:]
    return lines[0]


def test_evaluate_a_served_model_with_retries(tmp_path):
    """The README's command, `evaluate.py rollout=openai rollout.base_url=...`, used to refuse ("cannot
    train"). Here it evaluates the served answers: the first two requests fail (500, 429) and are retried."""
    with FakeOpenAIServer(["500", "429"]) as srv:
        p = _evaluate(["rollout=openai", f"rollout.base_url={srv.base_url}", "rollout.backoff_s=0.01",
                       "rollout.concurrency=1", *SMALL], tmp_path)
        bodies, left = list(srv.bodies), list(srv.script)
    assert p.returncode == 0, p.stderr[-3000:]
    assert left == [] and "eval/pass1_mcts" in p.stdout  # the 500 and the 429 were answered, then retried
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "completed" and res["config"]["rollout"] == "openai" and len(res["problem_ids"]) == 2
    # every request reached the server with the served model's name, and the answers are in the trees
    assert {b["model"] for b in bodies} == {"served-tiny"}
    statements = [b["messages"][-1]["content"] for b in bodies]
    assert len(bodies) >= 2 + 2 * 2 and all(s for s in statements)  # 2 failed attempts + Pass@1 samples + nodes
    trees = json.loads((tmp_path / "trees" / "seed0.json").read_text())
    texts = [n["text"] for ts in trees.values() for t in ts for n in t["nodes"] if n["id"] != 0]
    assert texts and all(t.startswith("echo: ") for t in texts)


def test_server_down_is_one_line(tmp_path):
    with FakeOpenAIServer() as srv:
        url = srv.base_url
    # closed now: connection refused on every attempt
    p = _evaluate(["rollout=openai", f"rollout.base_url={url}", "rollout.model=m", "rollout.max_retries=1",
                   "rollout.backoff_s=0.01", *SMALL], tmp_path)
    line = _one_error_line(p)
    assert "2 attempt" in line and "127.0.0.1" in line


def test_server_timeouts_are_one_line(tmp_path):
    with FakeOpenAIServer(["sleep"] * 50) as srv:
        p = _evaluate(["rollout=openai", f"rollout.base_url={srv.base_url}", "rollout.model=m",
                       "rollout.timeout_s=0.2", "rollout.max_retries=1", "rollout.backoff_s=0.01",
                       "rollout.concurrency=1", *SMALL], tmp_path)
    line = _one_error_line(p)
    assert "2 attempt" in line and ("timed out" in line.lower() or "timeout" in line.lower())


def test_evaluate_closes_the_backend_of_every_seed(tmp_path, monkeypatch):
    """Issue 14.8: evaluate.py closes each backend it built (the real build_backend, spied on), also when the
    evaluation fails."""
    import mars2.cli.build as build
    from mars2.cli.evaluate import evaluate
    from test_evaluate import _compose_evaluate

    built = []
    real = build.build_backend

    def spy(*a, **k):
        be = real(*a, **k)
        be.closed = 0
        orig = be.close

        def close():
            be.closed += 1
            orig()

        be.close = close
        built.append(be)
        return be

    monkeypatch.setattr(build, "build_backend", spy)
    with FakeOpenAIServer() as srv:
        c = _compose_evaluate(["rollout=openai", f"rollout.base_url={srv.base_url}", "eval.seeds=[0,1]", *SMALL],
                              tmp_path)
        evaluate(c, None)
        assert [type(b).__name__ for b in built] == ["OpenAIBackend", "OpenAIBackend"]
        assert [b.closed for b in built] == [1, 1]
    with FakeOpenAIServer(["400"] * 50) as srv:  # the server refuses: the evaluation fails, the backend is closed
        c = _compose_evaluate(["rollout=openai", f"rollout.base_url={srv.base_url}", "rollout.model=m", *SMALL],
                              tmp_path)
        with pytest.raises(RuntimeError, match="HTTP 400"):
            evaluate(c, None)
    assert built[-1].closed == 1


# -- a killed run (19.6) ---------------------------------------------------------------------------------------
def _killed_run(run: Path):
    """A train.py run dir as a kill leaves it: .hydra/config.yaml and checkpoints/last.ckpt (a MarsModule
    checkpoint of the tiny pair, weights changed from the initial ones), no policies/."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict

    from mars2.cli.build import build_policies, load_problems
    from mars2.rl.objective import LossConfig
    from mars2.training.module import MarsModule

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["debug=fast", "task.n_warmup=20", "task.n_train=4", "task.n_test=2"])
    (run / ".hydra").mkdir(parents=True)
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    with open_dict(cfg):
        cfg.paths.output_dir = str(run)
        cfg.paths.cache_dir = os.environ.get("MARS2_CACHE_DIR", str(ROOT / ".cache" / "mars2"))
    c = OmegaConf.to_container(cfg, resolve=True)
    models, _, _ = build_policies(c, ["qwen3_a", "llama_a"], load_problems(c), None, progress=False, warm=False)
    with torch.no_grad():
        for m in models.values():
            for i, prm in enumerate(m.parameters()):
                prm.add_(0.01 * (i + 1))
    module = MarsModule(models, LossConfig(kl_coef=1e-3), {"lr": 1e-4})
    (run / "checkpoints").mkdir()
    torch.save({"epoch": 2, "global_step": 6, "state_dict": module.state_dict()}, run / "checkpoints" / "last.ckpt")
    return c, {pid: {k: v.clone() for k, v in m.state_dict().items()} for pid, m in models.items()}


def test_killed_run_weights_come_from_its_last_checkpoint(tmp_path):
    from mars2.cli.build import build_policies, load_problems
    from mars2.cli.evaluate import load_checkpoint_policies, trained_weights

    run = tmp_path / "run"
    c, saved = _killed_run(run)
    weights_dir, ckpt = trained_weights(run)
    assert weights_dir is None and ckpt == run / "checkpoints" / "last.ckpt"
    models, _, _ = build_policies(c, ["qwen3_a", "llama_a"], load_problems(c), None, progress=False, warm=False)
    assert not torch.equal(models["qwen3_a"].state_dict()["model.norm.weight"], saved["qwen3_a"]["model.norm.weight"])
    assert load_checkpoint_policies(models, ckpt) == 3  # epoch 2 done → 3 rounds
    for pid, sd in saved.items():
        for k, v in models[pid].state_dict().items():
            assert torch.equal(v, sd[k]), (pid, k)
    (run / "checkpoints" / "last.ckpt").unlink()
    from mars2.resources import SetupError

    with pytest.raises(SetupError, match="no trained weights"):
        trained_weights(run)


def test_evaluate_cli_on_a_killed_run(tmp_path):
    """`evaluate.py ckpt=<killed run>` used to refuse ("not a finished run"): it evaluates the last checkpoint."""
    run = tmp_path / "run"
    _killed_run(run)
    out = tmp_path / "eval"
    p = _evaluate([f"ckpt={run}", "eval.n_problems=2", "eval.budget=2", "eval.tts_budgets=[1,2]", "~logger"], out)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "evaluating its last checkpoint" in p.stderr and "after 3 round(s)" in p.stderr
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "completed" and res["config"]["checkpoint"].endswith("checkpoints/last.ckpt")
    assert res["config"]["ckpt"] == str(run)
