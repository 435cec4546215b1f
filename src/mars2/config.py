"""Start-up validation of the resolved run config (verl-style: one clear message naming the key).

Plain Python over a nested dict (``OmegaConf.to_container(cfg, resolve=True)``) so the algorithm core
never needs Hydra. Everything a later stage relies on is checked here, before any model is built."""
from __future__ import annotations

from typing import Any, Mapping

PARADIGMS = ("single", "homogeneous", "heterogeneous")
SEARCH_MODES = ("ab_mcts", "iid", "sequential", "t_plus")
POSTERIORS = ("gaussian", "beta")
LOSSES = ("gspo", "grpo")
SHAPINGS = ("tree", "none")
BACKENDS = ("hf", "vllm", "openai")
EVAL_MODES = ("system", "agent")
RM_MODES = ("tiebreak", "rerank")  # method.md §7 (same names as mars2.search.select)
RM_MODELS = ("hashed_ngram", "value_head")

from mars2.rl.reward import REWARD_TESTS  # noqa: E402  (one place for each enum; the strict schema replaces these)


class ConfigError(ValueError):
    """A bad configuration value; the message names the key."""


def _get(cfg: Mapping[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"missing config key `{key}`")
        node = node[part]
    return node


def _choice(cfg: Mapping[str, Any], key: str, options: tuple[str, ...]) -> None:
    value = _get(cfg, key)
    if value not in options:
        raise ConfigError(f"`{key}` must be one of {list(options)}, got {value!r}")


def _int(cfg: Mapping[str, Any], key: str, minimum: int = 1) -> None:
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"`{key}` must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ConfigError(f"`{key}` must be >= {minimum}, got {value}")


def _float(cfg: Mapping[str, Any], key: str, lo: float | None = None, hi: float | None = None) -> None:
    value = _get(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"`{key}` must be a number, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise ConfigError(f"`{key}` must be in [{lo}, {hi}], got {value}")


def check_t_plus_feedback(search: Mapping[str, Any]) -> None:
    """``mode: t_plus`` always uses T+ feedback and the GEN discount (``SearchConfig`` forces them), so another
    explicit ``feedback`` would be silently ignored: refuse it (train and evaluation searches alike)."""
    if search.get("mode") == "t_plus" and search.get("feedback", "t_plus") != "t_plus":
        raise ConfigError(
            f"`search.feedback` must be t_plus with search=t_plus, got {search.get('feedback')!r} (T+ always uses "
            f"its structured feedback and GEN discount); for one T+ component alone use search=ab_mcts with "
            f"search.feedback=t_plus, or with search.gen_discount={{gamma0:0.98,delta:0.02,gamma_min:0.5}}")


def team_size(roster: Any, size: Any = None) -> int:
    """Default size of a heterogeneous team (``paradigm.n_agents`` of conf/paradigm/heterogeneous.yaml):
    the model's ``team_size`` when it sets one (tiny: 2 of its 3 policies), else its whole roster (14b: 3)."""
    if size is not None:
        return int(size)
    return len(list(roster))


def register_resolvers() -> None:
    """OmegaConf resolvers the config tree uses (``${mars2.team_size:...}``). Called by `mars2.cli` and by
    the ``hydra_plugins.mars2_resolvers`` module, which Hydra imports before it composes any config."""
    from omegaconf import OmegaConf

    OmegaConf.register_new_resolver("mars2.team_size", team_size, replace=True)


def validate_config(cfg: Mapping[str, Any]) -> None:
    """Raise ConfigError for the first problem found. ``cfg`` is the resolved train config as a dict."""
    _choice(cfg, "paradigm.name", PARADIGMS)
    _int(cfg, "paradigm.n_agents")
    roster = _get(cfg, "model.roster")
    policies = _get(cfg, "model.policies")
    if not roster:
        raise ConfigError("`model.roster` is empty")
    for pid in roster:
        if pid not in policies:
            raise ConfigError(f"`model.roster` names {pid!r}, which is not under `model.policies`")
    n_agents = cfg["paradigm"]["n_agents"]
    if cfg["paradigm"]["name"] == "single" and n_agents != 1:
        raise ConfigError(f"`paradigm.n_agents` must be 1 for paradigm=single, got {n_agents}")
    if cfg["paradigm"]["name"] == "heterogeneous" and n_agents > len(roster):
        raise ConfigError(
            f"`paradigm.n_agents`={n_agents} does not fit the roster of model={cfg['model']['name']} "
            f"({len(roster)} policies: {list(roster)}); use fewer agents or a larger roster"
        )
    if not _get(cfg, "roles"):
        raise ConfigError("`roles` is empty")
    if "train_split" in cfg:
        _choice(cfg, "train_split", ("warmup", "train", "test"))
    _choice(cfg, "search.mode", SEARCH_MODES)
    _choice(cfg, "search.posterior", POSTERIORS)
    _choice(cfg, "search.score", ("pass_all", "fraction"))
    _choice(cfg, "search.feedback", ("vanilla", "t_plus"))
    check_t_plus_feedback(_get(cfg, "search"))
    _int(cfg, "search.budget")
    if "parallel" in _get(cfg, "search"):  # before warm start, not when the SearchConfig is built after it
        from mars2.search.factory import PARALLEL_RULES

        _int(cfg, "search.parallel")
        _choice(cfg, "search.parallel_rule", tuple(PARALLEL_RULES))
        if _get(cfg, "search.mode") == "sequential" and _get(cfg, "search.parallel") != 1:
            raise ConfigError("`search.parallel` must be 1 for search=sequential (a refinement chain has one "
                              "pending node at a time)")
    _choice(cfg, "rl.loss", LOSSES)
    _choice(cfg, "rl.shaping", SHAPINGS)
    _choice(cfg, "rl.reward_tests", REWARD_TESTS)
    _float(cfg, "rl.eps_low", 0.0, 1.0)
    _float(cfg, "rl.eps_high", 0.0, 10.0)
    _float(cfg, "rl.kl_coef", 0.0)
    _float(cfg, "rl.lam", 0.0, 1.0)
    _float(cfg, "rl.gamma", 0.0)
    _int(cfg, "rl.rollout_batch_size")
    _int(cfg, "rl.train_batch_size")
    _choice(cfg, "rollout.backend", BACKENDS)
    _int(cfg, "rollout.max_new_tokens")
    rl = _get(cfg, "rl")
    if rl.get("overlong", True) and isinstance(rl.get("overlong_buffer"), int):
        buf, max_new = rl["overlong_buffer"], cfg["rollout"]["max_new_tokens"]
        if buf > max_new:
            raise ConfigError(
                f"`rl.overlong_buffer`={buf} exceeds `rollout.max_new_tokens`={max_new} (the DAPO overlong buffer "
                f"is the last part of the generation budget): lower rl.overlong_buffer (model.generation."
                f"overlong_buffer) or raise model.generation.max_new_tokens, or set rl.overlong=false")
    _float(cfg, "rollout.temperature", 0.0)
    _float(cfg, "rollout.top_p", 0.0, 1.0)
    _int(cfg, "rounds", minimum=0)
    _int(cfg, "eval.every")
    _int(cfg, "eval.budget")
    _int(cfg, "eval.n_problems", minimum=0)
    _choice(cfg, "eval.mode", EVAL_MODES)
    for b in _get(cfg, "eval.tts_budgets"):
        if not isinstance(b, int) or b < 1:
            raise ConfigError(f"`eval.tts_budgets` entries must be integers >= 1, got {b!r}")
    _float(cfg, "sandbox.timeout_s", 0.01)
    _int(cfg, "sandbox.workers")
    _float(cfg, "model.optim.lr", 0.0)
    if isinstance(cfg.get("rm"), Mapping):  # the reward-model block (experiment=reward_model)
        _choice(cfg, "rm.mode", RM_MODES)
        _choice(cfg, "rm.model", RM_MODELS)
        _int(cfg, "rm.epochs")
        _int(cfg, "rm.batch_size")
        _float(cfg, "rm.lr", 0.0)
