"""The run config schema: one strict dataclass per config group, validated once at start-up (verl style).

``parse_config(resolved_dict)`` (``mars2.config.validate_config``) is called by train.py and evaluate.py on
the resolved Hydra config before anything is loaded or built. Every key of every group is checked:

- an unknown key is a ``ConfigError`` naming it, with the closest known key (``unknown key `search.budgett`
  (did you mean `search.budget`?)``); a missing required key names the key;
- a value of the wrong type or outside its allowed values names the key, the allowed values and the value.

The algorithm dataclasses are reused, not copied: ``search`` and ``eval.search`` are
`mars2.search.factory.SearchConfig`; ``sandbox`` is `mars2.sandbox.SandboxConfig`; the flat ``rl`` group is
`mars2.rl.objective.LossConfig` + `mars2.rl.samples.SampleConfig` + the training-loop keys of `RLConfig`;
a policy entry is `mars2.agents.models.PolicySpec` + ``warm_start`` (`mars2.training.warm_start.
WarmStartConfig`) + ``gpus``; ``task`` is checked against its loader's signature. Their enums and ranges stay
where they are used (the dataclasses' own checks run here, at start-up); the groups that only the CLI reads
(paradigm, rollout, eval, model, checkpoint, paths, rm) are dataclasses below with no defaults of their own:
every value comes from conf/, and a key missing there is an error naming it.

Open on purpose: ``trainer`` (Lightning Trainer arguments, checked by ``mars2.resources.check_trainer`` and
by Lightning), ``logger`` (``_target_`` configs built by ``mars2.tracking.loggers``), ``resume``, and the
vLLM ``engine_kwargs`` / OpenAI ``extra_body`` pass-through mappings.

No Hydra or OmegaConf here: the input is a plain nested dict (``OmegaConf.to_container(cfg, resolve=True)``).
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping, Union

from mars2.agents.models import PolicySpec
from mars2.agents.team import PARADIGMS
from mars2.config import ConfigError
from mars2.evaluation import EVAL_MODES, DiversityConfig
from mars2.rl.objective import LossConfig
from mars2.rl.reward import REWARD_TESTS
from mars2.rl.samples import SampleConfig
from mars2.rollout.vllm_backend import WEIGHT_SYNC_MODES
from mars2.sandbox import SandboxConfig
from mars2.search.factory import SearchConfig
from mars2.search.select import RM_MODES
from mars2.training.warm_start import WarmStartConfig

MODEL_SCALES = ("mini", "real")  # mini: built + warm-started here (tokenizer, sizes); real: HF checkpoints
TRAIN_SPLITS = ("warmup", "train", "test", "test_iid")
PLACEMENTS = ("auto", "exclusive", "none")  # rollout.placement (mars2.cli.build.engine_devices)
RM_MODELS = ("hashed_ngram", "value_head")  # rm.model (mars2.reward_model)

# Numeric bounds checked at start-up, by key (inclusive; None: unbounded). List values: every entry.
BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "rounds": (0, None), "ckpt_every": (1, None), "paradigm.n_agents": (1, None),
    "rl.eps_low": (0.0, 1.0), "rl.eps_high": (0.0, 10.0), "rl.kl_coef": (0.0, None), "rl.lam": (0.0, 1.0),
    "rl.gamma": (0.0, None), "rl.rollout_batch_size": (1, None), "rl.train_batch_size": (1, None),
    "rl.epochs_per_batch": (1, None),
    "rollout.max_new_tokens": (1, None), "rollout.temperature": (0.0, None), "rollout.top_p": (0.0, 1.0),
    "rollout.max_batch_size": (1, None),
    "eval.every": (1, None), "eval.budget": (1, None), "eval.n_problems": (0, None), "eval.tts_budgets": (1, None),
    "eval.pass1_samples": (1, None),
    "sandbox.timeout_s": (0.01, None), "sandbox.workers": (1, None),
    "model.optim.lr": (0.0, None),
    "checkpoint.every": (1, None), "checkpoint.last_every": (1, None),
    "rm.epochs": (1, None), "rm.batch_size": (1, None), "rm.lr": (0.0, None), "rm.holdout_frac": (0.0, 1.0),
}


# ---------------------------------------------------------------------------------------------------------
# The groups only the CLI reads (no defaults: every value comes from conf/)
# ---------------------------------------------------------------------------------------------------------

@dataclass
class Paths:
    """conf/paths/default.yaml."""

    root_dir: str
    models_dir: str
    data_dir: str
    cache_dir: str
    output_dir: str | None  # Hydra's run dir (null outside a Hydra run)


@dataclass
class Role:
    """One agent role (conf/roles/default.yaml): a name and its system prompt."""

    name: str
    prompt: str


@dataclass
class Paradigm:
    """conf/paradigm/*.yaml (method.md §8); the team is built by `mars2.agents.team.build_team`."""

    name: Literal[PARADIGMS]
    n_agents: int
    shared_policy: bool
    roles: list[Role]


@dataclass
class RLConfig:
    """The training-loop keys of conf/rl/*.yaml; the rest of the group is `LossConfig` + `SampleConfig`
    (see `RL_PARTS`)."""

    tis: bool | Literal["auto"]  # auto: on when rollout != hf
    reward_tests: Literal[REWARD_TESTS]
    rollout_batch_size: int
    train_batch_size: int
    keep_remainder: bool
    epochs_per_batch: int


@dataclass
class RolloutCommon:
    max_new_tokens: int
    temperature: float
    top_p: float
    max_batch_size: int


@dataclass
class HFRollout(RolloutCommon):
    """conf/rollout/hf.yaml (`mars2.rollout.hf_backend.HFBackend`)."""

    backend: Literal["hf"]
    split_cost_tokens: int
    prefix_cache_tokens: int
    attention_split_positions: int


@dataclass
class VLLMRollout(RolloutCommon):
    """conf/rollout/vllm.yaml (`mars2.rollout.vllm_backend.VLLMBackend`)."""

    backend: Literal["vllm"]
    gpu_memory_utilization: float
    tensor_parallel_size: int | None
    enforce_eager: bool
    dtype: str | None
    max_model_len: int | None
    kv_cache_memory_bytes: int | None
    weight_sync: Literal[WEIGHT_SYNC_MODES]
    per_request_seed: bool | None
    engine_kwargs: dict[str, Any]
    placement: Literal[PLACEMENTS]


@dataclass
class OpenAIRollout(RolloutCommon):
    """conf/rollout/openai.yaml (`mars2.rollout.openai_backend.OpenAIBackend`)."""

    backend: Literal["openai"]
    base_url: str
    api_key_env: str | None
    model: str | None
    models: dict[str, str]
    concurrency: int | None  # null: max_batch_size
    timeout_s: float
    max_retries: int
    backoff_s: float
    backoff_max_s: float
    logprobs: bool
    token_ids: bool
    extra_body: dict[str, Any]


ROLLOUTS: dict[str, type] = {"hf": HFRollout, "vllm": VLLMRollout, "openai": OpenAIRollout}
BACKENDS = tuple(ROLLOUTS)


@dataclass
class EvalConfig:
    """conf/eval/default.yaml: the held-out evaluation of train.py (every N rounds) and evaluate.py."""

    search: SearchConfig
    every: int
    at_start: bool
    n_problems: int
    split: str
    mode: Literal[EVAL_MODES]
    budget: int
    pass1_samples: int
    tts_budgets: list[int]
    extra_splits: list[str] | None = None  # absent: none (names checked by mars2.evaluation.select_extra_splits)


@dataclass(kw_only=True)
class EvaluateEvalConfig(EvalConfig):
    """evaluate.py's ``eval`` (conf/evaluate.yaml adds these to conf/eval/default.yaml)."""

    seeds: list[int] | None  # null: the run's seed alone
    reward_model: str | None  # a saved R_theta (mars2.reward_model.save_reward_model); null: the public-test rule
    rm_mode: Literal[RM_MODES]
    diversity: DiversityConfig | bool | None


@dataclass
class Tokenizer:
    vocab_size: int


@dataclass
class Generation:
    """model.generation: the generation budget the rollout group interpolates."""

    max_new_tokens: int
    temperature: float
    top_p: float
    max_batch_size: int
    overlong_buffer: int
    max_prompt_tokens: int | None = None  # real rosters (memory plan)
    enable_thinking: bool = False  # real rosters: Qwen3's thinking block (MARTI: off)


@dataclass
class Batch:
    rollout: int
    train: int


@dataclass
class Optim:
    """model.optim (`mars2.training.module.MarsModule`)."""

    lr: float
    weight_decay: float
    betas: list[float]
    warmup_steps: int
    grad_clip: float
    master_weights: bool | None = None  # real rosters: fp32 masters for bf16 parameters


@dataclass
class Model:
    """conf/model/*.yaml. ``policies`` entries and ``warm_start_defaults`` are checked against the dataclasses
    that consume them (`POLICY_PARTS`, `WarmStartConfig`)."""

    name: str
    scale: Literal[MODEL_SCALES]
    tokenizer: Tokenizer | None
    roster: list[str]
    policies: dict[str, dict[str, Any]]
    warm_start_defaults: dict[str, Any]
    generation: Generation
    batch: Batch
    optim: Optim
    precision: str
    team_size: int | None = None  # default heterogeneous team size (tiny: 2 of 3); absent: the whole roster
    kl_coef: float | None = None  # the model's own rl.kl_coef default (conf/rl/gspo.yaml reads it)


@dataclass
class Checkpoint:
    """conf/checkpoint/default.yaml."""

    every: int
    last_every: int
    keep: int


@dataclass
class RMConfig:
    """The reward-model block of experiment=reward_model (method.md §6.3, §7); the rest of the block is
    `mars2.reward_model.trainer.RMTrainConfig`."""

    train: bool
    model: Literal[RM_MODELS]
    mode: Literal[RM_MODES]
    holdout_frac: float


@dataclass(kw_only=True)
class RunConfig:
    """The groups conf/train.yaml and conf/evaluate.yaml share (keyword-only, so each program's own fields can
    follow these without defaults)."""

    name: str
    seed: int
    paths: Paths
    roles: list[Role]
    paradigm: Paradigm
    search: SearchConfig
    task: dict[str, Any]
    rl: dict[str, Any]
    rollout: dict[str, Any]
    sandbox: SandboxConfig
    trainer: dict[str, Any]
    model: Model
    logger: dict[str, Any] | None = None  # absent (~logger): no tracker
    rm: dict[str, Any] | None = None  # experiment=reward_model


@dataclass(kw_only=True)
class TrainConfig(RunConfig):
    """conf/train.yaml."""

    train_split: Literal[TRAIN_SPLITS]
    rounds: int
    resume: Any  # null | auto | a run dir or .ckpt path (mars2.training.checkpointing.find_resume_checkpoint)
    overwrite: bool
    ckpt_every: int
    eval: EvalConfig
    checkpoint: Checkpoint


@dataclass(kw_only=True)
class EvaluateConfig(RunConfig):
    """conf/evaluate.yaml. ``search`` and ``rl`` are train.py's groups, composed here so that the files shared
    with train.py (experiments, models, debug=fast) compose; evaluate.py uses ``eval.search`` (and checks
    that the command line does not set ``search``: `mars2.cli.evaluate.refuse_training_search`)."""

    ckpt: str | None
    eval: EvaluateEvalConfig
    rounds: int | None = None  # train.py keys that debug=fast sets; not used by evaluate.py
    ckpt_every: int | None = None


# ---------------------------------------------------------------------------------------------------------
# Strict construction
# ---------------------------------------------------------------------------------------------------------

NoneType = type(None)


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def init_fields(cls: type, exclude: tuple[str, ...] = ()) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in exclude}


def unknown_key(where: str, key: str, known: list[str]) -> ConfigError:
    full = f"{where}.{key}" if where else key
    close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
    hint = f" (did you mean `{(where + '.') if where else ''}{close[0]}`?)" if close else \
        f" (known keys of `{where}`: {', '.join(sorted(known))})" if where else \
        f" (known top-level keys: {', '.join(sorted(known))})"
    return ConfigError(f"unknown key `{full}`{hint}")


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if tp is NoneType:
        return "null"
    if origin is Literal:
        args = typing.get_args(tp)
        return repr(args[0]) if len(args) == 1 else f"one of {list(args)}"
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if tp is bool:
        return "true/false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if origin in (list, tuple) or tp in (list, tuple):
        args = typing.get_args(tp)
        return f"a list of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "a list"
    if origin in (dict, Mapping) or tp is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def check_value(tp: Any, value: Any, key: str) -> Any:
    """``value`` checked against the annotation ``tp`` (nested dataclasses built strictly); returns the value
    to pass on (unchanged, except tuples for ``tuple[...]`` fields and dataclasses for nested ones)."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and NoneType in args:
            return None
        for a in args:
            if a is NoneType:
                continue
            try:
                return check_value(a, value, key)
            except ConfigError as e:
                if dataclasses.is_dataclass(a) and isinstance(value, Mapping):
                    raise e  # the mapping's own problem, not a wrong type
        raise _wrong(tp, value, key)
    if origin is Literal:
        if isinstance(value, bool) or value not in typing.get_args(tp):
            raise ConfigError(f"`{key}` must be {_describe(tp)}, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise _wrong(tp, value, key)
    elif tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _wrong(tp, value, key)
    elif tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _wrong(tp, value, key)
    elif tp is str:
        if not isinstance(value, str):
            raise _wrong(tp, value, key)
    elif origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _wrong(tp, value, key)
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        items = [check_value(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)] if args else list(value)
        return tuple(items) if origin is tuple else items
    elif origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise _wrong(tp, value, key)
        args = typing.get_args(tp)
        if args:
            return {k: check_value(args[1], v, f"{key}.{k}") for k, v in value.items()}
        return dict(value)
    elif dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    _check_bounds(key, value)
    return value


def _wrong(tp: Any, value: Any, key: str) -> ConfigError:
    return ConfigError(f"`{key}` must be {_describe(tp)}, got {value!r} ({type(value).__name__})")


def _check_bounds(key: str, value: Any) -> None:
    base = re.sub(r"\[\d+\]$", "", key)  # a list entry: the list's bounds
    bounds = BOUNDS.get(base)
    if bounds is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    lo, hi = bounds
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        what = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        entries = " entries" if base != key else ""
        raise ConfigError(f"`{base}`{entries} must be {what}, got {value}")


def check_keys(data: Any, where: str, known: Mapping[str, Any]) -> None:
    """``data`` is a mapping whose keys are all in ``known``."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"`{where}` must be a mapping, got {data!r}")
    for k in data:
        if k not in known:
            raise unknown_key(where, k, list(known))


def checked_kwargs(cls: type, data: Mapping[str, Any], where: str, exclude: tuple[str, ...] = (),
                   required: bool | None = None) -> dict[str, Any]:
    """The keys of ``data`` that are fields of ``cls``, type-checked (unknown keys are not looked at here).
    ``required``: a field without a default must be present (default: for the schema's own dataclasses,
    whose values all come from conf/; the algorithm dataclasses' defaults are theirs)."""
    fields = init_fields(cls, exclude)
    hints = _hints(cls)
    own = cls.__module__ == __name__ if required is None else required
    out: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name not in data:
            if own and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing config key `{key}`")
            continue
        out[name] = check_value(hints[name], data[name], key)
    return out


def construct(cls: type, kwargs: Mapping[str, Any], where: str) -> Any:
    """``cls(**kwargs)``; its own checks (``__post_init__``, ``validate()``) become a ConfigError whose
    message names the key (``SearchConfig.budget must be ...`` → ```eval.search.budget` must be ...``)."""
    try:
        obj = cls(**kwargs)
        if callable(getattr(obj, "validate", None)):
            obj.validate()
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        msg = re.sub(rf"\b{cls.__name__}\.(\w+)", lambda m: f"`{where}.{m.group(1)}`", str(e))
        msg = re.sub(rf"^{re.escape(where)}\.(\w+)", lambda m: f"`{where}.{m.group(1)}`", msg) if where else msg
        if msg == str(e) and where and not msg.startswith(where.split(".")[0]):
            msg = f"`{where}`: {msg}"
        raise ConfigError(msg) from None
    return obj


def build(cls: type, data: Any, where: str, **derived: Any) -> Any:
    """An instance of dataclass ``cls`` from the mapping ``data``: every key a field of ``cls`` (unknown key:
    ConfigError naming it), values type-checked; ``derived``: fields set by the caller, not the config."""
    fields = init_fields(cls, tuple(derived))
    check_keys(data, where, fields)
    return construct(cls, {**checked_kwargs(cls, data, where, tuple(derived)), **derived}, where)


def build_parts(data: Any, where: str, parts: Mapping[type, tuple[str, ...]]) -> dict[type, dict[str, Any]]:
    """A flat config group read by several dataclasses (``rl``: LossConfig + SampleConfig + RLConfig):
    every key must be a field of one of ``parts`` (each with the fields it does not take from the group);
    returns the checked keyword arguments of each part."""
    known: dict[str, Any] = {}
    for cls, exclude in parts.items():
        known.update(init_fields(cls, exclude))
    check_keys(data, where, known)
    return {cls: checked_kwargs(cls, data, where, exclude) for cls, exclude in parts.items()}


# ---------------------------------------------------------------------------------------------------------
# Groups read by several dataclasses, and the builders the CLI uses
# ---------------------------------------------------------------------------------------------------------

RL_PARTS: dict[type, tuple[str, ...]] = {
    RLConfig: (),
    LossConfig: ("tis", "temperature"),  # tis: RLConfig.tis resolved against the backend; temperature: rollout's
    SampleConfig: ("max_new_tokens",),  # the rollout's generation budget
}
POLICY_EXTRA = {"warm_start": dict[str, Any], "gpus": int | None}  # beside PolicySpec's fields (id: the key)


def search_config(search: Any, where: str = "search") -> SearchConfig:
    check_t_plus_feedback(search, where)
    return build(SearchConfig, search, where)


def check_t_plus_feedback(search: Mapping[str, Any], where: str = "search") -> None:
    """``mode: t_plus`` always uses T+ feedback and the GEN discount (``SearchConfig`` forces them), so another
    explicit ``feedback`` would be silently ignored: refuse it (train and evaluation searches alike)."""
    group = "search" if where == "search" else f"search@{where}"  # the group choice's spelling
    if isinstance(search, Mapping) and search.get("mode") == "t_plus" and search.get("feedback", "t_plus") != "t_plus":
        raise ConfigError(
            f"`{where}.feedback` must be t_plus with {group}=t_plus, got {search.get('feedback')!r} (T+ always uses "
            f"its structured feedback and GEN discount); for one T+ component alone use {group}=ab_mcts with "
            f"{where}.feedback=t_plus, or with {where}.gen_discount={{gamma0:0.98,delta:0.02,gamma_min:0.5}}")


def rl_parts(rl: Any) -> dict[type, dict[str, Any]]:
    return build_parts(rl, "rl", RL_PARTS)


def rl_config(rl: Any) -> RLConfig:
    return construct(RLConfig, rl_parts(rl)[RLConfig], "rl")


def loss_config(c: Mapping[str, Any]) -> LossConfig:
    """`LossConfig` of the run: ``rl`` + TIS on when the rollout engine is not the trainer (``rl.tis: auto``)
    + the rollout's sampling temperature."""
    parts = rl_parts(c["rl"])
    tis = parts[RLConfig]["tis"]
    if not isinstance(tis, bool):  # auto
        tis = c["rollout"]["backend"] != "hf"
    return construct(LossConfig, {**parts[LossConfig], "tis": tis,
                                  "temperature": float(c["rollout"]["temperature"])}, "rl")


def sample_config(c: Mapping[str, Any]) -> SampleConfig:
    """`SampleConfig` of the run: ``rl`` + the rollout's generation budget (DAPO's L_max)."""
    kw = rl_parts(c["rl"])[SampleConfig]
    max_new = int(c["rollout"]["max_new_tokens"])
    if kw.get("overlong", True) and kw.get("overlong_buffer", 0) > max_new:
        raise ConfigError(
            f"`rl.overlong_buffer`={kw['overlong_buffer']} exceeds `rollout.max_new_tokens`={max_new} (the DAPO "
            f"overlong buffer is the last part of the generation budget): lower rl.overlong_buffer (model."
            f"generation.overlong_buffer) or raise model.generation.max_new_tokens, or set rl.overlong=false")
    return construct(SampleConfig, {**kw, "max_new_tokens": max_new}, "rl")


def rollout_config(rollout: Any) -> HFRollout | VLLMRollout | OpenAIRollout:
    if not isinstance(rollout, Mapping):
        raise ConfigError(f"`rollout` must be a mapping, got {rollout!r}")
    backend = rollout.get("backend")
    if backend not in ROLLOUTS:
        raise ConfigError(f"`rollout.backend` must be one of {', '.join(map(repr, BACKENDS))}, got {backend!r} "
                          f"(rollout=hf, rollout=vllm or rollout=openai)")
    return build(ROLLOUTS[backend], rollout, "rollout")


def sandbox_config(sandbox: Any) -> SandboxConfig:
    return build(SandboxConfig, sandbox, "sandbox")


def policy_spec(pid: str, entry: Any, where: str | None = None) -> PolicySpec:
    """`PolicySpec` of one ``model.policies`` entry (its ``warm_start`` and ``gpus`` are checked by
    `warm_start_config` and `check_policy`)."""
    where = where or f"model.policies.{pid}"
    check_keys(entry, where, {**init_fields(PolicySpec, ("id",)), **POLICY_EXTRA})
    kw = checked_kwargs(PolicySpec, entry, where, ("id",))
    return construct(PolicySpec, {**kw, "id": pid}, where)


def warm_start_config(defaults: Any, own: Any, where: str) -> WarmStartConfig:
    """`WarmStartConfig` of a policy: ``model.warm_start_defaults`` overridden by the policy's ``warm_start``
    (each checked key by key, so the error names the file's key)."""
    fields = init_fields(WarmStartConfig)
    for data, key in ((defaults, "model.warm_start_defaults"), (own, f"{where}.warm_start")):
        check_keys(data, key, fields)
        checked_kwargs(WarmStartConfig, data, key)
    return construct(WarmStartConfig, checked_kwargs(WarmStartConfig, {**defaults, **own}, "model.warm_start"),
                     f"{where}.warm_start")


def check_policy(pid: str, entry: Any, defaults: Any) -> None:
    where = f"model.policies.{pid}"
    policy_spec(pid, entry, where)
    for name, tp in POLICY_EXTRA.items():
        if name in entry:
            check_value(tp, entry[name], f"{where}.{name}")
    warm_start_config(defaults, entry.get("warm_start") or {}, where)


def task_loader(name: str):
    """The function that loads task ``name`` (its keyword arguments are the ``task.*`` keys)."""
    from mars2.tasks.registry import LOADERS, task_loader as loader

    if name not in LOADERS:
        raise ConfigError(f"`task.name` must be one of {', '.join(sorted(LOADERS))}, got {name!r}")
    return loader(name)


def check_task(task: Any) -> None:
    """``task.*`` are the keyword arguments of the task's loader (its signature is the schema, so a key the
    loader gains is accepted without an edit here); ``report`` is the CLI's, not a config key."""
    if not isinstance(task, Mapping) or "name" not in task:
        raise ConfigError("`task` must be a mapping with a `name` (task=minicode, task=livecodebench, ...)")
    params = inspect.signature(task_loader(task["name"])).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return  # a loader that takes anything checks its own keywords
    known = {k: None for k in params if k != "report"}
    known["name"] = None
    check_keys(task, "task", known)


def check_rm(rm: Any) -> None:
    from mars2.reward_model.trainer import RMTrainConfig

    parts = build_parts(rm, "rm", {RMConfig: (), RMTrainConfig: ()})
    construct(RMConfig, parts[RMConfig], "rm")
    construct(RMTrainConfig, parts[RMTrainConfig], "rm")


# ---------------------------------------------------------------------------------------------------------
# The whole run config
# ---------------------------------------------------------------------------------------------------------

def parse_config(cfg: Mapping[str, Any], kind: str = "train") -> TrainConfig | EvaluateConfig:
    """The resolved config of train.py (``kind="train"``) or evaluate.py (``"evaluate"``), checked key by
    key; ConfigError (one line naming the key) at the first problem."""
    cls = {"train": TrainConfig, "evaluate": EvaluateConfig}[kind]
    fields = init_fields(cls)
    check_keys(cfg, "", fields)
    kw = checked_kwargs(cls, cfg, "", required=True)
    # the groups whose schema is several dataclasses or a loader's signature
    check_task(cfg["task"])
    rollout_config(cfg["rollout"])
    rl_config(cfg["rl"])
    sample_config(cfg)
    loss_config(cfg)
    if cfg.get("rm") is not None:
        check_rm(cfg["rm"])
    model = cfg["model"]
    for pid, entry in model["policies"].items():
        check_policy(pid, entry, model["warm_start_defaults"])
    check_t_plus_feedback(cfg["search"], "search")
    check_t_plus_feedback(cfg["eval"]["search"], "eval.search")
    run = construct(cls, kw, "")
    check_team(run)
    return run


def check_team(run: TrainConfig | EvaluateConfig) -> None:
    roster, policies, n = run.model.roster, run.model.policies, run.paradigm.n_agents
    if not roster:
        raise ConfigError("`model.roster` is empty")
    for pid in roster:
        if pid not in policies:
            raise ConfigError(f"`model.roster` names {pid!r}, which is not under `model.policies`")
    if run.paradigm.name == "single" and n != 1:
        raise ConfigError(f"`paradigm.n_agents` must be 1 for paradigm=single, got {n}")
    if run.paradigm.name == "heterogeneous" and n > len(roster):
        raise ConfigError(
            f"`paradigm.n_agents`={n} does not fit the roster of model={run.model.name} "
            f"({len(roster)} policies: {list(roster)}); use fewer agents or a larger roster")
    if not run.roles:
        raise ConfigError("`roles` is empty")
