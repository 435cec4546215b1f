"""Every config group option composes, resolves and passes start-up validation; bad values get one clear
message naming the key."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict

from mars2.config import ConfigError, validate_config

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_cfg(overrides: list[str], name: str = "train") -> dict:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=name, overrides=overrides, return_hydra_config=False)
    with open_dict(cfg):
        cfg.paths.output_dir = "/tmp/mars2-test-out"
    return OmegaConf.to_container(cfg, resolve=True)


GROUPS = ["paradigm", "model", "search", "task", "rl", "rollout", "sandbox", "trainer", "logger", "debug"]


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_group_option_composes_and_validates(group, option):
    overrides = [f"{group}={option}"]
    if group == "model" and option != "tiny":
        # real rosters: the default heterogeneous team of 2 fits every roster
        pass
    c = compose_cfg(overrides)
    validate_config(c)


@pytest.mark.parametrize("exp", sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml")))
def test_every_experiment_composes(exp):
    validate_config(compose_cfg([f"experiment={exp}"]))


@pytest.mark.parametrize("sweep", sorted(p.stem for p in (ROOT / "sweeps").glob("*.yaml")))
def test_every_sweep_composes(sweep):
    validate_config(compose_cfg([f"+sweep={sweep}"]))


def test_evaluate_config_composes():
    c = compose_cfg(["search@eval.search=t_plus", "eval.search.posterior=beta"], name="evaluate")
    assert (c["eval"]["search"]["mode"], c["eval"]["search"]["posterior"]) == ("t_plus", "beta")
    assert c["eval"]["n_problems"] == 0 and c["name"] == "eval-heterogeneous-tiny-t_plus"
    validate_config(c, "evaluate")


@pytest.mark.parametrize("exp", sorted(p.stem for p in (ROOT / "experiments").glob("*.yaml")))
def test_every_experiment_composes_for_evaluate(exp):
    """The experiment files are shared: each composes and validates with evaluate.yaml too (experiment=t_plus:
    its evaluation search is T+ in both programs)."""
    c = compose_cfg([f"experiment={exp}"] + ([] if exp.startswith("real_") else ["debug=fast"]), name="evaluate")
    validate_config(c, "evaluate")
    if exp in ("t_plus", "reward_model"):
        assert c["eval"]["search"]["mode"] == "t_plus"


def test_defaults_are_the_issue_defaults():
    c = compose_cfg([])
    assert c["paradigm"]["name"] == "heterogeneous" and c["paradigm"]["n_agents"] == 2
    assert c["model"]["name"] == "tiny" and c["search"]["mode"] == "ab_mcts"
    assert c["task"]["name"] == "minicode" and c["rl"]["loss"] == "gspo"
    assert c["rollout"]["backend"] == "hf" and c["trainer"]["accelerator"] == "cpu"
    assert list(c["logger"]) == ["csv"]
    # evaluation always uses AB-MCTS-A unless asked otherwise, whatever the training search
    assert compose_cfg(["search=iid"])["eval"]["search"]["mode"] == "ab_mcts"


@pytest.mark.parametrize("size,first", [("8b", "Qwen/Qwen3-8B"), ("14b", "Qwen/Qwen3-14B"), ("32b", "Qwen/Qwen3-32B")])
def test_real_rosters_switch_engine_and_precision(size, first):
    c = compose_cfg([f"model={size}"])
    assert c["rollout"]["backend"] == "vllm"
    assert c["trainer"]["strategy"]["_target_"].endswith("FSDPStrategy")
    assert c["trainer"]["precision"].startswith("bf16")
    assert c["search"]["budget"] == 8
    assert c["model"]["policies"][c["model"]["roster"][0]]["hf_id"] == first
    assert c["rl"]["overlong_buffer"] == 2048 and c["rollout"]["max_new_tokens"] == 32768


@pytest.mark.parametrize(
    "overrides,key",
    [
        (["paradigm.n_agents=4"], "paradigm.n_agents"),  # tiny roster has 3 policies
        (["paradigm=single", "paradigm.n_agents=2"], "paradigm.n_agents"),
        (["search.budget=0"], "search.budget"),
        (["search.posterior=laplace"], "search.posterior"),
        (["rl.loss=ppo"], "rl.loss"),
        (["rl.train_batch_size=two"], "rl.train_batch_size"),
        (["eval.tts_budgets=[0,2]"], "eval.tts_budgets"),
        (["rollout.top_p=1.5"], "rollout.top_p"),
        (["search=t_plus", "search.feedback=vanilla"], "search.feedback"),  # would be silently ignored
        # the DAPO overlong buffer must fit in the generation budget (issue 14.7: was a traceback after loading)
        (["model.generation.max_new_tokens=16"], "rl.overlong_buffer"),
        (["model=14b", "model.generation.overlong_buffer=40000"], "rl.overlong_buffer"),
    ],
)
def test_bad_values_name_the_key(overrides, key):
    c = compose_cfg(overrides)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(c)


def test_t_plus_components_one_at_a_time_are_ab_mcts_variants():
    """T+ = AB-MCTS-A + structured feedback + GEN discount; each component alone is an ab_mcts search, and
    a contradictory t_plus config is refused instead of silently running full T+."""
    from mars2.cli.build import search_config

    full = search_config(compose_cfg(["search=t_plus"])["search"])
    fb = search_config(compose_cfg(["search=ab_mcts", "search.feedback=t_plus"])["search"])
    disc = search_config(compose_cfg(["search=ab_mcts", "search.gen_discount={gamma0:0.98,delta:0.02,gamma_min:0.5}"])["search"])
    assert (full.feedback, full.discount() is not None) == ("t_plus", True)
    assert (fb.feedback, fb.discount() is None) == ("t_plus", True)
    assert (disc.feedback, disc.discount() is not None) == ("vanilla", True)
    with pytest.raises(ValueError, match="search=ab_mcts"):
        search_config({**full.to_dict(), "feedback": "vanilla"})


# -- experiment management (issue 9) -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "exp,paradigm,n_agents,search,eval_search,model",
    [
        ("grpo", "single", 1, "iid", "ab_mcts", "tiny"),
        ("rs2", "single", 1, "ab_mcts", "ab_mcts", "tiny"),
        ("homo", "homogeneous", 2, "ab_mcts", "ab_mcts", "tiny"),
        ("hetero", "heterogeneous", 2, "ab_mcts", "ab_mcts", "tiny"),
        ("hetero_3agents", "heterogeneous", 3, "ab_mcts", "ab_mcts", "tiny"),
        ("t_plus", "heterogeneous", 2, "ab_mcts", "t_plus", "tiny"),
        ("reward_model", "heterogeneous", 2, "ab_mcts", "t_plus", "tiny"),
        ("real_8b_grpo", "single", 1, "iid", "ab_mcts", "8b"),
        ("real_8b_rs2", "single", 1, "ab_mcts", "ab_mcts", "8b"),
        ("real_8b_hetero", "heterogeneous", 2, "ab_mcts", "ab_mcts", "8b"),
        ("real_14b_hetero3", "heterogeneous", 3, "ab_mcts", "ab_mcts", "14b"),
        ("real_32b_hetero", "heterogeneous", 2, "ab_mcts", "ab_mcts", "32b"),
    ],
)
def test_experiments_are_the_paper_rows(exp, paradigm, n_agents, search, eval_search, model):
    c = compose_cfg([f"experiment={exp}"])
    assert (c["paradigm"]["name"], c["paradigm"]["n_agents"], c["search"]["mode"]) == (paradigm, n_agents, search)
    assert (c["eval"]["search"]["mode"], c["model"]["name"], c["name"]) == (eval_search, model, exp)
    if eval_search == "t_plus":  # T+ at test time only: structured feedback in the evaluation search
        assert c["eval"]["search"]["feedback"] == "t_plus" and c["search"]["feedback"] == "vanilla"
    if exp == "reward_model":
        assert c["rm"]["train"] is True and c["rm"]["mode"] in ("tiebreak", "rerank")
    if model != "tiny":
        assert c["rollout"]["backend"] == "vllm" and c["task"]["name"] == "deepcoder"


def test_experiments_compose_with_other_overrides():
    """Experiments are composable: a row at another size / seed / with a debug preset."""
    c = compose_cfg(["experiment=hetero", "model=8b", "seed=2"])
    assert c["name"] == "hetero" and c["model"]["name"] == "8b" and c["seed"] == 2
    c = compose_cfg(["experiment=t_plus", "debug=fast"])
    assert c["eval"]["search"]["mode"] == "t_plus" and c["rounds"] == 2


@pytest.mark.parametrize(
    "option,targets",
    [
        ("csv", ["CSVLogger"]),
        ("wandb", ["CSVLogger", "Mars2WandbLogger"]),
        ("mlflow", ["CSVLogger", "Mars2MLFlowLogger"]),
        ("all", ["CSVLogger", "Mars2WandbLogger", "Mars2MLFlowLogger"]),
        ("many", ["CSVLogger", "Mars2WandbLogger", "Mars2MLFlowLogger"]),
    ],
)
def test_logger_options(option, targets):
    c = compose_cfg([f"logger={option}"])
    assert [spec["_target_"].rsplit(".", 1)[-1] for spec in c["logger"].values()] == targets
    if "mlflow" in c["logger"]:
        assert c["logger"]["mlflow"]["tracking_uri"].startswith("sqlite:///")
    if "wandb" in c["logger"]:
        assert c["logger"]["wandb"]["offline"] is None and c["logger"]["wandb"]["group"] is None
        assert c["logger"]["wandb"]["tags"] == ["heterogeneous", "tiny", "ab_mcts", "agents=2"]


def test_optuna_sweeper_config_composes():
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["+sweep=optuna_lr", "hydra/sweeper/pruner=nop"],
                      return_hydra_config=True)
    sw = cfg.hydra.sweeper
    assert sw.study_name == "optuna_lr" and sw.n_trials == 20 and sw.direction == "maximize"
    assert sw.storage.startswith("sqlite:///") and sw.storage.endswith("/optuna.db")
    assert sw.sampler._target_ == "optuna.samplers.TPESampler"
    assert sw.pruner._target_ == "optuna.pruners.NopPruner"
    assert sw.params["model.optim.lr"] == "tag(log, interval(1e-5, 3e-3))"


@pytest.mark.parametrize("override,key", [("rm.mode=vote", "rm.mode"), ("rm.model=bert", "rm.model"), ("rm.epochs=0", "rm.epochs")])
def test_reward_model_block_is_validated(override, key):
    c = compose_cfg(["experiment=reward_model", override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(c)


@pytest.mark.parametrize("model,n_agents", [("tiny", 2), ("8b", 2), ("14b", 3), ("32b", 2)])
def test_heterogeneous_team_uses_the_whole_real_roster(model, n_agents):
    """Issue 14.6: model=14b alone trained 2 of its 3 policies. A heterogeneous team is the model's whole
    roster unless the model sets `team_size` (tiny: 2 of 3) or paradigm.n_agents is given."""
    c = compose_cfg([f"model={model}"])
    assert c["paradigm"]["n_agents"] == n_agents
    if model != "tiny":
        assert n_agents == len(c["model"]["roster"])
    validate_config(c)
    assert compose_cfg([f"model={model}", "paradigm.n_agents=1"])["paradigm"]["n_agents"] == 1
    assert compose_cfg([f"model={model}", "paradigm=homogeneous"])["paradigm"]["n_agents"] == 2
    assert compose_cfg([f"model={model}"], name="evaluate")["paradigm"]["n_agents"] == n_agents


def test_cfg_job_resolve_shows_the_14b_team_of_3(tmp_path):
    """The user's dry run: `python train.py model=14b --cfg job --resolve` prints n_agents: 3."""
    import subprocess
    import sys

    p = subprocess.run([sys.executable, str(ROOT / "train.py"), "model=14b", "--cfg", "job", "--resolve"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    paradigm = OmegaConf.create(p.stdout)["paradigm"]
    assert paradigm["n_agents"] == 3 and paradigm["name"] == "heterogeneous"


def test_engine_placement_plan():
    """Issue 14.4: one consecutive slice of GPUs per policy, in team order; too few GPUs is one line."""
    from mars2.agents.placement import PlacementError, engine_placement, visible_device_ids

    assert engine_placement(["a", "b", "c"], {"a": 2, "b": 2, "c": 2}, 8) == {"a": [0, 1], "b": [2, 3], "c": [4, 5]}
    assert engine_placement(["x", "y"], {"x": 4, "y": 4}, 8) == {"x": [0, 1, 2, 3], "y": [4, 5, 6, 7]}
    assert engine_placement(["x"], {}, 1) == {"x": [0]}  # gpus missing: 1
    with pytest.raises(PlacementError, match=r"need 8 GPU\(s\) \(x: 4, y: 4.*6 visible"):
        engine_placement(["x", "y"], {"x": 4, "y": 4}, 6)
    # sharing when short: slices wrap around, an engine's devices stay consecutive
    assert engine_placement(["a", "b"], {}, 1, share=True) == {"a": [0], "b": [0]}
    assert engine_placement(["a", "b", "c"], {"a": 2, "b": 2, "c": 2}, 4, share=True) == \
        {"a": [0, 1], "b": [2, 3], "c": [0, 1]}
    assert engine_placement(["a", "b", "c"], {"a": 2, "b": 1, "c": 2}, 4, share=True) == \
        {"a": [0, 1], "b": [2], "c": [0, 1]}
    with pytest.raises(PlacementError):  # one engine wider than the machine: never
        engine_placement(["x"], {"x": 4}, 2, share=True)
    assert visible_device_ids([2, 3], "") == "2,3"
    assert visible_device_ids([1, 2], "4,5,6") == "5,6"
    assert visible_device_ids([0], "GPU-aa, GPU-bb") == "GPU-aa"
    with pytest.raises(PlacementError):
        visible_device_ids([3], "0,1")


def test_memory_plan_hand_computed():
    """Two 1e9-parameter policies, 1 GPU each, FSDP over 2 GPUs: training state 16 B/param × 2e9 / 2 GPUs
    = 14.90 GiB per GPU; engine weights 2 B/param = 1.86 GiB; KV 1000 tokens × 1 MiB = 0.98 GiB; +8 headroom."""
    from mars2.agents.placement import GIB, PolicyShape, memory_plan

    shape = PolicyShape(params=1e9, kv_bytes_per_token=1 << 20, gpus=1)
    plan = memory_plan({"a": shape, "b": shape}, gpu_gib=80, kv_tokens=1000, headroom_gib=8)
    g0 = plan["per_gpu"][0]
    assert g0["train_state"] == pytest.approx(16e9 / GIB)
    assert g0["engine_weights"] == pytest.approx(2e9 / GIB)
    assert g0["kv_cache"] == pytest.approx(1000 * 2**20 / GIB)
    assert g0["total"] == pytest.approx((16e9 + 2e9 + 1000 * 2**20) / GIB + 8)
    assert plan["placement"] == {"a": [0], "b": [1]} and plan["fits"]
    assert not memory_plan({"a": shape, "b": shape}, gpu_gib=20, kv_tokens=1000)["fits"]
    # activations of one 100-token training sequence: 2 layers × 100 × 8 hidden × 2 B + 100 × 50 vocab × 6 B
    wide = PolicyShape(params=1e9, kv_bytes_per_token=0, gpus=1, hidden=8, layers=2, vocab=50)
    act = memory_plan({"a": wide}, gpu_gib=80, train_tokens=100)["per_gpu"][0]["activations"]
    assert act == pytest.approx((2 * 100 * 8 * 2 + 100 * 50 * 6) / GIB)
