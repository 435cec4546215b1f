"""The one config schema (issue 20.2, mars2.schema): every key of every group is checked at start-up; an unknown
key, a wrong type or a value outside an enum is one line naming the key; each enum is defined once, in the
module that uses it; the builders read the checked config (no YAML default repeated in Python); ``paths`` is
one file; the evaluation search has one spelling."""
from __future__ import annotations

import ast
import os
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from test_configs import CONF, ROOT, compose_cfg

from mars2.config import ConfigError, validate_config


def error_of(overrides: list[str], name: str = "train") -> str:
    c = compose_cfg(overrides, name=name)
    with pytest.raises(ConfigError) as e:
        validate_config(c, name)
    return str(e.value)


# -- the messages, as printed ---------------------------------------------------------------------------------

def test_unknown_key_names_it_and_the_closest_known_key():
    assert error_of(["+search.budgett=4"]) == "unknown key `search.budgett` (did you mean `search.budget`?)"
    assert error_of(["+search.budgett=4"], "evaluate") == "unknown key `search.budgett` (did you mean `search.budget`?)"
    assert error_of(["+eval.search.budgett=4"]) == \
        "unknown key `eval.search.budgett` (did you mean `eval.search.budget`?)"
    # nothing close: the group's known keys are listed
    assert error_of(["+checkpoint.zzz=1"]) == "unknown key `checkpoint.zzz` (known keys of `checkpoint`: every, keep, last_every)"


def test_bad_enum_and_wrong_type_name_the_key_and_the_allowed_values():
    assert error_of(["search.mode=abmcts"]) == \
        "`search.mode` must be one of ['ab_mcts', 'iid', 'sequential', 't_plus'], got 'abmcts'"
    assert error_of(["eval.mode=team"]) == "`eval.mode` must be one of ['system', 'agent'], got 'team'"
    assert error_of(["search.budget=four"]) == "`search.budget` must be an integer, got 'four' (str)"
    assert error_of(["rollout.temperature=hot"]) == "`rollout.temperature` must be a number, got 'hot' (str)"
    assert error_of(["rl.tis=yes"]) == "`rl.tis` must be true/false or 'auto', got 'yes' (str)"
    assert error_of(["eval.search.budget=0"]) == "`eval.search.budget` must be an integer >= 1, got 0"
    assert error_of(["rl.eps_low=2"]) == "`rl.eps_low` must be in [0.0, 1.0], got 2"


@pytest.mark.parametrize("key", [
    "foo", "paths.data", "paradigm.agents", "search.budgett", "eval.search.feedbak", "eval.every_n", "rl.klcoef",
    "rollout.placement",  # a vLLM key on rollout=hf
    "sandbox.timeout", "checkpoint.evry", "model.optim.lrr", "model.generation.max_tokens",
    "model.policies.qwen3_a.hidden", "model.policies.qwen3_a.warm_start.stepz", "model.warm_start_defaults.harvest",
    "task.n_trian", "model.batch.rollouts",
])
def test_an_unknown_key_in_any_group_stops_validation(key):
    assert error_of([f"+{key}=1"]).startswith(f"unknown key `{key}`")


def test_evaluate_only_keys_are_unknown_to_train_and_vice_versa():
    assert error_of(["+eval.seeds=[0,1]"]).startswith("unknown key `eval.seeds`")
    assert error_of(["+train_split=test"], "evaluate").startswith("unknown key `train_split`")


def test_missing_key_of_a_group_is_an_error_naming_it():
    c = compose_cfg([])
    del c["rollout"]["split_cost_tokens"], c["eval"]["budget"]
    with pytest.raises(ConfigError, match=r"^missing config key `eval\.budget`$"):
        validate_config(c)


# -- the schema follows the dataclasses and loaders that consume the values -------------------------------------

def test_task_keys_are_the_loaders_parameters():
    """A parameter of the task's loader is a valid key without any schema edit (generate_minicode's n_public is
    not in conf/task/minicode.yaml); a misspelt one is refused."""
    validate_config(compose_cfg(["+task.n_public=[2,3]"]))
    validate_config(compose_cfg(["task=livecodebench", "+task.platforms=[leetcode]"]))
    assert error_of(["task=livecodebench", "+task.n_train=3"]).startswith("unknown key `task.n_train`")


def test_warm_start_keys_are_warm_start_config_fields():
    validate_config(compose_cfg(["+model.warm_start_defaults.harvest_n=8", "+model.policies.llama_a.warm_start.micro_batch_size=4"]))
    assert error_of(["+model.warm_start_defaults.harvst_n=8"]) == \
        "unknown key `model.warm_start_defaults.harvst_n` (did you mean `model.warm_start_defaults.harvest_n`?)"
    assert error_of(["model.policies.qwen3_a.warm_start.steps=many"]) == \
        "`model.policies.qwen3_a.warm_start.steps` must be an integer, got 'many' (str)"


def test_open_groups_take_any_key():
    """trainer (Lightning's Trainer arguments) and logger (_target_ configs) are checked where they are used."""
    validate_config(compose_cfg(["+trainer.max_time=00:01:00:00", "+trainer.gradient_clip_val=0.5"]))
    validate_config(compose_cfg(["logger=all"]))


def test_the_algorithm_dataclasses_are_what_the_builders_return():
    from mars2.cli.build import loss_config, sample_config, search_config
    from mars2.rl.objective import LossConfig
    from mars2.rl.samples import SampleConfig
    from mars2.sandbox import SandboxConfig
    from mars2.search.factory import SearchConfig

    c = compose_cfg([])
    run = validate_config(c)
    assert isinstance(run.search, SearchConfig) and isinstance(run.eval.search, SearchConfig)
    assert isinstance(run.sandbox, SandboxConfig) and run.sandbox.max_timeouts == 1
    assert search_config(c["search"]) == run.search
    # the values train.py built with pick() before: rl + tis (auto: hf → off) + the rollout's temperature/budget
    assert loss_config(c) == LossConfig(loss="gspo", eps_low=0.2, eps_high=0.2, kl_coef=0.05, tis=False, tis_cap=2.0,
                                        tis_veto=1e-4, temperature=1.0)
    assert loss_config({**c, "rollout": {**c["rollout"], "backend": "vllm"}}).tis is True
    assert sample_config(c) == SampleConfig(shaping="tree", lam=0.5, gamma=0.5, max_new_tokens=128, overlong_buffer=32,
                                            overlong_factor=1.0, overlong=True)


def test_build_backend_takes_the_config_values_and_names_a_missing_key(monkeypatch):
    import mars2.rollout.openai_backend as ob
    from mars2.cli.build import build_backend

    seen = {}
    monkeypatch.setattr(ob, "OpenAIBackend", lambda **kw: seen.update(kw))
    c = compose_cfg(["rollout=openai", "rollout.timeout_s=7", "rollout.concurrency=null"])
    build_backend(c, {}, {}, seed=1, for_training=False)
    assert (seen["timeout_s"], seen["concurrency"], seen["max_retries"]) == (7.0, c["rollout"]["max_batch_size"], 3)
    del c["rollout"]["backoff_max_s"]
    with pytest.raises(ConfigError, match=r"^missing config key `rollout\.backoff_max_s`$"):
        build_backend(c, {}, {}, seed=1, for_training=False)


# -- each enum in one place ---------------------------------------------------------------------------------

def test_the_schema_enums_are_the_consumers_tuples():
    from mars2 import schema
    from mars2.agents.team import PARADIGMS
    from mars2.evaluation import EVAL_MODES
    from mars2.rl.reward import REWARD_TESTS
    from mars2.rollout.vllm_backend import WEIGHT_SYNC_MODES
    from mars2.search.select import RM_MODES

    def literal(cls, name):
        return typing.get_args(typing.get_type_hints(cls)[name])

    assert literal(schema.Paradigm, "name") == PARADIGMS
    assert literal(schema.EvalConfig, "mode") == EVAL_MODES
    assert typing.get_args(typing.get_args(typing.get_type_hints(schema.RLConfig)["tis"])[1]) == ("auto",)
    assert literal(schema.RLConfig, "reward_tests") == REWARD_TESTS
    assert literal(schema.VLLMRollout, "weight_sync") == WEIGHT_SYNC_MODES
    assert literal(schema.EvaluateEvalConfig, "rm_mode") == RM_MODES == literal(schema.RMConfig, "mode")
    assert set(schema.BACKENDS) == {p.stem for p in (CONF / "rollout").glob("*.yaml")}  # one schema per file


ENUMS = [{"gspo", "grpo"}, {"tree", "none"}, {"all", "public", "hidden"}, {"system", "agent"}, {"tiebreak", "rerank"},
         {"single", "homogeneous", "heterogeneous"}, {"ab_mcts", "iid", "sequential", "t_plus"}, {"gaussian", "beta"},
         {"virtual_loss", "independent"}, {"lazy", "eager"}, {"auto", "exclusive", "none"}, {"pass_all", "fraction"},
         {"probability", "product"}, {"hashed_ngram", "value_head"}, {"mini", "real"}]


def test_each_enum_is_written_once_in_the_package():
    """No tuple/list/set literal of an enum's values appears twice in src/mars2 (the config validation imports
    the tuple from the module that uses it)."""
    seen: dict[frozenset, list[str]] = {}
    for f in (ROOT / "src" / "mars2").rglob("*.py"):
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, (ast.Tuple, ast.List, ast.Set)) and len(n.elts) >= 2 and \
                    all(isinstance(e, ast.Constant) and isinstance(e.value, str) for e in n.elts):
                seen.setdefault(frozenset(e.value for e in n.elts), []).append(f"{f.relative_to(ROOT)}:{n.lineno}")
    for enum in ENUMS:
        assert len(seen.get(frozenset(enum), [])) == 1, (sorted(enum), seen.get(frozenset(enum)))


# -- paths: one file ----------------------------------------------------------------------------------------

def test_paths_are_one_file_used_by_train_evaluate_and_stats(monkeypatch, tmp_path):
    for primary in ("train.yaml", "evaluate.yaml"):
        raw = OmegaConf.load(CONF / primary)
        assert "paths" not in raw and "paths: default" in (CONF / primary).read_text()
    keys = set(OmegaConf.load(CONF / "paths" / "default.yaml"))
    assert set(compose_cfg([])["paths"]) == set(compose_cfg([], name="evaluate")["paths"]) == keys
    from mars2.cli.stats import task_config

    monkeypatch.delenv("MARS2_ROOT", raising=False)
    monkeypatch.setenv("MARS2_DATA_DIR", str(tmp_path / "data"))
    assert task_config(["task=livecodebench"])["path"] == f"{tmp_path}/data/livecodebench/test6.jsonl"
    monkeypatch.delenv("MARS2_DATA_DIR")
    assert task_config(["task=deepcoder"])["path"] == f"{ROOT}/data/deepcoder/train.jsonl"  # root: this checkout


# -- start-up: the CLI stops before anything is built ---------------------------------------------------------

@pytest.mark.parametrize("program", ["train", "evaluate"])
def test_cli_stops_at_start_up_before_any_model(program, monkeypatch, tmp_path, capsys):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    import mars2.cli.build as build

    def never(*a, **k):
        raise AssertionError("built something before the config was checked")

    for name in ("load_problems", "build_policies", "build_sandbox", "build_backend", "make_team"):
        monkeypatch.setattr(build, name, never)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=program, overrides=["+search.budgett=4"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path)
    if program == "train":
        from mars2.cli.train import run_train as run
    else:
        from mars2.cli.evaluate import run_evaluate as run
    with pytest.raises(SystemExit) as e:
        run(cfg)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("unknown key `search.budgett` (did you mean `search.budget`?)") and len(err) == 1


@pytest.mark.parametrize("program,args,line", [  # ~10 s each: Hydra start-up + the schema's imports
    ("train.py", ["+search.budgett=4"], "mars2: config error: unknown key `search.budgett` (did you mean `search.budget`?)"),
    ("evaluate.py", ["+search.budgett=4"], "mars2: unknown key `search.budgett` (did you mean `search.budget`?)"),
    ("evaluate.py", ["search=t_plus"], "mars2: `search=t_plus` sets train.py's training search; the evaluation "
                                       "search is eval.search: use search@eval.search=t_plus"),
])
def test_the_commands_exit_2_with_one_line(program, args, line, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, str(ROOT / program), *args, f"hydra.run.dir={tmp_path}"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and p.stderr.strip().splitlines() == [line], p.stderr[-2000:]
    assert not (Path(tmp_path) / "policies").exists()


def test_hf_rollout_keys_reach_the_backend():
    """Every tunable of conf/rollout/hf.yaml arrives in `HFBackend` (a key read into the schema but dropped by
    the builder would silently run the default)."""
    from mars2.cli.build import build_backend

    c = compose_cfg(["rollout.split_cost_tokens=7", "rollout.prefix_cache_tokens=99",
                     "rollout.attention_split_positions=5", "rollout.max_batch_size=3"])
    be = build_backend(c, {}, {}, seed=4)
    assert (be.split_cost_tokens, be.prefix_cache_tokens, be.attention_split_positions, be.max_batch_size,
            be.seed) == (7, 99, 5, 3, 4)
