"""R_θ in the pipeline (issue 20.6): fit on each round's nodes, saved with the run, reloaded on resume and by
evaluate.py, and the selection accuracy of R_θ vs the public-test rule on the same trees."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from fakes import fake_problem
from mars2.reward_model import RMTrainConfig
from mars2.reward_model.online import (
    RoundwiseRM, add_selection_metrics, load_run_reward_model, run_reward_model_path, selection_report,
    selection_values,
)
from mars2.sandbox.types import Evaluation, ExecResult, TestVerdict
from mars2.search.tree import Node, Tree


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def _ev(public: bool, hidden: bool) -> Evaluation:
    v = lambda ok: ExecResult([TestVerdict("passed" if ok else "wrong_answer")])  # noqa: E731
    return Evaluation(v(public), v(hidden))


def _tree(pid: str) -> Tree:
    """n1: passes all ("good"); n2: public only, newer ("overfit"); n3: fails ("bad"). The public-test rule
    picks n2 (best public score, newest): wrong."""
    t = Tree(pid)
    t.add(Node(id=-1, parent_id=0, depth=0, program="return sorted(xs)", score=1.0, evaluation=_ev(True, True)))
    t.add(Node(id=-1, parent_id=0, depth=0, program="return [1, 2, 3]", score=1.0, evaluation=_ev(True, False)))
    t.add(Node(id=-1, parent_id=0, depth=0, program="return xs[::-1]", score=0.0, evaluation=_ev(False, False)))
    return t


# ---- selection accuracy ---------------------------------------------------------------------------------------
def test_selection_values_by_hand():
    trees = [_tree("a"), _tree("b")]
    # tree a: R_θ prefers the correct node among the two public-passing ones; tree b: it prefers the overfit one
    scores = [{1: 0.9, 2: 0.2, 3: 0.1}, {1: 0.3, 2: 0.8, 3: 0.99}]
    v = selection_values(trees, scores, mode="tiebreak")
    assert v == {"select/rule": [0.0, 0.0], "select/rm": [1.0, 0.0], "select/oracle": [1.0, 1.0],
                 "select/changed": [1.0, 0.0]}
    # rerank over all candidates: tree b picks n3 (0.99), which fails
    assert selection_values(trees, scores, mode="rerank")["select/rm"] == [1.0, 0.0]
    assert selection_values(trees, scores, mode="rerank")["select/changed"] == [1.0, 1.0]
    # budget 1: only n1 is a candidate, both rules pick it
    assert selection_values(trees, scores, budget=1) == {"select/rule": [1.0, 1.0], "select/rm": [1.0, 1.0],
                                                         "select/oracle": [1.0, 1.0], "select/changed": [0.0, 0.0]}


class _LengthRM:
    """Scores a program by its length (shorter = better): enough to check the plumbing."""

    def score(self, texts, programs):
        return [1.0 / (1 + len(p)) for p in programs]


def test_selection_report_and_eval_result_metrics():
    from mars2.evaluation import EvalResult

    problems = [fake_problem("a"), fake_problem("b")]
    trees = [_tree("a"), _tree("b")]
    # "return [1, 2, 3]" (16 chars) is shorter than "return sorted(xs)" (17): R_θ also picks the overfit node
    rep = selection_report(_LengthRM(), problems, {"team": trees}, "tiebreak", budget=3)
    assert rep == {"eval/select/rule": [0.0, 0.0], "eval/select/rm": [0.0, 0.0], "eval/select/oracle": [1.0, 1.0],
                   "eval/select/changed": [0.0, 0.0]}
    r = EvalResult(metrics={}, values={}, trees={"team": trees})
    add_selection_metrics(r, _LengthRM(), problems, "rerank", budget=3)  # rerank: the shortest program, n3
    assert r.values["eval/select/changed"] == [1.0, 1.0] and r.metrics["eval/select/rm"] == 0.0
    assert r.metrics["eval/select/oracle"] == 1.0 and "eval/select/oracle_lo" in r.metrics


# ---- RoundwiseRM ----------------------------------------------------------------------------------------------
def _rm(**kw) -> RoundwiseRM:
    return RoundwiseRM.from_config({"train": True, "model": "hashed_ngram", "mode": "tiebreak", "epochs": 5,
                                    "holdout_frac": 0.25, **kw}, seed=3)


def test_from_config_off_and_value_head_refused():
    from mars2.resources import SetupError

    assert RoundwiseRM.from_config(None, 0) is None and RoundwiseRM.from_config({"train": False}, 0) is None
    with pytest.raises(SetupError, match="rm.model=value_head"):
        RoundwiseRM.from_config({"train": True, "model": "value_head"}, 0)
    rm = _rm(lr=0.01)
    assert rm.fit_cfg.epochs == 5 and rm.fit_cfg.lr == 0.01 and rm.fit_cfg.seed == 3 * 1_000_003
    assert rm.holdout_frac == 0.25 and rm.mode == "tiebreak"


def test_rounds_accumulate_update_incrementally_and_leave_global_rng_alone(tmp_path):
    rm = _rm()
    pids = [f"p{i}" for i in range(40)]
    held = [p for p in pids if rm.held_out(p)][:2]
    train = [p for p in pids if not rm.held_out(p)][:2]
    assert len(held) == 2 and len(train) == 2 and rm.held_out(held[0]) == _rm().held_out(held[0])
    problems = [fake_problem(p) for p in held + train]
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    before = [p.detach().clone() for p in rm.model.parameters()]
    m1 = rm.add_round([_tree(train[0]), _tree(held[0])], problems, 0)
    m2 = rm.add_round([_tree(train[1]), _tree(held[1])], problems, 1)
    assert torch.equal(torch.rand(3), expected)  # R_θ drew nothing from the global torch RNG
    assert any(not torch.equal(a, b) for a, b in zip(before, rm.model.parameters()))  # it did train
    assert m1["rm/examples"] == 6.0 and m2["rm/examples"] == 12.0 and m2["rm/new_examples"] == 6.0
    assert m2["rm/pos_frac"] == pytest.approx(1 / 3)
    assert m2["rm/train_examples"] == 6.0 and m2["rm/held_out_n"] == 6.0  # 2 of the 4 problems held out
    assert math.isfinite(m2["rm/train_loss"]) and 0.0 <= m2["rm/held_out_auc"] <= 1.0
    assert [h["round"] for h in rm.history] == [1.0, 2.0]
    # resume: a fresh instance restored from the state continues exactly like the original
    again = _rm()
    again.load_state_dict(rm.state_dict())
    texts, progs = ["Return the input list."] * 3, ["return sorted(xs)", "return [1, 2, 3]", "return xs[::-1]"]
    assert again.model.score(texts, progs) == rm.model.score(texts, progs)
    third = [_tree(train[0])]
    rm.add_round(third, problems, 2)
    again.add_round(third, problems, 2)
    assert again.model.score(texts, progs) == rm.model.score(texts, progs)
    path = again.save(tmp_path)
    assert path == tmp_path / "reward_model" / "rm.pt" == run_reward_model_path(tmp_path)
    assert (tmp_path / "reward_model" / "fit.json").is_file()
    assert load_run_reward_model(tmp_path).score(texts, progs) == rm.model.score(texts, progs)
    assert _rm().save(tmp_path / "none") is None  # nothing fitted yet: nothing written


# ---- the callback: R_θ beside the policies, in the checkpoint and the run dir ---------------------------------
def test_callback_trains_rm_without_changing_the_run_and_resume_restores_it(tmp_path):
    import test_resume as tr

    tok = tmp_path / "tok"
    plain, _, _ = tr._run(tmp_path / "plain", 2, tok)
    with_rm, _, _ = tr._run(tmp_path / "rm", 2, tok, reward_model=_rm(epochs=3))
    # same trees, samples and updates: only the rm/ and eval/select/ keys are added
    for a, b in zip(plain.history, with_rm.history):
        assert tr._strip(a) == {k: v for k, v in tr._strip(b).items() if not k.startswith("rm/")}
        assert b["rm/examples"] > 0
    for a, b in zip(plain.evals, with_rm.evals):
        assert tr._strip(a) == {k: v for k, v in tr._strip(b).items() if not k.startswith("eval/select/")}
    assert "eval/select/rm" not in with_rm.evals[0] and "eval/select/rm" in with_rm.evals[-1]
    run = tmp_path / "rm"
    assert run_reward_model_path(run) is not None
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    state = next(v for k, v in ckpt["callbacks"].items() if "TreeSearchRollout" in k)
    assert len(state["reward_model"]["examples"]) == int(with_rm.history[-1]["rm/examples"])
    assert "reward_model" not in next(v for k, v in torch.load(
        tmp_path / "plain" / "checkpoints" / "last.ckpt", weights_only=False)["callbacks"].items())
    # the checkpoint's R_θ is the saved one: last.ckpt is after the last round
    texts, progs = ["Return the input list."] * 2, ["def f(xs):\n    return xs", "def f(xs):\n    return []"]
    from_ckpt = load_run_reward_model(run, run / "checkpoints" / "last.ckpt")
    assert from_ckpt.score(texts, progs) == load_run_reward_model(run).score(texts, progs)
    # resume for a third round: R_θ continues exactly like an uninterrupted 3-round run's
    rm2 = _rm(epochs=3)
    resumed, _, _ = tr._run(run, 3, tok, resume=True, reward_model=rm2)
    assert resumed.restored_from == 2 and len(rm2.history) == 3
    rm3 = _rm(epochs=3)
    tr._run(tmp_path / "full", 3, tok, reward_model=rm3)
    assert rm2.model.score(texts, progs) == rm3.model.score(texts, progs)
    assert [h["examples"] for h in rm2.history] == [h["examples"] for h in rm3.history]


def test_evaluate_cli_uses_the_runs_reward_model(tmp_path):
    from mars2.cli.evaluate import _run_reward_model

    assert _run_reward_model({"ckpt": None, "eval": {"rm_mode": "tiebreak"}}, None) is None
    assert _run_reward_model({"ckpt": str(tmp_path), "eval": {"rm_mode": "tiebreak"}}, None) is None
    rm = _rm()
    rm.add_round([_tree("p0"), _tree("p1")], [fake_problem("p0"), fake_problem("p1")], 0)
    rm.save(tmp_path)
    got = _run_reward_model({"ckpt": str(tmp_path), "eval": {"rm_mode": "tiebreak"}}, None)
    assert got.score(["x"], ["return xs"]) == rm.model.score(["x"], ["return xs"])


# ---- the entry points ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_train_with_rm_then_evaluate_with_the_runs_rm(tmp_path):
    """train.py experiment=reward_model (debug=fast) runs the R_θ hook every round; evaluate.py ckpt=<run> picks
    final answers with the run's R_θ and reports the selection accuracy of both rules on the same trees."""
    import json
    import os
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.setdefault("MARS2_CACHE_DIR", str(root / ".cache" / "mars2"))
    run = tmp_path / "run"
    p = subprocess.run([sys.executable, str(root / "train.py"), "experiment=reward_model", "debug=fast",
                        "rm.epochs=3", f"hydra.run.dir={run}"], cwd=root, env=env, capture_output=True,
                       text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    res = json.loads((run / "results.json").read_text())
    assert [("rm/examples" in h) for h in res["history"]] == [True, True]  # the hook ran every round
    # debug=fast's 10-step warm start writes no code blocks, so its R_θ has no examples and nothing is saved;
    # fit one on hand-made trees into the run dir to check evaluate.py's side on a real run dir
    if (run / "reward_model" / "rm.pt").is_file():
        assert json.loads((run / "reward_model" / "fit.json").read_text())["examples"] > 0
    else:
        assert res["history"][-1]["rm/examples"] == 0.0
        rm = _rm()
        rm.add_round([_tree("p0"), _tree("p1")], [fake_problem("p0"), fake_problem("p1")], 0)
        rm.save(run)
    out = tmp_path / "eval"
    p = subprocess.run([sys.executable, str(root / "evaluate.py"), f"ckpt={run}", "search@eval.search=t_plus",
                        "eval.n_problems=4", "eval.budget=2", "eval.tts_budgets=[1,2]", f"hydra.run.dir={out}"],
                       cwd=root, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-4000:]
    assert "selection accuracy" in p.stdout and "final answers by the R_θ" in p.stderr
    ev = json.loads((out / "results.json").read_text())
    assert ev["config"]["selection"] == "rm_tiebreak"
    final = ev["final"]
    for key in ("eval/select/rule", "eval/select/rm", "eval/select/oracle", "eval/select/changed"):
        assert 0.0 <= final[key] <= 1.0
    assert final["eval/select/rm"] == final["eval/pass1_mcts"]  # final answers are R_θ's
    assert final["eval/select/rule"] <= final["eval/select/oracle"] >= final["eval/select/rm"]
