"""Held-out evaluation of a team (method.md §7): Pass@1 of fresh samples per agent; Pass@1(MCTS), Pass@N,
avg_pass1, the TTS curve and the diversity measures of one search per problem (system mode: all agents in
one tree; agent mode: each agent searches alone); 95 % confidence intervals over problems, and over seeds
when several evaluation seeds are aggregated (:func:`aggregate_seeds`). Plain Python: used by the training
callback and by evaluate.py.

Metric keys (``eval/...`` for the team, ``eval/agent/<name>/...`` per agent; every key also has ``_lo`` and
``_hi``, its 95 % t-interval over problems, clipped to [0, 1] for rates and at 0 for counts):

"Solved" / "pass" is one rule everywhere: ``Evaluation.solved`` (every public and hidden test of the problem, as
the sandbox judges; ``Node.hidden_pass`` for a node), and every pass metric comes from ``mars2.metrics.passk``.

- ``pass1``: solved share of fresh single samples (team: mean over agents).
- ``pass1_mcts``, ``pass_at_n``, ``avg_pass1`` at the full budget; ``tts/<b>`` = Pass@1(MCTS) of the first b
  nodes of the same search, and ``b<b>/pass_at_n``, ``b<b>/avg_pass1``, ``b<b>/div/...`` the other metrics
  on that prefix (for every TTS budget b below the full budget). A prefix of a search equals the search run
  with the smaller budget (no search decision depends on the budget), so ``tts/8`` of a 16-node search is
  the 8-node search's Pass@1(MCTS).
- ``div/ec`` (EC@K), ``div/structural``, ``div/semantic``, ``div/da`` (DA@K), ``div/k`` (programs per
  problem): ``mars2.metrics.diversity``.
- System mode, per agent (one shared tree): ``pass_at_n``, ``avg_pass1`` and ``div/...`` over that agent's
  own nodes, ``nodes`` (its nodes per tree), ``final_share`` (share of problems whose final answer it wrote).
  Pass@1(MCTS) is a property of the whole tree, so it is reported for the team only.
- Agent mode: every agent has the full set from its solo tree; the team's pass1_mcts / pass_at_n /
  avg_pass1 / tts are per-problem means over the agents (each agent's search is one attempt), while the
  team's diversity pools the candidates of all solo trees of a problem (do the agents write different
  programs?).

Extra held-out splits (``extra_splits={"test_iid": problems, ...}``, issue 17; config ``eval.extra_splits``, chosen
by :func:`select_extra_splits`): fresh Pass@1 of every agent on each, as ``eval/<split>/pass1`` (team: mean over
agents) and ``eval/<split>/agent/<name>/pass1``, each with ``_lo``/``_hi`` — e.g. minicode's ``test_iid`` (unseen
instances of RL-train compositions) beside ``test`` (unseen compositions). No search on them: Pass@1 is where
RL transfer shows first, and a search per split would double the evaluation time. They are measured *off the
record*: the backend's sampling stream (its ``state_dict``: the call counter that seeds each call) is put back
afterwards, so turning an extra split on or off changes no other number of an evaluation or of a training run.

Per-problem values: ``EvalResult.values`` (key → one value per problem) with ``EvalResult.problem_ids``
(metric-key prefix → problem ids: ``"eval"`` for the evaluated split, ``"eval/<split>"`` for an extra split; a
key belongs to its longest prefix) — what paired comparisons between runs need (:mod:`mars2.tracking.per_problem`).

Final answers use the reward model when one is given (``reward_model.score(statements, programs)``, §6.3;
``rm_mode`` tiebreak|rerank), else the rule of ``mars2.search.select`` (best public score, newest).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from mars2.agents.base import AgentSpec
from mars2.rollout.backend import GenerationBackend, GenerationRequest
from mars2.agents.extraction import extract_program
from mars2.agents.prompts import fresh_messages
from mars2.metrics.diversity import Candidate, behaviour_vector, diversity_values
from mars2.metrics.passk import avg_pass1_of, avg_pass1_values, pass1_mcts_values, pass_at_n_of, pass_at_n_values
from mars2.metrics.stats import mean_ci
from mars2.search.factory import SearchConfig
from mars2.rollout.runner import SearchRunner
from mars2.search.select import RM_MODES, candidates, final_answer
from mars2.search.tree import Node, Tree
from mars2.tasks.problem import Problem

EVAL_MODES = ("system", "agent")  # eval.mode: all agents share one tree | each agent searches alone

Progress = Callable[[int, int], None]
UNBOUNDED = ("div/ec", "div/k", "nodes", "seconds")  # metric suffixes that are not rates in [0, 1]


@dataclass
class DiversityConfig:
    """``enabled``: compute the diversity measures; ``extra_probes``: probe inputs beyond the tests per
    problem (generated problems with a reference only; 0 = the tests alone, no extra sandbox runs);
    ``ngram``: token n-gram sizes of the semantic distance; ``probe_seed``: seed of the probe inputs."""

    enabled: bool = True
    extra_probes: int = 8
    ngram: tuple[int, ...] = (1, 2)
    probe_seed: int = 0

    @classmethod
    def from_any(cls, d: "DiversityConfig | Mapping[str, Any] | bool | None") -> "DiversityConfig":
        if isinstance(d, DiversityConfig):
            return d
        if d is None or d is True:
            return cls()
        if d is False:
            return cls(enabled=False)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"eval.diversity: unknown keys {sorted(unknown)}; allowed: {sorted(known)}")
        kw = dict(d)
        if "ngram" in kw:
            kw["ngram"] = tuple(int(n) for n in kw["ngram"])
        return cls(**kw)


@dataclass
class EvalResult:
    """One evaluation (one seed): flat ``metrics`` (means and ``_lo``/``_hi``), the per-problem ``values``
    behind each metric (for intervals over seeds), the trees per searcher ("team" or an agent name) and the
    search runners' timing ``stats``."""

    metrics: dict[str, float]
    values: dict[str, list[float]]
    trees: dict[str, list[Tree]]
    stats: dict[str, dict[str, float]] = field(default_factory=dict)
    selection: str = "rule"
    problem_ids: dict[str, list[str]] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------------
# Fresh samples (Pass@1)
# ---------------------------------------------------------------------------------------------------------

def fresh_pass1(
    backend: GenerationBackend,
    scorer: Any,
    agents: Sequence[AgentSpec],
    problems: Sequence[Problem],
    samples: int = 1,
) -> dict[str, list[float]]:
    """Per agent, whether each of `samples` fresh solutions per problem is solved (``Evaluation.solved``: every
    public and hidden test), averaged per problem."""
    requests, keys = [], []
    for a_idx, agent in enumerate(agents):
        for p_idx, problem in enumerate(problems):
            for _ in range(samples):
                requests.append(GenerationRequest(agent.policy_id, fresh_messages(problem, agent)))
                keys.append((a_idx, p_idx))
    gens = backend.generate(requests)
    programs = [extract_program(g.text) for g in gens]
    evals = scorer.evaluate_many([(problems[p], prog) for (_, p), prog in zip(keys, programs)])
    per: dict[str, list[list[float]]] = {a.name: [[] for _ in problems] for a in agents}
    for (a_idx, p_idx), ev in zip(keys, evals):
        per[agents[a_idx].name][p_idx].append(float(ev.solved))
    return {name: [sum(v) / len(v) for v in rows] for name, rows in per.items()}


# ---------------------------------------------------------------------------------------------------------
# Behaviour on probes (for EC@K / DA@K)
# ---------------------------------------------------------------------------------------------------------

def probe_problem(problem: Problem, extra: int, seed: int = 0) -> Problem | None:
    """The problem with its tests replaced by the extra probe inputs (None when it has none)."""
    if extra <= 0:
        return None
    from mars2.tasks.registry import probe_tests  # the problem's own source says how to probe it

    probes = probe_tests(problem, extra, seed)
    if not probes:
        return None
    return dataclasses.replace(problem, public_tests=(), hidden_tests=tuple(probes))


def probe_behaviours(
    scorer: Any,
    problems: Sequence[Problem],
    trees_per_problem: Sequence[Sequence[Tree]],
    cfg: DiversityConfig,
) -> list[dict[str, tuple[str, ...]]]:
    """Per problem, program text → its output vector on the *extra* probes (run once per distinct program,
    all problems in one ``evaluate_many`` call). Empty dicts when there are no extra probes."""
    out: list[dict[str, tuple[str, ...]]] = [{} for _ in problems]
    items, keys = [], []
    for i, (problem, trees) in enumerate(zip(problems, trees_per_problem)):
        pp = probe_problem(problem, cfg.extra_probes, cfg.probe_seed)
        if pp is None:
            continue
        progs = sorted({n.program for t in trees for n in t.real_nodes() if n.program is not None})
        for prog in progs:
            items.append((pp, prog))
            keys.append((i, prog, len(pp.hidden_tests)))
    if items:
        evals = scorer.evaluate_many(items)
        for (i, prog, n), ev in zip(keys, evals):
            out[i][prog] = behaviour_vector(ev.hidden.verdicts, n)
    return out


def node_candidate(node: Node, problem: Problem, extra: Mapping[str, tuple[str, ...]]) -> Candidate:
    """A node as a diversity candidate: output vector = its verdicts on the public and hidden tests (already
    computed by the search) followed by its outputs on the extra probes."""
    n_pub, n_hid = len(problem.public_tests), len(problem.hidden_tests)
    if node.evaluation is None:
        tests = ("not_run",) * (n_pub + n_hid)
    else:
        tests = (behaviour_vector(node.evaluation.public.verdicts, n_pub)
                 + behaviour_vector(node.evaluation.hidden.verdicts, n_hid))
    outputs = tests + (extra.get(node.program, ()) if node.program is not None else ())
    return Candidate(program=node.program, outputs=outputs, correct=node.hidden_pass)


# ---------------------------------------------------------------------------------------------------------
# Per-searcher values
# ---------------------------------------------------------------------------------------------------------

def _nodes(tree: Tree, budget: int | None, agent: str | None = None) -> list[Node]:
    nodes = candidates(tree, budget)
    return nodes if agent is None else [n for n in nodes if n.agent_name == agent]


def _diversity(
    node_lists: Sequence[Sequence[Node]],
    problems: Sequence[Problem],
    extras: Sequence[Mapping[str, tuple[str, ...]]],
    cfg: DiversityConfig,
) -> dict[str, list[float]]:
    cands = [[node_candidate(n, p, ex) for n in nodes] for nodes, p, ex in zip(node_lists, problems, extras)]
    return {f"div/{k}": v for k, v in diversity_values(cands, cfg.ngram).items()}


def _budgets(tts_budgets: Sequence[int], budget: int) -> list[int]:
    return sorted({int(b) for b in tts_budgets if 1 <= int(b) <= budget})


def _tree_values(
    trees: Sequence[Tree],
    problems: Sequence[Problem],
    budget: int,
    tts: Sequence[int],
    rm: Sequence[Mapping[int, float] | None] | None,
    rm_mode: str,
    extras: Sequence[Mapping[str, tuple[str, ...]]],
    div: DiversityConfig,
) -> dict[str, list[float]]:
    """Per-problem values of a searcher that owns whole trees (the team in system mode, an agent in agent
    mode)."""
    v: dict[str, list[float]] = {
        "pass1_mcts": pass1_mcts_values(trees, budget, rm, rm_mode),
        "pass_at_n": pass_at_n_values(trees, budget),
        "avg_pass1": avg_pass1_values(trees, budget),
    }
    for b in tts:
        v[f"tts/{b}"] = pass1_mcts_values(trees, b, rm, rm_mode)
    if div.enabled:
        v.update(_diversity([_nodes(t, budget) for t in trees], problems, extras, div))
    for b in tts:
        if b >= budget:
            continue
        v[f"b{b}/pass_at_n"] = pass_at_n_values(trees, b)
        v[f"b{b}/avg_pass1"] = avg_pass1_values(trees, b)
        if div.enabled:
            for k, vals in _diversity([_nodes(t, b) for t in trees], problems, extras, div).items():
                v[f"b{b}/{k}"] = vals
    return v


def _agent_share_values(
    trees: Sequence[Tree],
    problems: Sequence[Problem],
    agent: str,
    budget: int,
    tts: Sequence[int],
    rm: Sequence[Mapping[int, float] | None] | None,
    rm_mode: str,
    extras: Sequence[Mapping[str, tuple[str, ...]]],
    div: DiversityConfig,
) -> dict[str, list[float]]:
    """Per-problem values of one agent's own nodes inside shared (system-mode) trees."""
    v: dict[str, list[float]] = {"pass_at_n": [], "avg_pass1": [], "nodes": [], "final_share": []}
    for i, t in enumerate(trees):
        mine = _nodes(t, budget, agent)
        v["pass_at_n"].append(pass_at_n_of(mine))
        v["avg_pass1"].append(avg_pass1_of(mine))
        v["nodes"].append(float(len(mine)))
        if candidates(t, budget):
            chosen = final_answer(t, rm[i] if rm is not None else None, mode=rm_mode, budget=budget)
            v["final_share"].append(float(chosen.agent_name == agent))
        else:
            v["final_share"].append(0.0)
    if div.enabled:
        v.update(_diversity([_nodes(t, budget, agent) for t in trees], problems, extras, div))
    for b in tts:
        if b >= budget:
            continue
        v[f"b{b}/pass_at_n"] = [pass_at_n_of(_nodes(t, b, agent)) for t in trees]
    return v


def reward_model_scores(reward_model: Any, problems: Sequence[Problem], trees: Sequence[Tree]
                        ) -> list[dict[int, float]]:
    """R_θ of every node with a program (node id → score), one dict per tree (§6.3). Nodes without a program
    get no score: ``final_answer`` ranks them below every scored node."""
    texts, progs, keys = [], [], []
    for i, (p, t) in enumerate(zip(problems, trees)):
        for n in t.real_nodes():
            if n.program is not None:
                texts.append(p.statement)
                progs.append(n.program)
                keys.append((i, n.id))
    scores = reward_model.score(texts, progs) if progs else []
    out: list[dict[int, float]] = [{} for _ in trees]
    for (i, nid), s in zip(keys, scores):
        out[i][nid] = float(s)
    return out


# ---------------------------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------------------------

def is_rate(key: str) -> bool:
    """Rates lie in [0, 1]; counts (EC@K, K, nodes, seconds) are only >= 0."""
    return not any(key.endswith(s) for s in UNBOUNDED)


def summarise(key: str, values: Sequence[float]) -> tuple[float, float, float]:
    """(mean, lo, hi) over the non-NaN values: the 95 % t-interval, clipped to the metric's range ([0, 1]
    for rates, [0, ∞) for counts) — a t-interval of a few 0/1 values easily crosses the bounds."""
    vals = [float(x) for x in values if not math.isnan(float(x))]
    m, lo, hi = mean_ci(vals)
    if vals:
        lo = max(0.0, lo)
        if is_rate(key):
            hi = min(1.0, hi)
    return m, lo, hi


def flat_metrics(values: Mapping[str, Sequence[float]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key, vals in values.items():
        m, lo, hi = summarise(key, vals)
        out[key] = m
        out[f"{key}_lo"] = lo
        out[f"{key}_hi"] = hi
    return out


def _mean_rows(rows: Sequence[Sequence[float]]) -> list[float]:
    """Element-wise mean (NaN-aware) of equally long rows."""
    out = []
    for col in zip(*rows):
        vals = [x for x in col if not math.isnan(x)]
        out.append(sum(vals) / len(vals) if vals else math.nan)
    return out


# ---------------------------------------------------------------------------------------------------------
# Extra held-out splits (eval.extra_splits)
# ---------------------------------------------------------------------------------------------------------

EXTRA_SPLITS_KEY = "eval.extra_splits"


def check_split_name(split: Any) -> str:
    from mars2.config import ConfigError

    if not isinstance(split, str) or not split or "/" in split:
        raise ConfigError(f"{EXTRA_SPLITS_KEY}: a split name must be a non-empty string without '/', got {split!r}")
    return split


def extra_splits_given(overrides: Sequence[str]) -> bool:
    """Whether the command line sets ``eval.extra_splits`` (``eval.extra_splits=[...]``, ``+``/``++``/``~``)."""
    return any(o.lstrip("+~").split("=", 1)[0] == EXTRA_SPLITS_KEY for o in overrides)


def select_extra_splits(
    task: str,
    splits: Mapping[str, Sequence[Problem]],
    names: Sequence[str] | None,
    *,
    main: str,
    explicit: bool,
    n_problems: int = 0,
    log: Callable[[str], None] | None = None,
) -> dict[str, list[Problem]]:
    """The problems of each extra held-out split named by ``eval.extra_splits`` (first ``n_problems`` of each, as
    for the evaluated split; 0 = all).

    A split the task does not have, or an empty one: an error (``TaskDataError``, one line, exit 2) when
    ``eval.extra_splits`` was given on the command line (``explicit``); left at its default (``[test_iid]``) it is
    skipped with one logged line, so a real benchmark without ``test_iid`` just works. The evaluated split
    itself (``main``) is skipped with a line (its Pass@1 is ``eval/pass1``). A value that is not a list of split
    names raises ``ConfigError`` (one line, exit 2)."""
    if names is None:
        return {}
    if isinstance(names, str) or not isinstance(names, Sequence):
        from mars2.config import ConfigError

        raise ConfigError(f"{EXTRA_SPLITS_KEY} must be a list of split names, got {names!r}")
    say = log or (lambda _msg: None)
    out: dict[str, list[Problem]] = {}
    for name in names:
        check_split_name(name)
        if name == main or name in out:
            say(f"{EXTRA_SPLITS_KEY}: {name!r} is {'the evaluated split' if name == main else 'named twice'}; "
                f"measured once")
            continue
        if not splits.get(name):
            if explicit:
                from mars2.tasks.registry import require_split

                require_split(task, dict(splits), name)  # raises: no such split / an empty split
            why = "has no split" if name not in splits else "has an empty split"
            say(f"{EXTRA_SPLITS_KEY}: task {task} {why} {name!r}; eval/{name}/... not measured "
                f"(default list; set {EXTRA_SPLITS_KEY}=[] to silence, or name the split to require it)")
            continue
        probs = list(splits[name])
        out[name] = probs[:n_problems] if n_problems else probs
    return out


# ---------------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------------

def run_evaluation(
    backend: GenerationBackend,
    scorer: Any,
    agents: Sequence[AgentSpec],
    problems: Sequence[Problem],
    search: SearchConfig,
    budget: int,
    mode: str = "system",
    pass1_samples: int = 1,
    tts_budgets: Sequence[int] = (),
    seed: int = 0,
    progress: Progress | None = None,
    reward_model: Any = None,
    rm_mode: str = "tiebreak",
    diversity: DiversityConfig | Mapping[str, Any] | bool | None = None,
    extra_splits: Mapping[str, Sequence[Problem]] | None = None,
) -> EvalResult:
    """One evaluation of ``agents`` on ``problems`` (see the module docstring for every metric), plus fresh
    Pass@1 on each of ``extra_splits`` (name → problems)."""
    if mode not in EVAL_MODES:
        raise ValueError(f"eval.mode must be 'system' or 'agent', got {mode!r}")
    if rm_mode not in RM_MODES:
        raise ValueError(f"eval.rm_mode must be 'tiebreak' or 'rerank', got {rm_mode!r}")
    div = DiversityConfig.from_any(diversity)
    t0 = time.perf_counter()
    tts = _budgets(tts_budgets, budget)
    values: dict[str, list[float]] = {}

    per_agent = fresh_pass1(backend, scorer, agents, problems, pass1_samples)
    for name, vals in per_agent.items():
        values[f"agent/{name}/pass1"] = list(vals)
    values["pass1"] = _mean_rows([per_agent[a.name] for a in agents])
    problem_ids = {"eval": [p.id for p in problems]}
    for split, extra in (extra_splits or {}).items():
        check_split_name(split)
        if not extra:
            raise ValueError(f"extra split {split!r} has no problems")
        stream = backend.state_dict()  # off the record: the sampling stream is put back below
        try:
            per_split = fresh_pass1(backend, scorer, agents, list(extra), pass1_samples)
        finally:
            backend.load_state_dict(stream)
        for name, vals in per_split.items():
            values[f"{split}/agent/{name}/pass1"] = list(vals)
        values[f"{split}/pass1"] = _mean_rows([per_split[a.name] for a in agents])
        problem_ids[f"eval/{split}"] = [p.id for p in extra]

    searchers = {"team": list(agents)} if mode == "system" else {a.name: [a] for a in agents}
    trees_by: dict[str, list[Tree]] = {}
    stats: dict[str, dict[str, float]] = {}
    for key, team in searchers.items():
        runner = SearchRunner(backend, scorer, team, dataclasses.replace(search, budget=budget))
        trees_by[key] = runner.run(problems, budget=budget, seed=seed, progress=progress)
        stats[key] = dict(runner.stats)

    all_trees = list(trees_by.values())
    extras = (probe_behaviours(scorer, problems, [list(ts) for ts in zip(*all_trees)], div)
              if div.enabled else [{} for _ in problems])
    rm_by = ({k: reward_model_scores(reward_model, problems, ts) for k, ts in trees_by.items()}
             if reward_model is not None else {k: None for k in trees_by})

    if mode == "system":
        trees = trees_by["team"]
        values.update(_tree_values(trees, problems, budget, tts, rm_by["team"], rm_mode, extras, div))
        for a in agents:
            for k, v in _agent_share_values(trees, problems, a.name, budget, tts, rm_by["team"], rm_mode,
                                            extras, div).items():
                values[f"agent/{a.name}/{k}"] = v
    else:
        solo = {a.name: _tree_values(trees_by[a.name], problems, budget, tts, rm_by[a.name], rm_mode, extras, div)
                for a in agents}
        for name, vals in solo.items():
            for k, v in vals.items():
                values[f"agent/{name}/{k}"] = v
        for k in solo[agents[0].name]:  # pass rates: each solo search is one attempt → mean over agents
            if k.startswith("div/") or "/div/" in k:
                continue
            values[k] = _mean_rows([solo[a.name][k] for a in agents])
        if div.enabled:  # the team's diversity pools all solo trees of a problem
            pooled = [[n for ts in per_problem for n in _nodes(ts, budget)] for per_problem in zip(*all_trees)]
            values.update(_diversity(pooled, problems, extras, div))
            for b in tts:
                if b < budget:
                    pooled_b = [[n for ts in per_problem for n in _nodes(ts, b)] for per_problem in zip(*all_trees)]
                    for k, v in _diversity(pooled_b, problems, extras, div).items():
                        values[f"b{b}/{k}"] = v

    metrics = {f"eval/{k}": v for k, v in flat_metrics(values).items()}
    metrics["eval/seconds"] = time.perf_counter() - t0
    return EvalResult(metrics=metrics, values={f"eval/{k}": v for k, v in values.items()}, trees=trees_by,
                      stats=stats, selection="rule" if reward_model is None else f"rm_{rm_mode}",
                      problem_ids=problem_ids)


def evaluate_team(
    backend: GenerationBackend,
    scorer: Any,
    agents: Sequence[AgentSpec],
    problems: Sequence[Problem],
    search: SearchConfig,
    budget: int,
    mode: str = "system",
    pass1_samples: int = 1,
    tts_budgets: Sequence[int] = (),
    seed: int = 0,
    progress: Progress | None = None,
    reward_model: Any = None,
    rm_mode: str = "tiebreak",
    diversity: DiversityConfig | Mapping[str, Any] | bool | None = None,
    extra_splits: Mapping[str, Sequence[Problem]] | None = None,
) -> tuple[dict[str, float], dict[str, list[Tree]]]:
    """:func:`run_evaluation` returning (flat ``eval/...`` metrics, trees per searcher) — the training
    callback's interface."""
    r = run_evaluation(backend, scorer, agents, problems, search, budget, mode, pass1_samples, tts_budgets, seed,
                       progress, reward_model, rm_mode, diversity, extra_splits)
    return r.metrics, r.trees


def aggregate_seeds(results: Sequence[EvalResult]) -> tuple[dict[str, float], dict[str, dict[str, Any]]]:
    """Combine evaluations of the same problems under several seeds (method.md §7: "95 % confidence
    intervals over problems and over seeds").

    For each metric: ``mean`` (over seeds and problems), ``ci_problems`` (t-interval over problems of the
    per-problem means over seeds), ``ci_seeds`` (t-interval over the per-seed means; None for one seed),
    ``per_seed`` and ``per_problem`` (the per-problem means over seeds, for paired comparisons). Returns (flat dict: ``key``, ``key_lo``/``key_hi`` over problems and, for ≥ 2 seeds,
    ``key_seed_lo``/``key_seed_hi``; the detailed dict)."""
    if not results:
        raise ValueError("aggregate_seeds: no results")
    keys = list(results[0].values)
    flat: dict[str, float] = {}
    detail: dict[str, dict[str, Any]] = {}
    for key in keys:
        rows = [r.values[key] for r in results if key in r.values]
        if len({len(r) for r in rows}) != 1:
            raise ValueError(f"aggregate_seeds: {key} has different problem counts across seeds")
        per_problem = _mean_rows(rows)
        m, lo, hi = summarise(key, per_problem)
        seed_means = [summarise(key, r)[0] for r in rows]
        entry: dict[str, Any] = {"mean": m, "ci_problems": [lo, hi], "ci_seeds": None, "per_seed": seed_means,
                                 "n_problems": sum(not math.isnan(x) for x in per_problem), "n_seeds": len(rows),
                                 "per_problem": per_problem}
        flat[key], flat[f"{key}_lo"], flat[f"{key}_hi"] = m, lo, hi
        if len(rows) >= 2:
            _, slo, shi = summarise(key, [x for x in seed_means if not math.isnan(x)])
            entry["ci_seeds"] = [slo, shi]
            flat[f"{key}_seed_lo"], flat[f"{key}_seed_hi"] = slo, shi
        detail[key] = entry
    flat["eval/seconds"] = sum(r.metrics.get("eval/seconds", 0.0) for r in results)
    return flat, detail
