"""Checkpoint / exact resume (issue 8, design.md principle 4).

Fast tests: the resume-point resolver and atomic writes, metrics.csv continuity, RNG state, and an
in-process run of the real Lightning pieces (MarsModule, BufferStream, TreeSearchRollout, RoundCheckpoint)
with tiny policies that is killed in round 3 and resumed — every per-round metric, evaluation, metrics.csv
row and final weight must equal the uninterrupted run's.

Slow test: `python train.py` (debug=fast sizes) in a subprocess, SIGKILLed once round 2's checkpoint exists,
resumed with ``resume=auto`` in the same run dir, compared with an uninterrupted run of the same seed.

Exactness on CPU: every random draw of a round comes from generators seeded by (seed, round) or by the
backend's call counter (both restored), and the global RNGs are re-seeded at each round start. Float
results are bitwise equal as long as both runs use the same number of intra-op threads (the reduction order
of a matmul depends on it), so the subprocess test pins ``trainer.num_threads=1``."""
from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from fakes import FakeScorer, fake_problem, response
from mars2.rollout.backend import BackendBase, BackendCapabilities

ROOT = Path(__file__).resolve().parents[1]

def _timing(key: str) -> bool:
    """Keys whose values are wall-clock measurements (they differ between any two runs)."""
    return key.startswith("time/") or key.endswith(("_s", "tokens_per_s")) or "seconds" in key


def _strip(d: dict[str, Any]) -> dict[str, Any]:
    """Without timings; NaN (e.g. diversity of an empty set) as a string so that NaN == NaN."""
    return {k: ("nan" if isinstance(v, float) and math.isnan(v) else v) for k, v in d.items() if not _timing(k)}


# ---- resolver and atomic files ------------------------------------------------------------------------------
def test_find_resume_checkpoint_picks_last_complete(tmp_path):
    from mars2.resources import SetupError
    from mars2.training.checkpointing import find_resume_checkpoint

    run = tmp_path / "run"
    ck = run / "checkpoints"
    assert find_resume_checkpoint("auto", run) is None  # first start: nothing to resume, just start
    assert find_resume_checkpoint(None, run) is None
    ck.mkdir(parents=True)
    (ck / "round0001.ckpt").write_bytes(b"1")
    (ck / "round0002.ckpt").write_bytes(b"2")
    (ck / "round0003.ckpt.tmp").write_bytes(b"half")  # a killed save: never picked
    assert find_resume_checkpoint("auto", run) == str(ck / "round0002.ckpt")
    (ck / "last.ckpt.tmp").write_bytes(b"half")
    assert find_resume_checkpoint("auto", run) == str(ck / "round0002.ckpt")
    (ck / "last.ckpt").write_bytes(b"3")
    assert find_resume_checkpoint("auto", run) == str(ck / "last.ckpt")
    assert find_resume_checkpoint(str(run), tmp_path / "elsewhere") == str(ck / "last.ckpt")
    assert find_resume_checkpoint(str(ck / "round0001.ckpt"), run) == str(ck / "round0001.ckpt")
    with pytest.raises(SetupError, match="no checkpoint"):
        find_resume_checkpoint(str(tmp_path / "missing"), run)
    with pytest.raises(SetupError, match="no checkpoint"):
        find_resume_checkpoint(str(ck / "last.ckpt.tmp"), run)


def test_completed_run_is_skipped_only_when_finished(tmp_path):
    """A rerun of a finished sweep with resume=auto skips completed jobs, never running or failed ones."""
    import json

    from mars2.cli.train import completed_run

    assert completed_run(tmp_path) is None
    (tmp_path / "results.json").write_text(json.dumps({"status": "running"}))
    assert completed_run(tmp_path) is None
    (tmp_path / "results.json").write_text(json.dumps({"status": "completed", "final": {"eval/pass1": 0.5}}))
    assert completed_run(tmp_path) is None  # no saved policies: not usable by evaluate.py, train again
    (tmp_path / "policies").mkdir()
    assert completed_run(tmp_path)["final"]["eval/pass1"] == 0.5
    (tmp_path / "results.json").write_text("{truncated")
    assert completed_run(tmp_path) is None


def test_directory_checkpoint_swap_never_loses_the_resume_point(tmp_path):
    """Sharded (FSDP) checkpoints are directories: os.replace cannot swap them atomically, so the old one is
    parked as last.ckpt.old — a kill between the two renames leaves a complete checkpoint there."""
    from mars2.training.checkpointing import _replace, find_resume_checkpoint

    ck = tmp_path / "checkpoints"
    (ck / "last.ckpt").mkdir(parents=True)
    (ck / "last.ckpt" / "shard0").write_text("old")
    new = ck / "last.ckpt.tmp"
    new.mkdir()
    (new / "shard0").write_text("new")
    _replace(new, ck / "last.ckpt")
    assert (ck / "last.ckpt" / "shard0").read_text() == "new"
    assert not (ck / "last.ckpt.old").exists() and not new.exists()
    # state right after a kill between the two renames
    os.replace(ck / "last.ckpt", ck / "last.ckpt.old")
    assert find_resume_checkpoint("auto", tmp_path) == str(ck / "last.ckpt.old")


def test_metrics_csv_continuity(tmp_path):
    """Rows of rounds ≤ the checkpoint survive the CSV logger's start; rows of the lost round are dropped."""
    from lightning.pytorch.loggers import CSVLogger

    from mars2.training.checkpointing import restore_metrics_csv, stash_metrics_csv

    path = tmp_path / "metrics.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["a", "b", "step"])
        w.writeheader()
        w.writerows([{"a": 1.5, "step": 0}, {"a": 2.0, "b": 7, "step": 1}, {"b": 9, "step": 2}, {"a": 4, "step": 3}])
    assert stash_metrics_csv(tmp_path) is not None and not path.exists()
    lg = CSVLogger(save_dir=tmp_path, name="", version="")
    lg.log_hyperparams({"x": 1})  # creates the writer, which would have deleted metrics.csv
    assert restore_metrics_csv([lg], tmp_path, max_step=2) == 3
    lg.log_metrics({"a": 5.0, "c": 1.0}, step=3)
    lg.save()
    rows = list(csv.DictReader(open(path)))
    assert [r["step"] for r in rows] == ["0", "1", "2", "3"]
    assert [r["a"] for r in rows] == ["1.5", "2.0", "", "5.0"]
    assert [r["b"] for r in rows] == ["", "7.0", "9.0", ""] and rows[3]["c"] == "1.0"
    assert not (tmp_path / "metrics.before_resume.csv").exists()


def test_metrics_csv_replayed_from_checkpoint_without_stash(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    from mars2.training.checkpointing import restore_metrics_csv

    lg = CSVLogger(save_dir=tmp_path, name="", version="")
    n = restore_metrics_csv([lg], tmp_path, 1, [(0, {"eval/x": 0.5}), (1, {"r": 1.0}), (1, {"eval/x": 0.75}), (2, {"r": 2.0})])
    assert n == 3
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [(r["step"], r["eval/x"], r["r"]) for r in rows] == [("0", "0.5", ""), ("1", "", "1.0"), ("1", "0.75", "")]


def test_rng_state_round_trip():
    import random

    import numpy as np

    from mars2.training.checkpointing import rng_state, set_rng_state

    state = rng_state()
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    set_rng_state(state)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == a


# ---- in-process kill + resume with the real Lightning pieces ------------------------------------------------
class Killed(RuntimeError):
    pass


class MarkedBackend(BackendBase):
    """Real HF sampling (the tiny policies' tokens and log-probs); the text the scorer sees is a program whose
    verdicts depend on the sampled tokens, so rewards vary and the updates are real. state_dict delegates to
    the inner backend's call counter (its per-call generator seed)."""

    capabilities = BackendCapabilities(shares_trainer_modules=True)  # samples with the trainer's modules

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner = inner

    def generate(self, requests, **kw):
        gens = self.inner.generate(requests, **kw)
        for g in gens:
            ok = int(sum(g.response_ids) % 3 != 0)
            g.text = response([ok, ok], [ok, 1 - (len(g.response_ids) % 2) * (1 - ok)] + [ok])
        return gens

    def state_dict(self) -> dict[str, int]:
        return {"calls": self.inner.calls, "tokens_generated": self.inner.tokens_generated}

    def load_state_dict(self, s: dict[str, int]) -> None:
        self.inner.calls, self.inner.tokens_generated = s["calls"], s["tokens_generated"]


CORPUS = ["def f(xs):\n    return [x for x in xs if x % 2 == 0]", "Return the input list unchanged."] * 30


def _run(out: Path, rounds: int, tok_dir: Path, kill_at: int | None = None, resume: bool = False, **rollout_kw):
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    from mars2.agents.base import AgentSpec
    from mars2.rollout.hf_backend import HFBackend
    from mars2.agents.models import PolicySpec, build_policy
    from mars2.agents.tokenizer import build_tiny_tokenizer
    from mars2.rl.buffers import PolicyBuffers
    from mars2.rl.objective import LossConfig
    from mars2.rl.samples import SampleConfig
    from mars2.search.factory import SearchConfig
    from mars2.training import checkpointing as ck
    from mars2.training.data import BufferDataModule, BufferStream
    from mars2.training.module import MarsModule
    from mars2.training.rollout import TreeSearchRollout

    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    tok = build_tiny_tokenizer(CORPUS, vocab_size=300, cache_dir=tok_dir)
    models = {
        "q": build_policy(PolicySpec("q", "qwen3", 32, 1, 2, 1, 16, 64, seed=1), tok)[0],
        "l": build_policy(PolicySpec("l", "llama", 32, 1, 2, 2, 16, 64, seed=2), tok)[0],
    }
    agents = [AgentSpec("solver@q", "You solve.", "q"), AgentSpec("debugger@l", "You debug.", "l")]
    backend = MarkedBackend(HFBackend(models, {"q": tok, "l": tok}, max_new_tokens=6, seed=0))
    module = MarsModule(models, LossConfig(kl_coef=1e-3), {"lr": 1e-2, "grad_clip": 1.0})
    buffers = PolicyBuffers(["q", "l"], 2, keep_remainder=True)
    ckpt_path = ck.find_resume_checkpoint("auto" if resume else None, out)
    if ckpt_path:
        ck.stash_metrics_csv(out)
    logger = CSVLogger(save_dir=out, name="", version="")
    evals_seen: list[int] = []

    def on_eval(r: int, m: dict) -> None:
        evals_seen.append(r)
        if kill_at is not None and r == kill_at:  # round kill_at logged and evaluated, not checkpointed
            raise Killed(f"killed in round {r}")

    rollout = TreeSearchRollout(
        agents=agents, backend=backend, scorer=FakeScorer(),
        train_problems=[fake_problem(f"t{i}") for i in range(5)], test_problems=[fake_problem("e0")],
        buffers=buffers, search=SearchConfig(budget=3), sample_cfg=SampleConfig(max_new_tokens=6, overlong_buffer=2),
        rollout_batch_size=2, reward_tests="all",
        eval_cfg={"every": 1, "budget": 2, "n_problems": 1, "tts_budgets": [1, 2]}, eval_search=SearchConfig(budget=2),
        seed=0, output_dir=out, on_eval=on_eval, **rollout_kw,
    )
    stream = BufferStream(buffers, lambda: module.policies, {"q": tok.pad_token_id, "l": tok.pad_token_id},
                          before_round=rollout.run_round, full_params=lambda: rollout.full_params(True, False))
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=rounds, logger=[logger],
                         callbacks=[rollout, ck.RoundCheckpoint(out / "checkpoints", every=2)],
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(out))
    trainer.fit(module, datamodule=BufferDataModule(stream), ckpt_path=ckpt_path)
    return rollout, module, evals_seen


def test_kill_in_round_3_and_resume_equals_uninterrupted(tmp_path):
    tok_dir = tmp_path / "tok"
    full, full_module, _ = _run(tmp_path / "full", 4, tok_dir)
    with pytest.raises(Killed):
        _run(tmp_path / "cut", 4, tok_dir, kill_at=3)
    ckpts = tmp_path / "cut" / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt", "round0002.ckpt"]
    on_disk = list(csv.DictReader(open(tmp_path / "cut" / "metrics.csv")))
    assert max(int(r["step"]) for r in on_disk) == 3  # round 3's rows were written before the kill
    resumed, resumed_module, evals_seen = _run(tmp_path / "cut", 4, tok_dir, resume=True)
    assert resumed.restored_from == 2 and evals_seen == [3, 4]  # rounds 3 and 4 re-run, nothing before
    assert sorted(p.name for p in ckpts.iterdir()) == ["last.ckpt", "round0002.ckpt", "round0004.ckpt"]

    # per-round metrics and evaluations: identical (timings aside)
    assert len(resumed.history) == len(full.history) == 4
    for a, b in zip(full.history, resumed.history):
        assert _strip(a) == _strip(b)
    assert [_strip(e) for e in full.evals] == [_strip(e) for e in resumed.evals]
    # training really happened, with non-trivial advantages, in the resumed rounds
    assert full.history[3]["policy/q/step"] + full.history[3]["policy/l/step"] >= 3
    assert any(abs(h.get("rl/advantage_abs_mean", 0)) > 0 for h in full.history[2:])
    # weights, optimiser moments and buffers: identical
    for (k, v), (k2, v2) in zip(full_module.state_dict().items(), resumed_module.state_dict().items()):
        assert k == k2 and torch.equal(v, v2), k
    assert full.buffers.state_dict() == resumed.buffers.state_dict()
    assert full_module.policy_steps == resumed_module.policy_steps
    # metrics.csv continues: same rows as the uninterrupted run (the killed round's rows were dropped)
    rows = lambda p: [_strip({k: v for k, v in r.items() if v != ""}) for r in csv.DictReader(open(p))]  # noqa: E731
    assert rows(tmp_path / "cut" / "metrics.csv") == rows(tmp_path / "full" / "metrics.csv")


def test_checkpoint_holds_everything_needed(tmp_path):
    """The saved checkpoint carries policies, references, optimisers, schedulers, buffers, data position, RNG,
    backend counters and the tracking records."""
    rollout, module, _ = _run(tmp_path / "r", 1, tmp_path / "tok")
    ckpt = torch.load(tmp_path / "r" / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    sd = ckpt["state_dict"]
    assert any(k.startswith("policies.q.") for k in sd) and any(k.startswith("refs.l.") for k in sd)
    assert len(ckpt["optimizer_states"]) == 2 and len(ckpt["lr_schedulers"]) == 2
    assert ckpt["mars2_policy_steps"] == module.policy_steps
    state = next(v for k, v in ckpt["callbacks"].items() if "TreeSearchRollout" in k)
    assert state["rounds_done"] == 1 and state["data_pos"] == 2 and state["data_epoch"] == 0
    assert set(state["rng"]) >= {"python", "numpy", "torch"}
    assert state["backend"]["calls"] == rollout.backend.inner.calls > 0
    assert [e["round"] for e in state["evals"]] == [0.0, 1.0] and len(state["history"]) == 1
    assert set(state["buffers"]) == {"q", "l"}


# ---- the real entry point, SIGKILLed ------------------------------------------------------------------------
FAST_ARGS = ["debug=fast", "rounds=3", "trainer.num_threads=1", "eval.n_problems=2", "eval.budget=2",
             "model.generation.max_new_tokens=32"]


def _env() -> dict[str, str]:
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(ROOT / "src")}
    env.setdefault("MARS2_CACHE_DIR", str(ROOT / ".cache" / "mars2"))
    return env


@pytest.mark.slow
def test_sigkill_and_resume_auto_matches_uninterrupted_run(tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    p = subprocess.run([sys.executable, str(ROOT / "train.py"), *FAST_ARGS, f"hydra.run.dir={full}"], cwd=ROOT,
                       env=_env(), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]

    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *FAST_ARGS, f"hydra.run.dir={cut}"], cwd=ROOT,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 900
    while not (cut / "checkpoints" / "round0002.ckpt").exists():
        assert proc.poll() is None, "run ended before round 2's checkpoint"
        assert time.time() < deadline
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)  # in round 3
    proc.wait()
    killed = json.loads((cut / "results.json").read_text())
    assert killed["status"] == "running" and [e["round"] for e in killed["evals"]] == [0, 1, 2]

    p = subprocess.run([sys.executable, str(ROOT / "train.py"), *FAST_ARGS, "resume=auto", f"hydra.run.dir={cut}"],
                       cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    a, b = json.loads((full / "results.json").read_text()), json.loads((cut / "results.json").read_text())
    assert b["status"] == "completed" and b["resumes"][0]["round"] == 2
    assert [e["round"] for e in b["evals"]] == [0, 1, 2, 3]
    assert [_strip(e) for e in a["evals"]] == [_strip(e) for e in b["evals"]]
    assert len(b["history"]) == 3
    for ra, rb in zip(a["history"], b["history"]):
        assert _strip(ra) == _strip(rb)
    rows = lambda p: [_strip({k: v for k, v in r.items() if v != ""}) for r in csv.DictReader(open(p))]  # noqa: E731
    assert rows(full / "metrics.csv") == rows(cut / "metrics.csv")
