"""Evaluation (method.md §7) with the FAKE backend and scorer: every metric of a scripted search checked
against hand-computed values, seeds aggregation, reward-model selection, probes, and evaluate.py's CLI."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest
from fakes import FakeBackend, FakeScorer, fake_problem, response
from omegaconf import OmegaConf

from mars2.agents.base import AgentSpec
from mars2.cli.evaluate import refuse_training_search, resolve_config
from mars2.evaluation import DiversityConfig, EvalResult, aggregate_seeds, evaluate_team, probe_behaviours, run_evaluation
from mars2.search.factory import SearchConfig
from mars2.rollout.runner import SearchRunner

ROOT = Path(__file__).resolve().parents[1]
AGENTS = [AgentSpec("a", "You write code.", "pol_a"), AgentSpec("b", "You fix code.", "pol_b")]
P = response([1, 1], [1, 1, 1], "p")      # passes everything
H = response([1, 1], [1, 0, 1], "h")      # public pass, hidden fail
F = response([0, 0], [0, 0, 0], "f")      # fails everything

# Per (policy, problem) the responses in order: first the fresh Pass@1 sample, then the search nodes.
# iid, budget 4, agents round-robin: nodes 1, 3 by a (pol_a), nodes 2, 4 by b (pol_b).
SCRIPT = {
    ("pol_a", "p0"): [P, H, F], ("pol_b", "p0"): [F, P, H],
    ("pol_a", "p1"): [F, F, F], ("pol_b", "p1"): [F, F, P],
}


def scripted_backend(script=SCRIPT) -> FakeBackend:
    used: dict = defaultdict(int)

    def respond(req, _i):
        pid = next(p for p in ("p0", "p1") if f"problem {p}" in req.messages[-1]["content"])
        key = (req.policy_id, pid)
        text = script[key][used[key]]
        used[key] += 1
        return text

    return FakeBackend(respond)


PROBLEMS = [fake_problem("p0"), fake_problem("p1")]


def run(mode="system", search="iid", budget=4, **kw) -> EvalResult:
    return run_evaluation(scripted_backend(), FakeScorer(), AGENTS, PROBLEMS, SearchConfig(mode=search), budget,
                          mode=mode, tts_budgets=[1, 2, 4], **kw)


def test_system_mode_metrics_hand_computed():
    r = run()
    m = r.metrics
    # Pass@1 (fresh): a solves p0 only, b nothing → a 0.5, b 0, team per problem (0.5, 0) → 0.25
    assert m["eval/agent/a/pass1"] == 0.5 and m["eval/agent/b/pass1"] == 0.0 and m["eval/pass1"] == 0.25
    # tree p0: 1 H (a), 2 P (b), 3 F (a), 4 H (b) → final = newest best = 4 (H) → 0; Pass@N 1; avg_pass1 1/3
    # tree p1: 1 F, 2 F, 3 F, 4 P → final = 4 → 1; Pass@N 1; avg_pass1 1
    assert r.values["eval/pass1_mcts"] == [0.0, 1.0] and m["eval/pass1_mcts"] == 0.5
    assert m["eval/pass_at_n"] == 1.0
    assert m["eval/avg_pass1"] == pytest.approx((1 / 3 + 1) / 2)
    # TTS: b=1 → (H, F) = 0; b=2 → p0 newest best of {H, P} = P → 1, p1 {F, F} → 0: 0.5; b=4 → 0.5
    assert [m[f"eval/tts/{b}"] for b in (1, 2, 4)] == [0.0, 0.5, 0.5]
    assert m["eval/b1/pass_at_n"] == 0.0 and m["eval/b2/pass_at_n"] == 0.5
    assert m["eval/b2/avg_pass1"] == pytest.approx((0.5 + 0.0) / 2)
    assert "eval/b4/pass_at_n" not in m  # the full budget is the un-prefixed key
    # per agent in the shared tree: a wrote (H, F) and (F, F); b wrote (P, H) and (F, P)
    assert m["eval/agent/a/pass_at_n"] == 0.0 and m["eval/agent/b/pass_at_n"] == 1.0
    assert m["eval/agent/a/avg_pass1"] == 0.0 and m["eval/agent/b/avg_pass1"] == pytest.approx(0.75)
    assert m["eval/agent/a/nodes"] == 2.0 and m["eval/agent/b/nodes"] == 2.0
    assert m["eval/agent/a/final_share"] == 0.0 and m["eval/agent/b/final_share"] == 1.0
    assert "eval/agent/a/pass1_mcts" not in m  # a property of the whole shared tree
    # diversity: output vectors H, P, F on p0 (the two H nodes are one program) → EC 3; p1 F, P → EC 2;
    # all fake programs are `return xs` plus comments → one AST: structural 1/4 per problem; TF-IDF
    # ignores comments → semantic distance 0; at most one correct program per problem → DA@K 0
    assert r.values["eval/div/ec"] == [3.0, 2.0] and m["eval/div/ec"] == 2.5
    assert m["eval/div/structural"] == 0.25 and m["eval/div/semantic"] == 0.0 and m["eval/div/da"] == 0.0
    assert m["eval/div/k"] == 4.0
    assert r.values["eval/agent/b/div/ec"] == [2.0, 2.0] and r.values["eval/b2/div/ec"] == [2.0, 1.0]
    # intervals: 95 % t-interval over the two problems, clipped to [0, 1] for rates
    assert m["eval/pass1_mcts_lo"] == 0.0 and m["eval/pass1_mcts_hi"] == 1.0
    # EC (3, 2): 2.5 ± t(0.975, 1)·s/√2 = 12.706205·0.707107/1.414214 = 6.353103; a count: clipped at 0
    assert m["eval/div/ec_lo"] == 0.0 and m["eval/div/ec_hi"] == pytest.approx(2.5 + 6.353103, abs=1e-5)
    assert m["eval/pass_at_n_lo"] == m["eval/pass_at_n_hi"] == 1.0
    assert r.selection == "rule" and set(r.trees) == {"team"} and [len(t) for t in r.trees["team"]] == [4, 4]


def test_agent_mode_each_agent_searches_alone():
    # agent a's solo trees: p0 (H, F), p1 (F, F); agent b's: p0 (P, H), p1 (F, P)
    r = run(mode="agent", budget=2)
    m = r.metrics
    assert set(r.trees) == {"a", "b"} and all(n.agent_name == "b" for t in r.trees["b"] for n in t.real_nodes())
    # a: final p0 = H (only score-1 node) → 0, p1 = newest F → 0; b: p0 newest best = H → 0, p1 = P → 1
    assert m["eval/agent/a/pass1_mcts"] == 0.0 and m["eval/agent/b/pass1_mcts"] == 0.5
    assert r.values["eval/pass1_mcts"] == [0.0, 0.5]  # team = mean of the solo searches per problem
    assert m["eval/agent/a/pass_at_n"] == 0.0 and m["eval/agent/b/pass_at_n"] == 1.0 and m["eval/pass_at_n"] == 0.5
    # TTS at 1 node: a (H, F) → 0; b (P, F) → 0.5; team per problem (0.5, 0) → 0.25
    assert r.values["eval/agent/b/tts/1"] == [1.0, 0.0] and m["eval/tts/1"] == 0.25
    # the team's diversity pools both solo trees: p0 (H, F, P, H) → EC 3 over K 4; p1 (F, F, F, P) → 2
    assert r.values["eval/div/ec"] == [3.0, 2.0] and r.values["eval/div/k"] == [4.0, 4.0]
    assert r.values["eval/agent/a/div/ec"] == [2.0, 1.0]


class PreferPassingRM:
    """A reward model that 'knows' which fake programs pass the hidden tests."""

    def __init__(self) -> None:
        self.calls = 0

    def score(self, problem_texts, programs):
        self.calls += 1
        assert len(problem_texts) == len(programs)
        return [0.9 if "hidden: 1 1 1" in p else 0.2 for p in programs]


def test_reward_model_hook_changes_the_final_answer():
    rule = run()
    rm = PreferPassingRM()
    guided = run(reward_model=rm)
    # p0: rule picks node 4 (H, newest of the score-1 nodes); R_θ breaks the tie for node 2 (P) → 1
    assert rule.values["eval/pass1_mcts"] == [0.0, 1.0] and guided.values["eval/pass1_mcts"] == [1.0, 1.0]
    assert guided.selection == "rm_tiebreak" and rm.calls == 1
    assert guided.values["eval/tts/2"] == [1.0, 0.0]  # prefixes use the same scores
    assert guided.metrics["eval/agent/b/final_share"] == 1.0
    # rerank over all nodes: same choice here; an unknown mode is refused
    assert run(reward_model=PreferPassingRM(), rm_mode="rerank").selection == "rm_rerank"
    with pytest.raises(ValueError, match="rm_mode"):
        run(rm_mode="vote")
    with pytest.raises(ValueError, match="eval.mode"):
        run(mode="both")


def test_evaluate_team_keeps_the_training_callback_keys():
    metrics, trees = evaluate_team(scripted_backend(), FakeScorer(), AGENTS, PROBLEMS, SearchConfig(mode="iid"),
                                   budget=4, tts_budgets=[2, 4, 60])
    for key in ("eval/pass1", "eval/pass1_lo", "eval/pass1_hi", "eval/pass1_mcts", "eval/pass_at_n",
                "eval/avg_pass1", "eval/agent/a/pass1", "eval/tts/2", "eval/tts/4", "eval/seconds"):
        assert key in metrics, key
    assert "eval/tts/60" not in metrics  # beyond the budget
    assert list(trees) == ["team"]
    off, _ = evaluate_team(scripted_backend(), FakeScorer(), AGENTS, PROBLEMS, SearchConfig(mode="iid"), budget=4,
                           diversity=False)
    assert not any("/div/" in k for k in off)


def test_aggregate_seeds_hand_computed():
    def res(values):
        return EvalResult(metrics={"eval/seconds": 1.0}, values=values, trees={})

    s0 = res({"eval/div/ec": [1.0, 2.0, 3.0], "eval/pass1_mcts": [1.0, 0.0, 1.0], "eval/div/semantic": [math.nan, 0.5, 0.5]})
    s1 = res({"eval/div/ec": [3.0, 4.0, 5.0], "eval/pass1_mcts": [1.0, 1.0, 1.0], "eval/div/semantic": [math.nan, 0.3, 0.3]})
    flat, detail = aggregate_seeds([s0, s1])
    # EC: per-problem means (2, 3, 4): mean 3, s = 1, t(0.975, 2) = 4.302653 → ± 4.302653/√3 = 2.484138
    ec = detail["eval/div/ec"]
    assert ec["mean"] == 3.0 and ec["per_seed"] == [2.0, 4.0] and ec["n_seeds"] == 2 and ec["n_problems"] == 3
    assert ec["ci_problems"] == pytest.approx([3 - 2.484138, 3 + 2.484138], abs=1e-6)
    # over seeds: means (2, 4): s = √2, t(0.975, 1) = 12.706205 → ± 12.706205, a count: clipped at 0 only
    assert ec["ci_seeds"] == pytest.approx([0.0, 3 + 12.706205], abs=1e-5)
    assert flat["eval/div/ec_seed_lo"] == 0.0
    # a rate: per problem (1, 0.5, 1) → mean 5/6, interval clipped to [0, 1]
    pm = detail["eval/pass1_mcts"]
    assert pm["mean"] == pytest.approx(5 / 6) and pm["per_seed"] == pytest.approx([2 / 3, 1.0])
    assert pm["ci_problems"][1] == 1.0 and 0.0 <= pm["ci_problems"][0] < 5 / 6
    # NaN (undefined for a problem) is left out: problems 2 and 3 only, both 0.4 → degenerate interval
    sem = detail["eval/div/semantic"]
    assert sem["mean"] == pytest.approx(0.4) and sem["n_problems"] == 2 and sem["ci_problems"] == pytest.approx([0.4, 0.4])
    assert flat["eval/seconds"] == 2.0
    one, d1 = aggregate_seeds([s0])
    assert d1["eval/div/ec"]["ci_seeds"] is None and "eval/div/ec_seed_lo" not in one
    with pytest.raises(ValueError):
        aggregate_seeds([])


@pytest.mark.parametrize("mode", ["ab_mcts", "t_plus", "iid", "sequential"])
def test_a_prefix_of_a_search_is_the_smaller_search(mode):
    """What makes tts/<b> and b<b>/... the metrics of a b-node search: no decision depends on the budget."""
    texts = [F, H, P, "no code", response([1, 0], [1, 1, 1], "x")]

    def nodes(budget):
        runner = SearchRunner(FakeBackend(texts), FakeScorer(), AGENTS, SearchConfig(mode=mode))
        trees = runner.run(PROBLEMS, budget=budget, seed=5)
        return [[(n.parent_id, n.agent_id, n.text) for n in t.real_nodes()] for t in trees]

    small, large = nodes(8), nodes(16)
    assert [t[:8] for t in large] == small


def test_probe_behaviours_on_a_real_minicode_problem():
    """Extra probes in the real sandbox: the reference behaves like itself everywhere, a program that is
    right on every test but wrong elsewhere is told apart only by the probes (what DA@K needs)."""
    from mars2.sandbox import Sandbox
    from mars2.tasks.minicode import generate_minicode, probe_tests

    problems = generate_minicode(seed=0, n_warmup=10, n_train=10, n_test=10)["test"]
    p = next(q for q in problems if q.meta["family"] == "list" and q.mode == "functional")
    probes = probe_tests(p, 6, seed=0)
    assert len(probes) == 6 and probes == probe_tests(p, 6, seed=0) and probes != probe_tests(p, 6, seed=1)
    assert not {repr(t.input) for t in probes} & {repr(t.input) for t in p.all_tests}
    table = {repr(t.input[0]): t.output for t in p.all_tests}
    memo = (f"TABLE = {table!r}\n{p.reference_solution}\n_ref = solve\n"
            "def solve(xs):\n    return TABLE.get(repr(xs), 12345)\n")
    from mars2.search.tree import Node, Tree

    tree = Tree(p.id)
    for prog in (p.reference_solution, memo, p.reference_solution):
        tree.add(Node(id=-1, parent_id=0, depth=0, program=prog))
    with Sandbox() as sb:
        (beh,) = probe_behaviours(sb, [p], [[tree]], DiversityConfig(extra_probes=6))
    assert set(beh) == {p.reference_solution, memo}  # each distinct program runs once
    assert beh[p.reference_solution] == ("ok",) * 6
    assert all(v.startswith("out:") for v in beh[memo])  # right on the tests, wrong on every probe
    assert probe_behaviours(FakeScorer(), PROBLEMS, [[tree], [tree]], DiversityConfig()) == [{}, {}]  # no probes


# --- the CLI -----------------------------------------------------------------------------------------------

def test_the_training_search_on_evaluates_command_line_is_refused_with_the_right_spelling():
    """One spelling of the evaluation search (eval.search, as in train.py); `search=...` would set train.py's
    training search, which evaluate.py does not use: one line naming the right spelling."""
    from mars2.config import ConfigError

    refuse_training_search(["search@eval.search=t_plus", "eval.search.posterior=beta", "eval.budget=16"])
    with pytest.raises(ConfigError, match=r"use search@eval\.search=t_plus$"):
        refuse_training_search(["search=t_plus"])
    with pytest.raises(ConfigError, match=r"use eval\.search\.posterior=beta$"):
        refuse_training_search(["+search.posterior=beta"])


def test_resolve_config_takes_model_from_the_run(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "policies").mkdir()
    saved = {"paradigm": {"name": "single"}, "model": {"name": "trained", "generation": {"max_new_tokens": 77}},
             "task": {"name": "minicode", "seed": 3}, "roles": [{"name": "r"}], "rl": {"loss": "gspo"}}
    OmegaConf.save(OmegaConf.create(saved), run_dir / ".hydra" / "config.yaml")
    cfg = OmegaConf.create({"ckpt": str(run_dir), "paradigm": {"name": "heterogeneous"},
                            "model": {"name": "tiny", "generation": {"max_new_tokens": 128}},
                            "task": {"name": "humaneval"}, "roles": [], "eval": {"budget": 8},
                            "rollout": {"max_new_tokens": "${model.generation.max_new_tokens}"}})
    c = resolve_config(cfg, overrides=[f"ckpt={run_dir}"])
    assert c["paradigm"]["name"] == "single" and c["model"]["name"] == "trained"
    assert c["rollout"]["max_new_tokens"] == 77  # resolved against the trained run's model
    assert c["task"] == {"name": "minicode", "seed": 3} and "rl" not in c
    c = resolve_config(cfg, overrides=[f"ckpt={run_dir}", "task=humaneval"])
    assert c["task"] == {"name": "humaneval"}  # the command line names the task: it wins
    from mars2.resources import SetupError

    with pytest.raises(SetupError, match="not a train.py run dir"):
        resolve_config(OmegaConf.create({"ckpt": str(tmp_path)}))
    (run_dir / "policies").rmdir()  # neither policies/ nor a checkpoint: nothing to evaluate
    with pytest.raises(SetupError, match="no trained weights"):
        resolve_config(cfg, overrides=[f"ckpt={run_dir}"])


def _run_cli(args, tmp_path, timeout=600):
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    env.setdefault("MARS2_CACHE_DIR", str(ROOT / ".cache" / "mars2"))
    return subprocess.run([sys.executable, str(ROOT / "evaluate.py"), *args, f"hydra.run.dir={tmp_path}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_cli_missing_data_file_is_one_line(tmp_path):
    p = _run_cli(["task=livecodebench", f"task.path={tmp_path}/nope.jsonl"], tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    line = [ln for ln in p.stderr.splitlines() if ln.startswith("mars2:")]
    assert len(line) == 1 and "livecodebench: expected" in line[0] and "nope.jsonl" in line[0]


def test_cli_bad_eval_mode_is_one_line(tmp_path):
    p = _run_cli(["eval.mode=both"], tmp_path)
    assert p.returncode == 2 and "eval.mode" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.slow
def test_cli_warm_started_team_two_seeds(tmp_path):
    """The real thing on the warm-started tiny pair (cached warm start): T+ via train.py's override
    spelling, two seeds, agent mode; results.json, trees and the table."""
    p = _run_cli(["search@eval.search=t_plus", "eval.mode=agent", "eval.n_problems=3", "eval.budget=2",
                  "eval.tts_budgets=[1,2]", "eval.seeds=[0,1]", "eval.diversity.extra_probes=2"], tmp_path)
    assert p.returncode == 0, p.stderr[-4000:]
    assert "eval/pass1_mcts" in p.stdout and "eval/div/ec" in p.stdout
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["status"] == "completed" and res["config"]["search"] == "t_plus"
    assert res["config"]["eval_mode"] == "agent" and res["config"]["seeds"] == [0, 1]
    assert res["config"]["selection"] == "rule" and res["config"]["n_problems"] == 3
    m = res["metrics"]["eval/pass1_mcts"]
    assert m["n_seeds"] == 2 and len(m["per_seed"]) == 2 and m["ci_seeds"] is not None
    assert 0.0 <= res["final"]["eval/pass1"] <= 1.0 and "eval/div/semantic" in res["final"]
    for s in (0, 1):
        trees = json.loads((tmp_path / "trees" / f"seed{s}.json").read_text())
        assert len(trees) == 2 and all(len(ts) == 3 for ts in trees.values())  # one solo search per agent
        assert all(len(t["nodes"]) == 3 for ts in trees.values() for t in ts)  # root + 2 nodes
    assert (tmp_path / "metrics.csv").is_file()  # the csv logger got the metrics too


def _compose_evaluate(overrides, out_dir):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="evaluate", overrides=list(overrides))
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
    return OmegaConf.to_container(cfg, resolve=True)


def test_evaluate_config_search_spelling(tmp_path):
    c = _compose_evaluate(["search@eval.search=t_plus", "eval.search.posterior=beta"], tmp_path)
    assert c["eval"]["search"]["mode"] == "t_plus" and c["eval"]["search"]["posterior"] == "beta"
    assert c["eval"]["search"]["gen_discount"]["gamma0"] == 0.98
    c = _compose_evaluate([], tmp_path)
    assert c["eval"]["search"]["mode"] == "ab_mcts" and c["eval"]["seeds"] is None
    assert c["eval"]["diversity"]["extra_probes"] == 8 and c["eval"]["reward_model"] is None


def test_served_backend_skips_policies_and_goes_through_build_backend(tmp_path, monkeypatch):
    """rollout=openai: no policy is built or warm-started; the backend comes from build_backend (here a fake
    standing in for the served model); everything else is the normal evaluation, with a reward model."""
    import torch

    import mars2.cli.build as build
    from mars2.cli.evaluate import evaluate
    from mars2.reward_model import HashedNgramRM, save_reward_model

    calls = {}

    def no_policies(*a, **k):
        raise AssertionError("build_policies must not run for a served model")

    def fake_backend(cfg, models, tokenizers, seed, for_training=True):
        assert for_training is False  # evaluate.py's call: an openai backend refuses training
        calls.setdefault("backend", []).append((cfg["rollout"]["backend"], dict(models), seed))
        return FakeBackend([P, H, F])

    class Scorer(FakeScorer):
        def close(self):
            calls["closed"] = True

    monkeypatch.setattr(build, "build_policies", no_policies)
    monkeypatch.setattr(build, "build_backend", fake_backend)
    monkeypatch.setattr(build, "build_sandbox", lambda c: Scorer())
    torch.manual_seed(0)
    rm_path = tmp_path / "rm.pt"
    save_reward_model(HashedNgramRM(n_buckets=64, hidden=4), rm_path)
    c = _compose_evaluate(["rollout=openai", "search@eval.search=iid", "eval.n_problems=3", "eval.budget=3",
                           "eval.tts_budgets=[1,3]", "eval.seeds=[4,5]", f"eval.reward_model={rm_path}",
                           "task.n_warmup=5", "task.n_train=5", "task.n_test=3", "~logger"], tmp_path)
    flat = evaluate(c, None, overrides=["rollout=openai"])
    assert calls["backend"] == [("openai", {}, 4), ("openai", {}, 5)] and calls["closed"]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["config"]["rollout"] == "openai" and res["config"]["selection"] == "rm_tiebreak"
    assert res["config"]["search"] == "iid" and res["config"]["seeds"] == [4, 5] and len(res["problem_ids"]) == 3
    # the fake backend answers P, H, F, P, ... whatever the prompt: fresh samples and nodes are scripted
    assert 0.0 <= flat["eval/pass1_mcts"] <= 1.0 and "eval/pass1_mcts_seed_lo" in flat
    assert sorted(p.name for p in (tmp_path / "trees").iterdir()) == ["seed4.json", "seed5.json"]
    saved = json.loads((tmp_path / "trees" / "seed4.json").read_text())
    from mars2.search.serialize import tree_from_dict

    assert [len(tree_from_dict(t)) for t in saved["team"]] == [3, 3, 3]


# --- extra held-out splits (eval.extra_splits, issue 17.2) ------------------------------------------------

IID = [fake_problem("q0"), fake_problem("q1"), fake_problem("q2")]


def test_extra_split_pass1_hand_computed_and_off_the_record():
    """Fresh Pass@1 on an extra split, per agent and team, with its own problem ids; the backend's sampling
    stream is put back, so every other number equals the evaluation without the extra split."""
    texts = [P, F, H, P, F, P, H, F, P, P, F, H]

    def go(extra):
        backend = FakeBackend(texts)  # answers by request index: any extra request would shift everything
        r = run_evaluation(backend, FakeScorer(), AGENTS, PROBLEMS, SearchConfig(mode="iid"), 4, tts_budgets=[2, 4],
                           extra_splits=extra)
        return r, backend

    plain, b0 = go(None)
    extra, b1 = go({"test_iid": IID})
    assert b1.state_dict() == b0.state_dict()  # the stream after the evaluation is the same
    for k, v in plain.values.items():
        assert extra.values[k] == v, k
    assert [len(t) for t in extra.trees["team"]] == [4, 4]
    assert extra.problem_ids == {"eval": ["p0", "p1"], "eval/test_iid": ["q0", "q1", "q2"]}
    assert plain.problem_ids == {"eval": ["p0", "p1"]}
    # the extra call starts where the main fresh call ended: request 4 (a: p0..., then b: ...). Requests in
    # order: a q0, a q1, a q2, b q0, b q1, b q2 → texts[4:10] = F, P, H, F, P, P → a (0, 1, 0), b (0, 1, 1)
    v = extra.values
    assert v["eval/test_iid/agent/a/pass1"] == [0.0, 1.0, 0.0] and v["eval/test_iid/agent/b/pass1"] == [0.0, 1.0, 1.0]
    assert v["eval/test_iid/pass1"] == [0.0, 1.0, 0.5]
    m = extra.metrics
    assert m["eval/test_iid/pass1"] == pytest.approx(0.5) and m["eval/test_iid/agent/b/pass1"] == pytest.approx(2 / 3)
    assert 0.0 <= m["eval/test_iid/pass1_lo"] <= 0.5 <= m["eval/test_iid/pass1_hi"] <= 1.0
    with pytest.raises(ValueError, match="no problems"):
        go({"test_iid": []})
    from mars2.config import ConfigError

    with pytest.raises(ConfigError, match="without '/'"):
        go({"a/b": IID})


def test_select_extra_splits_default_skips_explicit_requires():
    from mars2.config import ConfigError
    from mars2.evaluation import extra_splits_given, select_extra_splits
    from mars2.tasks.loaders import EmptySplitError, TaskDataError

    splits = {"test": PROBLEMS, "test_iid": IID, "empty": []}
    said: list[str] = []
    got = select_extra_splits("minicode", splits, ["test_iid"], main="test", explicit=False, n_problems=2, log=said.append)
    assert {k: [p.id for p in v] for k, v in got.items()} == {"test_iid": ["q0", "q1"]} and said == []
    # left at the default on a task without the split (a real benchmark): skipped, one line
    got = select_extra_splits("livecodebench", {"test": PROBLEMS}, ["test_iid"], main="test", explicit=False,
                              log=said.append)
    assert got == {} and len(said) == 1 and "livecodebench has no split 'test_iid'" in said[0]
    # named on the command line: required (TaskDataError → one line, exit 2)
    with pytest.raises(TaskDataError, match="no split 'test_iid'"):
        select_extra_splits("livecodebench", {"test": PROBLEMS}, ["test_iid"], main="test", explicit=True)
    with pytest.raises(EmptySplitError):
        select_extra_splits("minicode", splits, ["empty"], main="test", explicit=True)
    said.clear()
    assert select_extra_splits("minicode", splits, ["test", "test_iid", "test_iid"], main="test", explicit=True,
                               log=said.append).keys() == {"test_iid"} and len(said) == 2
    assert select_extra_splits("minicode", splits, None, main="test", explicit=False) == {}
    with pytest.raises(ConfigError, match="list of split names"):
        select_extra_splits("minicode", splits, "test_iid", main="test", explicit=True)
    assert extra_splits_given(["eval.extra_splits=[test_iid]"]) and extra_splits_given(["+eval.extra_splits=[]"])
    assert not extra_splits_given(["eval.split=test", "eval.extra_splits_x=1"])


def test_cli_missing_extra_split_is_one_line(tmp_path):
    """Named on the command line, a split the task lacks stops evaluate.py before any model is built."""
    p = _run_cli(["eval.extra_splits=[nope]", "eval.split=test"], tmp_path)
    assert p.returncode == 2, p.stderr[-2000:]
    assert "Traceback" not in p.stderr
    line = [ln for ln in p.stderr.splitlines() if ln.startswith("mars2:")]
    assert len(line) == 1 and "no split 'nope'" in line[0]


def test_per_problem_file_records_replaces_and_pairs(tmp_path):
    from mars2.tracking import per_problem

    def res(vals, iid):
        return EvalResult(metrics={}, values={"eval/pass1": vals, "eval/div/semantic": [math.nan, 0.5],
                                              "eval/test_iid/pass1": iid}, trees={},
                          problem_ids={"eval": ["p0", "p1"], "eval/test_iid": ["q0", "q1", "q2"]})

    per_problem.record(tmp_path, res([0.0, 1.0], [1.0, 0.0, 0.0]), 0, 7)
    per_problem.record(tmp_path, res([1.0, 1.0], [1.0, 1.0, 0.0]), 2, 7)
    per_problem.record(tmp_path, res([1.0, 0.0], [0.0, 1.0, 1.0]), 2, 7)  # round 2 redone after a resume: replaced
    data = json.loads((tmp_path / per_problem.FILE).read_text())
    assert data["format"] == per_problem.FORMAT and [(e["round"], e["seed"]) for e in data["evals"]] == [(0, 7), (2, 7)]
    assert data["evals"][0]["values"]["eval/div/semantic"] == [None, 0.5]  # NaN → null (strict JSON)
    entries = per_problem.read(tmp_path)["evals"]
    assert per_problem.outcomes(entries, "eval/pass1") == {7: {"p0": 1.0, "p1": 0.0}}
    assert per_problem.outcomes(entries, "eval/pass1", "initial") == {7: {"p0": 0.0, "p1": 1.0}}
    assert per_problem.outcomes(entries, "eval/test_iid/pass1") == {7: {"q0": 0.0, "q1": 1.0, "q2": 1.0}}
    assert per_problem.outcomes(entries, "eval/div/semantic") == {7: {"p1": 0.5}}
    # final − initial on test_iid: (−1, +1, +1) → mean 1/3 (one seed; the bootstrap over 3 problems)
    gain = per_problem.paired(entries, entries, "eval/test_iid/pass1", "final", "initial", n_boot=2000)
    assert gain["mean"] == pytest.approx(1 / 3) and gain["n_seeds"] == 1 and gain["n_problems"] == 3
    assert -1.0 <= gain["ci_low"] < 1 / 3 < gain["ci_high"] <= 1.0 and gain["seeds"] == [7]
    assert per_problem.paired(entries, [{**e, "seed": 8} for e in entries], "eval/pass1") == {
        "reason": "no common seeds (seeds [7] vs [8])"}
    assert per_problem.read(tmp_path / "none") is None


@pytest.mark.slow
def test_train_debug_fast_reports_test_iid_and_per_problem_outcomes(tmp_path):
    """A real short training run (debug=fast, warm start cached): every evaluation carries eval/test_iid/pass1
    (team and per agent, with its interval) in [0, 1], and eval_per_problem.json holds one entry per evaluation
    with the problem ids of both splits."""
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.setdefault("MARS2_CACHE_DIR", str(ROOT / ".cache" / "mars2"))
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, str(ROOT / "train.py"), "debug=fast", f"hydra.run.dir={out}"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=1200)
    assert p.returncode == 0, p.stderr[-4000:]
    res = json.loads((out / "results.json").read_text())
    assert res["status"] == "completed" and len(res["evals"]) == 3  # rounds 0, 1, 2
    for ev in res["evals"]:
        keys = [k for k in ev if k.startswith("eval/test_iid/")]
        assert {"eval/test_iid/pass1", "eval/test_iid/pass1_lo", "eval/test_iid/pass1_hi"} <= set(keys)
        assert sum(k.endswith("/pass1") and "/agent/" in k for k in keys) == 2  # one per agent of the pair
        for k in keys:
            assert 0.0 <= ev[k] <= 1.0, (k, ev[k])
        assert ev["eval/test_iid/pass1_lo"] <= ev["eval/test_iid/pass1"] <= ev["eval/test_iid/pass1_hi"]
    data = json.loads((out / "eval_per_problem.json").read_text())
    assert [(e["round"], e["seed"]) for e in data["evals"]] == [(0, 0), (1, 0), (2, 0)]
    last = data["evals"][-1]
    assert len(last["problems"]["eval"]) == 4 and all(i.startswith("minicode/test/") for i in last["problems"]["eval"])
    assert len(last["problems"]["eval/test_iid"]) == 4
    assert all(i.startswith("minicode/test_iid/") for i in last["problems"]["eval/test_iid"])
    assert len(last["values"]["eval/test_iid/pass1"]) == 4 and len(last["values"]["eval/pass1_mcts"]) == 4
    assert sum(last["values"]["eval/test_iid/pass1"]) / 4 == pytest.approx(res["final"]["eval/test_iid/pass1"])
