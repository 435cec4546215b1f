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
from mars2.cli.evaluate import normalise_overrides, resolve_config
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

def test_normalise_overrides_accepts_trains_spelling():
    assert normalise_overrides(["search@eval.search=t_plus", "eval.budget=16"]) == ["search=t_plus", "eval.budget=16"]
    assert normalise_overrides(["eval.search.posterior=beta", "search=iid"]) == ["search.posterior=beta", "search=iid"]
    assert normalise_overrides(["search=iid", "search@eval.search=iid"]) == ["search=iid"]  # same choice twice
    assert normalise_overrides(["-m", "search@eval.search=iid,t_plus"]) == ["-m", "search=iid,t_plus"]
    with pytest.raises(SystemExit) as e:
        normalise_overrides(["search=iid", "search@eval.search=t_plus"])
    assert e.value.code == 2


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
        cfg = compose(config_name="evaluate", overrides=normalise_overrides(overrides))
    with open_dict(cfg):
        cfg.paths.output_dir = str(out_dir)
    return OmegaConf.to_container(cfg, resolve=True)


def test_evaluate_config_both_search_spellings(tmp_path):
    for spelling in (["search=t_plus"], ["search@eval.search=t_plus"]):
        c = _compose_evaluate(spelling + ["eval.search.posterior=beta"], tmp_path)
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
