"""train.py start-up and teardown (issues 14.7, 14.8, 19.4, 19.5): one clear line and exit 2 before any
model loads for a bad start; the backend closed whatever happens; an existing run dir is never overwritten
silently; `+sweep=` without `-m` refused; a sweep with a failing job ends with one line per failed job and a
summary, not a traceback."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["debug=fast", "rounds=1", "eval.at_start=false", "eval.every=100", "search.budget=2", "task.n_warmup=20",
         "model.warm_start_defaults.enabled=false"]


def _train(args, cwd: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.setdefault("MARS2_CACHE_DIR", str(ROOT / ".cache" / "mars2"))
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *args], cwd=cwd or ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _one_line(p: subprocess.CompletedProcess, code: int = 2) -> str:
    assert p.returncode == code, (p.returncode, p.stderr[-3000:])
    assert "Traceback" not in p.stderr + p.stdout, p.stderr[-3000:]
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("mars2:")]
    assert len(lines) == 1, p.stderr[-3000:]
    return lines[0]


# -- start-up refusals (14.7) ------------------------------------------------------------------------------------
def test_overlong_buffer_larger_than_the_budget_is_one_line_before_loading(tmp_path):
    p = _train(["rl.overlong_buffer=64", "model.generation.max_new_tokens=48", f"hydra.run.dir={tmp_path}"])
    line = _one_line(p)
    assert "rl.overlong_buffer" in line and "48" in line
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the CPU-only refusal")
@pytest.mark.parametrize("trainer", ["fsdp", "gpu"])
def test_gpu_trainer_on_a_cpu_only_machine_is_one_line(tmp_path, trainer):
    line = _one_line(_train([f"trainer={trainer}", f"hydra.run.dir={tmp_path}"]))
    assert "CUDA" in line and "trainer=cpu" in line and ("FSDP" in line) == (trainer == "fsdp")


def test_tokenizer_without_pad_token_pads_with_eos():
    """Llama-3-style tokenizers have no pad token: training pads with eos (was int(None) in cli/train.py)."""
    from transformers import PreTrainedTokenizerFast

    from mars2.agents.models import ensure_pad_token
    from mars2.agents.tokenizer import build_tiny_tokenizer
    from mars2.cli.train import pad_id
    from mars2.resources import SetupError

    tok = build_tiny_tokenizer(["def f(x):\n    return x"] * 10, vocab_size=300)
    no_pad = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, eos_token=tok.eos_token)
    assert no_pad.pad_token_id is None
    assert pad_id(no_pad, "p") == no_pad.eos_token_id
    ensure_pad_token(no_pad, "p")
    assert no_pad.pad_token == no_pad.eos_token and no_pad.pad_token_id == no_pad.eos_token_id
    bare = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer)
    with pytest.raises(SetupError, match="policy p: its tokenizer has neither a pad nor an eos token"):
        pad_id(bare, "p")
    with pytest.raises(ValueError, match="neither a pad nor an eos"):
        ensure_pad_token(bare, "p")


def test_real_checkpoint_without_pad_token_gets_eos_as_pad(tmp_path):
    """The loading path of real checkpoints: a saved Llama whose tokenizer has no pad token comes back from
    build_policies with pad = eos."""
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from mars2.agents.tokenizer import build_tiny_tokenizer
    from mars2.cli.build import build_policies

    tok = build_tiny_tokenizer(["def f(x):\n    return x"] * 10, vocab_size=300)
    no_pad = PreTrainedTokenizerFast(tokenizer_object=tok.backend_tokenizer, eos_token=tok.eos_token,
                                     chat_template=tok.chat_template)
    folder = tmp_path / "llama"
    LlamaForCausalLM(LlamaConfig(vocab_size=len(no_pad), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2)).save_pretrained(folder)
    no_pad.save_pretrained(folder)
    c = {"model": {"scale": "real", "policies": {"l": {"path": str(folder), "dtype": "float32"}}},
         "paths": {"cache_dir": str(tmp_path / "cache")}}
    models, toks, _ = build_policies(c, ["l"], {}, None)
    assert toks["l"].pad_token_id == toks["l"].eos_token_id is not None
    assert models["l"].config.pad_token_id == toks["l"].eos_token_id


# -- the backend is closed (14.8) --------------------------------------------------------------------------------
def test_train_closes_the_backend_when_the_run_fails(tmp_path, monkeypatch):
    """The real build_backend, spied on; the run fails right after the backend is built: it is closed anyway."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict

    import mars2.cli.build as build
    import mars2.training.module as module
    from mars2.cli.train import train

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=QUICK + ["~logger"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    c = OmegaConf.to_container(cfg, resolve=True)
    built = []
    real = build.build_backend

    def spy(*a, **k):
        be = real(*a, **k)
        be.close = lambda: built.append("closed")
        built.append(type(be).__name__)
        return be

    def boom(*a, **k):
        raise RuntimeError("boom after the backend")

    monkeypatch.setattr(build, "build_backend", spy)
    monkeypatch.setattr(module, "MarsModule", boom)
    with pytest.raises(RuntimeError, match="boom"):
        train(c)
    assert built == ["HFBackend", "closed"]
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "failed"


# -- run dirs (19.4) ---------------------------------------------------------------------------------------------
def test_previous_run_files():
    from mars2.cli.train import previous_run_files

    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = Path(d)
        (out / ".hydra").mkdir()
        assert previous_run_files(out) == []
        (out / "results.json").write_text(json.dumps({"status": "failed", "evals": []}))
        assert previous_run_files(out) == []  # a start-up failure: nothing to lose
        (out / "results.json").write_text(json.dumps({"status": "interrupted", "evals": [{"round": 0}]}))
        (out / "checkpoints").mkdir()
        assert previous_run_files(out) == ["results.json"]  # an empty checkpoints/ does not count
        (out / "checkpoints" / "last.ckpt").write_bytes(b"x")
        assert previous_run_files(out) == ["checkpoints/", "results.json"]


def test_fresh_run_into_an_existing_run_dir_is_refused_unless_overwrite(tmp_path):
    ck = tmp_path / "checkpoints"
    ck.mkdir()
    (ck / "last.ckpt").write_bytes(b"previous run")
    (tmp_path / "results.json").write_text(json.dumps({"status": "interrupted", "evals": [{"round": 1}]}))
    line = _one_line(_train([*QUICK, f"hydra.run.dir={tmp_path}"]))
    assert str(tmp_path) in line and "resume=auto" in line and "overwrite=true" in line
    # untouched: the refusal writes nothing into the run dir it protects
    assert (ck / "last.ckpt").read_bytes() == b"previous run"
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "interrupted"
    assert not (tmp_path / "FAILED.json").exists()


@pytest.mark.slow
def test_overwrite_true_starts_the_run_over(tmp_path):
    ck = tmp_path / "checkpoints"
    ck.mkdir()
    (ck / "round0009.ckpt").write_bytes(b"previous run")
    (tmp_path / "trees").mkdir()
    (tmp_path / "trees" / "round0009.json").write_text("{}")
    p = _train([*QUICK, "++overwrite=true", f"hydra.run.dir={tmp_path}"])
    assert p.returncode == 0, p.stderr[-3000:]
    assert not (ck / "round0009.ckpt").exists() and (ck / "last.ckpt").exists()
    assert not (tmp_path / "trees" / "round0009.json").exists()
    assert json.loads((tmp_path / "results.json").read_text())["status"] == "completed"


# -- sweeps (19.5) -----------------------------------------------------------------------------------------------
def test_sweep_without_m_is_refused(tmp_path):
    line = _one_line(_train(["+sweep=agents_count", f"hydra.run.dir={tmp_path}"]))
    assert "add -m" in line and "+sweep=agents_count" in line


def test_sweep_report_lists_failed_jobs(tmp_path):
    from mars2.cli.train import sweep_report

    for i, failed in enumerate([False, True, False, True]):
        job = tmp_path / f"{i}_seed={i}"
        (job / ".hydra").mkdir(parents=True)
        (job / ".hydra" / "config.yaml").write_text("{}")
        if failed:
            (job / "FAILED.json").write_text(json.dumps({"status": "failed", "error": f"config error: bad {i}\nmore"}))
    lines, n_failed, n_jobs = sweep_report(tmp_path)
    assert (n_failed, n_jobs) == (2, 4)
    assert lines == ["mars2: FAILED 1_seed=1: config error: bad 1", "mars2: FAILED 3_seed=3: config error: bad 3",
                     f"mars2: sweep {tmp_path}: 4 job(s), 2 failed (details in each job's FAILED.json)"]


@pytest.mark.slow
def test_sweep_with_one_bad_job_ends_with_a_summary_not_a_traceback(tmp_path):
    """One job cannot start (9 agents on a roster of 3), the other trains: the sweep runs both and ends with
    one line for the failed job and a summary, exit code 1 — not Hydra re-raising the failure."""
    p = _train(["-m", *QUICK, "paradigm.n_agents=9,2", f"hydra.sweep.dir={tmp_path}",
                "++hydra.callbacks.sweep_summary._target_=mars2.cli.train.SweepSummary"])
    assert p.returncode == 1, p.stderr[-3000:]
    assert "Traceback" not in p.stderr + p.stdout
    failed = [ln for ln in p.stderr.splitlines() if ln.startswith("mars2: FAILED")]
    assert len(failed) == 1 and "paradigm.n_agents=9" in failed[0] and "does not fit the roster" in failed[0]
    assert f"mars2: sweep {tmp_path}: 2 job(s), 1 failed" in p.stderr
    done = [json.loads(r.read_text())["status"] for r in sorted(tmp_path.glob("*/results.json"))]
    assert sorted(done) == ["completed", "failed"]
