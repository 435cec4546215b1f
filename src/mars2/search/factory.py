"""Search configuration and the one constructor of per-tree search states (method.md §3, §6).

``SearchConfig`` is validated at construction (verl style: a clear ``ValueError`` naming the field), so a
bad Hydra override fails at start-up, not in the middle of a rollout. ``dataclasses.replace`` re-runs the
validation, and the normalisations below are idempotent, so replacing a field is always safe.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from mars2.search.ab_mcts import DISCOUNT_FORMS, PARALLEL_RULES, ABMCTSSearch, GenDiscount, TreeSearch
from mars2.search.baselines import IIDSearch, SequentialSearch
from mars2.search.posteriors import POSTERIOR_KINDS
from mars2.sandbox.feedback import STYLES
from mars2.search.tree import Tree
from mars2.tasks.problem import Problem

MODES = ("ab_mcts", "iid", "sequential", "t_plus")
SCORES = ("pass_all", "fraction")
FEEDBACK_STYLES = STYLES  # the refinement feedback formats (mars2.sandbox.feedback formats them)
PRIOR_MEAN_SCOPES = ("agents", "all")
DEFAULT_GEN_DISCOUNT = {"gamma0": 0.98, "delta": 0.02, "gamma_min": 0.5, "form": "probability"}

SeedLike = int | Sequence[int] | np.random.SeedSequence


@dataclass
class SearchConfig:
    """One tree search per problem.

    - ``mode``: ``ab_mcts`` (multi-agent AB-MCTS-A, §3), ``iid`` (N fresh solutions: GRPO rollout /
      best-of-N), ``sequential`` (one refinement chain), ``t_plus`` (= ab_mcts + T+ structured feedback +
      depth-guided GEN discount, §6; choosing it forces ``feedback="t_plus"`` and fills ``gen_discount``
      with the defaults when unset).
    - ``budget``: nodes per tree (training 8, evaluation 60).
    - ``posterior``: ``gaussian`` (TreeQuest's Normal-inverse-χ²) or ``beta``.
    - ``prior_mean``: TreeQuest's ``reward_average_prior``. ``prior_mean_scope`` (our addition): ``agents``
      (TreeQuest's behaviour: only the agent arms get the override) or ``all`` (GEN/CONT/child too).
    - ``score``: node search score from public tests, ``pass_all`` (1/0) or ``fraction``.
    - ``feedback``: refinement feedback style, ``vanilla`` or ``t_plus``; ``feedback_max_chars`` caps it.
    - ``include_statement``: refinement prompts repeat the problem statement (our choice, default on).
    - ``gen_discount``: ``None`` or ``{"gamma0", "delta", "gamma_min", "form"}`` (missing keys take the
      defaults 0.98 / 0.02 / 0.5 / ``probability``); ignored by ``iid`` and ``sequential``. ``form``:
      ``probability`` — ω = γ(d)^c multiplies the probability of widening (acts at every score scale);
      ``product`` — ω multiplies the GEN draw (the earlier, sign-dependent form). See ``GenDiscount``.
    - ``parallel`` (issue 21, our extension): up to k expansions per tree are proposed before any is
      scored; the runner sends up to k requests per tree in each generation batch. 1 (default) is the
      method's sequential expansion, the same trees draw for draw. ``sequential`` needs 1.
    - ``parallel_rule``: how pending expansions steer the next proposal: ``virtual_loss`` (each pending
      expansion counts as a score 0 along its path until it is scored) or ``independent`` (TreeQuest's
      ``ask_batch``: independent Thompson draws from the same posteriors).
    """

    mode: str = "ab_mcts"
    budget: int = 8
    posterior: str = "gaussian"
    prior_mean: float | None = None
    score: str = "pass_all"
    feedback: str = "vanilla"
    include_statement: bool = True
    gen_discount: dict[str, Any] | None = None
    feedback_max_chars: int = 600
    prior_mean_scope: str = "agents"
    parallel: int = 1
    parallel_rule: str = "virtual_loss"

    def __post_init__(self) -> None:
        _one_of("mode", self.mode, MODES)
        if isinstance(self.budget, bool) or not isinstance(self.budget, (int, np.integer)) or self.budget < 1:
            raise ValueError(f"SearchConfig.budget must be an integer >= 1, got {self.budget!r}")
        self.budget = int(self.budget)
        _one_of("posterior", self.posterior, POSTERIOR_KINDS)
        if self.prior_mean is not None:
            try:
                self.prior_mean = float(self.prior_mean)
            except (TypeError, ValueError):
                raise ValueError(f"SearchConfig.prior_mean must be a number or None, got {self.prior_mean!r}")
            if self.posterior == "beta" and not 0.0 < self.prior_mean < 1.0:
                raise ValueError(f"SearchConfig.prior_mean must lie in (0, 1) for the beta posterior, "
                                 f"got {self.prior_mean}")
        _one_of("prior_mean_scope", self.prior_mean_scope, PRIOR_MEAN_SCOPES)
        _one_of("score", self.score, SCORES)
        _one_of("feedback", self.feedback, FEEDBACK_STYLES)
        if not isinstance(self.include_statement, bool):
            raise ValueError(f"SearchConfig.include_statement must be true/false, got {self.include_statement!r}")
        if (isinstance(self.feedback_max_chars, bool) or not isinstance(self.feedback_max_chars, (int, np.integer))
                or self.feedback_max_chars < 1):
            raise ValueError(f"SearchConfig.feedback_max_chars must be an integer >= 1, got {self.feedback_max_chars!r}")
        if (isinstance(self.parallel, bool) or not isinstance(self.parallel, (int, np.integer))
                or self.parallel < 1):
            raise ValueError(f"SearchConfig.parallel must be an integer >= 1, got {self.parallel!r}")
        self.parallel = int(self.parallel)
        if self.mode == "sequential" and self.parallel != 1:
            raise ValueError(f"SearchConfig.parallel must be 1 for mode=sequential (a refinement chain has one "
                             f"pending node at a time), got {self.parallel}")
        _one_of("parallel_rule", self.parallel_rule, PARALLEL_RULES)
        if self.mode == "t_plus":
            self.feedback = "t_plus"
            if self.gen_discount is None:
                self.gen_discount = dict(DEFAULT_GEN_DISCOUNT)
        if self.gen_discount is not None:
            self.gen_discount = _check_discount(self.gen_discount)

    @property
    def tree_mode(self) -> str:
        """The selection algorithm: ``t_plus`` grows its tree with AB-MCTS-A."""
        return "ab_mcts" if self.mode == "t_plus" else self.mode

    def discount(self) -> GenDiscount | None:
        if self.gen_discount is None or self.tree_mode != "ab_mcts":
            return None
        return GenDiscount(**self.gen_discount)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _one_of(name: str, value: Any, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise ValueError(f"SearchConfig.{name} must be one of {list(allowed)}, got {value!r}")


def _check_discount(gd: Any) -> dict[str, Any]:
    if not isinstance(gd, Mapping):
        try:
            gd = dict(gd)  # OmegaConf DictConfig and the like
        except (TypeError, ValueError):
            raise ValueError(f"SearchConfig.gen_discount must be null or a mapping "
                             f"{{gamma0, delta, gamma_min, form}}, got {gd!r}")
    unknown = set(gd) - set(DEFAULT_GEN_DISCOUNT)
    if unknown:
        raise ValueError(f"SearchConfig.gen_discount has unknown keys {sorted(unknown)}; "
                         f"allowed: {sorted(DEFAULT_GEN_DISCOUNT)}")
    out: dict[str, Any] = {}
    for k, default in DEFAULT_GEN_DISCOUNT.items():
        v = gd.get(k, default)
        if k == "form":
            if v not in DISCOUNT_FORMS:
                raise ValueError(f"SearchConfig.gen_discount.form must be one of {list(DISCOUNT_FORMS)}, got {v!r}")
            out[k] = v
            continue
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            raise ValueError(f"SearchConfig.gen_discount.{k} must be a number, got {v!r}")
    if not 0.0 < out["gamma0"] <= 1.0:
        raise ValueError(f"SearchConfig.gen_discount.gamma0 must lie in (0, 1], got {out['gamma0']}")
    if out["delta"] < 0.0:
        raise ValueError(f"SearchConfig.gen_discount.delta must be >= 0, got {out['delta']}")
    if not 0.0 < out["gamma_min"] <= out["gamma0"]:
        raise ValueError(f"SearchConfig.gen_discount.gamma_min must lie in (0, gamma0], got {out['gamma_min']}")
    return out


def make_tree_search(
    cfg: SearchConfig,
    problem: Problem | str,
    n_agents: int,
    seed: SeedLike = 0,
) -> TreeSearch:
    """A fresh search state (with an empty tree) for one problem. ``seed`` seeds the tree's own generator
    (the runner passes ``(seed, problem_index)``); the budget is ``cfg.budget``."""
    if n_agents < 1:
        raise ValueError(f"n_agents must be >= 1, got {n_agents}")
    problem_id = problem if isinstance(problem, str) else problem.id
    tree = Tree(problem_id=problem_id)
    rng = np.random.default_rng(seed)
    mode = cfg.tree_mode
    if mode == "ab_mcts":
        return ABMCTSSearch(
            tree, n_agents, rng, posterior=cfg.posterior, prior_mean=cfg.prior_mean,
            prior_mean_scope=cfg.prior_mean_scope, gen_discount=cfg.discount(), budget=cfg.budget,
            parallel_rule=cfg.parallel_rule,
        )
    if mode == "iid":
        return IIDSearch(tree, n_agents, rng, budget=cfg.budget)
    if mode == "sequential":
        return SequentialSearch(tree, n_agents, rng, budget=cfg.budget)
    raise AssertionError(mode)  # unreachable: validated in SearchConfig
