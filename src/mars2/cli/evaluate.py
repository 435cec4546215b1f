"""Body of `python evaluate.py` (method.md §7): Pass@1, Pass@1(MCTS), Pass@N, avg_pass1, the TTS curve and
diversity on held-out problems, per agent and per team, with 95 % intervals over problems (and over seeds
with ``eval.seeds=[0,1,2]``); printed as a table, written to results.json in the evaluation's own run dir,
logged to the `logger` group, trees saved under trees/.

What is evaluated:
- ``ckpt=<train.py run dir>``: that run's trained policies (``<run>/policies``) with its paradigm, model and
  roles (and task, unless ``task=...`` is given on the command line); a run that was killed (or is still
  running) has no ``policies/`` yet: its last complete checkpoint (``checkpoints/last.ckpt``, else the newest
  ``roundNNNN.ckpt``) is evaluated instead, and results.json says which (``config.checkpoint``);
- no ckpt: the policies of ``model`` (tiny ones warm-started from the cache, or real checkpoints);
- ``rollout=openai``: a served model behind an OpenAI-compatible endpoint; no local policies are built
  (``rollout.base_url=http://host:8000/v1``, ``rollout.model=<served name>``; an unreachable or refusing
  server ends with one line after ``rollout.max_retries`` retries).

The evaluation search is ``eval.search``, spelled as in train.py: ``search@eval.search=t_plus`` picks it,
``eval.search.<key>=...`` sets one of its keys. The ``search`` group is train.py's training search (composed
so that experiment/debug files shared with train.py compose); setting it on evaluate.py's command line is
refused with one line naming the right spelling (`refuse_training_search`). The node budget is
``eval.budget``.
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from omegaconf import DictConfig, OmegaConf

from mars2.config import ConfigError, validate_config
from mars2.resources import SetupError

EVAL_SEARCH = "search@eval.search"
# keys of a train.py run that evaluate.py takes from the run's saved config (ckpt=...); `task` only when the
# command line does not name one
FROM_RUN = ("paradigm", "model", "task", "roles")


def refuse_training_search(overrides: Sequence[str]) -> None:
    """``search=X`` / ``search.K=V`` on evaluate.py's command line would set train.py's training search, which
    evaluate.py does not use: ConfigError naming the evaluation search's spelling instead."""
    for o in overrides:
        key, _, value = o.lstrip("+~").partition("=")
        if key == "search":
            raise ConfigError(f"`{o}` sets train.py's training search; the evaluation search is eval.search: "
                              f"use {EVAL_SEARCH}={value}")
        if key.startswith("search."):
            raise ConfigError(f"`{o}` sets train.py's training search; the evaluation search is eval.search: "
                              f"use eval.{key}={value}")


def hydra_overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except Exception:
        return []


def run_evaluate(cfg: DictConfig) -> dict[str, float]:
    """Entry used by evaluate.py. Bad configs, missing resources and missing data files end with one clear
    line on stderr and exit code 2."""
    from omegaconf.errors import OmegaConfBaseException

    from mars2.rollout.openai_backend import OpenAIBackendError  # stdlib only: cheap to import
    from mars2.tasks.loaders import TaskDataError
    from mars2.tracking.records import JobFailed, fail_job

    overrides = hydra_overrides()
    try:
        try:
            c = resolve_config(cfg, overrides)
            validate_config(c, "evaluate")  # every key, before any model is built
            refuse_training_search(overrides)
            weights_dir, checkpoint = trained_weights(Path(c["ckpt"])) if c.get("ckpt") else (None, None)
            return evaluate(c, weights_dir, overrides, checkpoint=checkpoint)
        except (ConfigError, SetupError, TaskDataError, OmegaConfBaseException) as e:
            fail_job(str(e))  # one line; exit 2, or inside a -m sweep FAILED.json and JobFailed
        except OpenAIBackendError as e:  # the server is unreachable or refuses: one line
            fail_job(str(e))
    except JobFailed:  # a -m sweep goes on; `SweepSummary` lists the failed jobs at its end
        return {}


def resolve_config(cfg: DictConfig, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The resolved config dict; with ``ckpt`` the run's paradigm/model/roles (and task unless overridden)
    replace evaluate's *before* resolution, so interpolations such as ``rollout.max_new_tokens:
    ${model.generation.max_new_tokens}`` follow the trained run's model."""
    c = OmegaConf.to_container(cfg, resolve=False)
    if c.get("ckpt"):
        run = Path(str(c["ckpt"]))
        saved = run / ".hydra" / "config.yaml"
        if not saved.is_file():
            raise SetupError(f"ckpt={run} is not a train.py run dir (expected {saved})")
        trained_weights(run)  # policies/ of a finished run, or the last checkpoint of a killed one
        train_c = OmegaConf.to_container(OmegaConf.load(saved), resolve=False)
        given = {o.lstrip("+~").split("=", 1)[0].split(".", 1)[0].split("@", 1)[0] for o in overrides}
        for key in FROM_RUN:
            if key == "task" and "task" in given:
                continue
            c[key] = train_c[key]
    return OmegaConf.to_container(OmegaConf.create(c), resolve=True)


def trained_weights(run: Path) -> tuple[Path | None, Path | None]:
    """What to evaluate in a train.py run dir: ``(policies_dir, None)`` for a finished run (its saved HF
    policies), else ``(None, checkpoint)`` for a killed or still-running one: its last complete checkpoint
    (``checkpoints/last.ckpt``, else the newest ``roundNNNN.ckpt``). Neither: SetupError."""
    from mars2.training.checkpointing import find_resume_checkpoint

    if (run / "policies").is_dir():
        return run / "policies", None
    try:
        ckpt = find_resume_checkpoint(str(run), run)
    except SetupError:
        ckpt = None
    if ckpt is None:
        raise SetupError(f"ckpt={run}: no trained weights (neither {run / 'policies'}/ of a finished run nor a "
                         f"checkpoint in {run / 'checkpoints'}/)")
    return None, Path(ckpt)


def load_checkpoint_policies(models: dict[str, Any], checkpoint: Path) -> int:
    """Load the policies' weights of a training checkpoint (`MarsModule` state: ``policies.<id>.<param>``)
    into ``models``, built from the run's own model config. Returns the rounds the checkpoint had done."""
    import torch

    if checkpoint.is_dir():
        raise SetupError(f"{checkpoint} is a sharded (FSDP) checkpoint; evaluate a finished run's policies/ or "
                         f"consolidate it first (torch.distributed.checkpoint.format_utils.dcp_to_torch_save)")
    try:
        ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
        state = ck["state_dict"]
    except Exception as e:  # noqa: BLE001 - a truncated / foreign file: one line
        raise SetupError(f"cannot read the checkpoint {checkpoint}: {type(e).__name__}: {e}") from None
    for pid, model in models.items():
        prefix = f"policies.{pid}."
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if not sub:
            raise SetupError(f"{checkpoint} holds no weights for policy {pid} (has "
                             f"{sorted({k.split('.')[1] for k in state if k.startswith('policies.')})})")
        missing, unexpected = model.load_state_dict(sub, strict=False)
        tied = {k for k in missing if k.endswith("lm_head.weight")}  # tied to the embeddings
        if set(missing) - tied or unexpected:
            raise SetupError(f"{checkpoint}: policy {pid} does not match the run's model "
                             f"(missing {sorted(set(missing) - tied)[:3]}, unexpected {sorted(unexpected)[:3]})")
    return int(ck.get("epoch", -1)) + 1


def _load_reward_model(ev: dict[str, Any]):
    path = ev["reward_model"]
    if not path:
        return None
    p = Path(str(path))
    if not p.is_file():
        raise SetupError(f"eval.reward_model={p}: no such file (expected a reward model saved by "
                         "mars2.reward_model.save_reward_model)")
    from mars2.reward_model import load_reward_model

    try:
        return load_reward_model(p)
    except ValueError as e:  # a value-head model needs its backbone: not wired into evaluate.py
        raise SetupError(f"eval.reward_model={p}: {e}") from None


def _run_reward_model(c: dict[str, Any], checkpoint: Path | None):
    """The R_θ a train.py run (``ckpt=<run dir>``) trained (experiment=reward_model), else None."""
    if not c.get("ckpt"):
        return None
    from mars2.reward_model.online import load_run_reward_model

    rm = load_run_reward_model(Path(str(c["ckpt"])), checkpoint)
    if rm is not None:
        mode = c["eval"].get("rm_mode", "tiebreak")
        print(f"mars2: final answers by the R_θ trained with {c['ckpt']} (eval.rm_mode={mode})", file=sys.stderr)
    return rm


def evaluate(c: dict[str, Any], weights_dir: Path | None, overrides: Sequence[str] = (),
             checkpoint: Path | None = None) -> dict[str, float]:
    """Evaluate the team of ``c``: trained HF policies from ``weights_dir``, or the policies of ``c["model"]``
    with the weights of a training ``checkpoint`` (a killed run), or as configured (neither)."""
    import torch

    from mars2.agents.team import team_policies
    from mars2.cli.build import (
        build_backend, build_policies, build_sandbox, close_backend, load_problems, make_team, preflight, search_config,
    )
    from mars2.reward_model.online import add_selection_metrics
    from mars2.evaluation import DiversityConfig, aggregate_seeds, extra_splits_given, run_evaluation, select_extra_splits
    from mars2.tracking import per_problem
    from mars2.search.serialize import tree_to_dict
    from mars2.tracking.records import config_summary, git_sha, write_json_atomic

    threads = c.get("trainer", {}).get("num_threads")
    if threads:
        torch.set_num_threads(int(threads))
    ev = c["eval"]
    seeds = [int(s) for s in (ev["seeds"] or [c["seed"]])]
    agents = make_team(c)
    served = c["rollout"]["backend"] == "openai"  # a served model: no local policies, no warm start
    if weights_dir is None and not served:
        preflight(c, agents)
    out = Path(c["paths"]["output_dir"])
    problems = load_problems(c)
    split = ev["split"]
    if split not in problems:
        raise SetupError(f"task {c['task']['name']} has no split {split!r} (it has {sorted(problems)}); "
                         f"set eval.split=...")
    test = problems[split]
    if int(ev.get("n_problems") or 0):
        test = test[: int(ev["n_problems"])]
    if not test:
        raise SetupError(f"no problems to evaluate in task {c['task']['name']} split {split!r}")
    extra_splits = select_extra_splits(  # eval.extra_splits (e.g. test_iid): fresh Pass@1 on each
        c["task"]["name"], problems, ev.get("extra_splits"), main=split, explicit=extra_splits_given(overrides),
        n_problems=int(ev.get("n_problems") or 0), log=lambda msg: print(f"mars2: {msg}", file=sys.stderr))
    search = search_config(ev["search"], "eval.search")  # every eval key was checked by validate_config
    budget = int(ev["budget"])
    diversity = DiversityConfig.from_any(ev["diversity"])
    rm_mode = ev["rm_mode"]
    reward_model = _load_reward_model(ev) or _run_reward_model(c, checkpoint)
    t0 = time.time()
    results = []
    sandbox = build_sandbox(c)
    try:
        models: dict[str, Any] = {}
        tokenizers: dict[str, Any] = {}
        if not served:
            if weights_dir is None and c["model"].get("scale") == "mini" and "warmup" not in problems:
                what = "its checkpoint's weights need the run's tiny tokenizer, built" if checkpoint else "is warm-started"
                raise SetupError(f"model={c['model']['name']} {what} on the task's warmup split, and task "
                                 f"{c['task']['name']} has none: evaluate a trained run (ckpt=...) on its own task")
            models, tokenizers, _ = build_policies(c, team_policies(agents), problems, sandbox,
                                                   weights_dir=weights_dir, warm=checkpoint is None)
            if checkpoint is not None:
                rounds_done = load_checkpoint_policies(models, checkpoint)
                print(f"mars2: {c['ckpt']} has no policies/ (killed or still running): evaluating its last "
                      f"checkpoint {checkpoint} (after {rounds_done} round(s))", file=sys.stderr)
        for seed in seeds:
            torch.manual_seed(seed)
            backend = build_backend(c, models, tokenizers, seed=seed, for_training=False)
            try:
                r = _with_progress(lambda progress: run_evaluation(
                    backend, sandbox, agents, test, search, budget=budget, mode=ev["mode"],
                    pass1_samples=int(ev["pass1_samples"]), tts_budgets=list(ev["tts_budgets"]),
                    seed=seed + 7919,  # the training callback's evaluation seed offset
                    progress=progress, reward_model=reward_model, rm_mode=rm_mode, diversity=diversity,
                    extra_splits=extra_splits,
                ), f"seed {seed}", len(test) * budget * (1 if ev["mode"] == "system" else len(agents)))
            finally:  # vLLM: engines shut down and exported weights removed, also when the evaluation fails
                close_backend(backend)
            if reward_model is not None:  # selection accuracy of R_θ vs the public-test rule, same trees
                add_selection_metrics(r, reward_model, test, rm_mode, budget)
            results.append(r)
            per_problem.record(out, r, 0, seed)  # eval_per_problem.json: for paired comparisons (compare.py)
            trees_path = out / "trees" / f"seed{seed}.json"
            trees_path.parent.mkdir(parents=True, exist_ok=True)
            trees_path.write_text(json.dumps({k: [tree_to_dict(t) for t in ts] for k, ts in r.trees.items()}))
    finally:
        sandbox.close()
    flat, detail = aggregate_seeds(results)
    summary = {**config_summary({**c, "rl": {"loss": None, "shaping": None}, "search": ev["search"]}),
               "ckpt": c.get("ckpt"), "checkpoint": str(checkpoint) if checkpoint else None, "eval_mode": ev["mode"], "n_problems": len(test), "split": split,
               "rollout": c["rollout"]["backend"], "selection": results[0].selection, "seeds": seeds,
               "diversity_extra_probes": diversity.extra_probes if diversity.enabled else None}
    record = {
        "status": "completed",
        "problem_ids": [p.id for p in test],
        "extra_splits": {name: [p.id for p in probs] for name, probs in extra_splits.items()},
        "per_problem": per_problem.FILE,
        "config": summary,
        "overrides": list(overrides),
        "git_sha": git_sha(c["paths"]["root_dir"]),
        "final": flat,
        "metrics": detail,
        "per_seed": [{"seed": s, "metrics": r.metrics, "search_stats": r.stats} for s, r in zip(seeds, results)],
        "trees": [f"trees/seed{s}.json" for s in seeds],
        "wall_s": time.time() - t0,
    }
    write_json_atomic(out / "results.json", _jsonable(record))
    _log(c, flat)
    print_table(flat, agents, n_seeds=len(seeds), tts=list(ev["tts_budgets"]), budget=budget)
    if "eval/select/rm" in flat:
        print(f"selection accuracy (final answer passes the hidden tests): public-test rule "
              f"{flat['eval/select/rule']:.3f}, R_θ {rm_mode} {flat['eval/select/rm']:.3f}, oracle "
              f"{flat['eval/select/oracle']:.3f}; R_θ changed the answer on {flat['eval/select/changed']:.3f}")
    print(f"results: {out / 'results.json'}   trees: {out / 'trees'}/")
    return flat


def _jsonable(x: Any) -> Any:
    """NaN (a metric undefined for every problem, e.g. semantic distance with one program each) → null, so
    results.json is strict JSON."""
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


def _with_progress(fn, label: str, total: int):
    """Run ``fn(progress)`` under a rich progress bar on stderr (nodes grown / total)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("[bold]eval {task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=total)
        state = {"base": 0, "last": 0}

        def progress(done: int, _total: int) -> None:
            if done < state["last"]:  # the next search (agent mode) reports from 0 again: accumulate
                state["base"] += state["last"]
            state["last"] = done
            bar.update(task, completed=state["base"] + done)

        return fn(progress)


def _log(c: dict[str, Any], flat: dict[str, float]) -> None:
    """The flat metrics to the `logger` group's trackers (CSV, wandb, MLflow); a tracker failure is reported,
    never fatal (results.json is the record)."""
    if not c.get("logger"):
        return
    try:
        import warnings

        from mars2.tracking.loggers import build_loggers, finish_loggers

        # Lightning's CSV logger warns that Hydra's run dir "exists and is not empty": it is ours, expected
        warnings.filterwarnings("ignore", message="Experiment logs directory")
        loggers = build_loggers(c)
        try:
            clean = {k: v for k, v in flat.items() if isinstance(v, (int, float)) and not math.isnan(v)}
            for lg in loggers:
                lg.log_metrics(clean, step=0)
        finally:
            finish_loggers(loggers)
    except Exception as e:  # noqa: BLE001
        print(f"mars2: logging the metrics failed ({type(e).__name__}: {e}); results.json has them", file=sys.stderr)


ROWS = ("pass1", "pass1_mcts", "pass_at_n", "avg_pass1", "div/ec", "div/structural", "div/semantic", "div/da",
        "div/k", "nodes", "final_share")


def _cell(flat: dict[str, float], key: str, n_seeds: int) -> str:
    if key not in flat or (isinstance(flat[key], float) and math.isnan(flat[key])):
        return ""
    prec = 2 if key.endswith(("div/ec", "div/k", "nodes")) else 3
    s = f"{flat[key]:.{prec}f} [{flat[key + '_lo']:.{prec}f}, {flat[key + '_hi']:.{prec}f}]"
    if n_seeds > 1 and f"{key}_seed_lo" in flat:
        s += f" s[{flat[key + '_seed_lo']:.{prec}f}, {flat[key + '_seed_hi']:.{prec}f}]"
    return s


def print_table(flat: dict[str, float], agents, n_seeds: int = 1, tts: Sequence[int] = (), budget: int = 0) -> None:
    """Rows: metrics (team key ``eval/<metric>``); columns: team and each agent; cells: mean [95 % CI over
    problems] and, with several seeds, s[95 % CI over seeds]."""
    from rich.console import Console
    from rich.table import Table

    names = [a.name for a in agents]
    title = "mars2 evaluation — mean [95% CI over problems]" + (" s[95% CI over seeds]" if n_seeds > 1 else "")
    table = Table(title=title)
    table.add_column("metric")
    table.add_column("team", justify="right")
    for n in names:
        table.add_column(n, justify="right")
    rows = list(ROWS) + [f"tts/{b}" for b in sorted({int(b) for b in tts if int(b) <= budget})]
    rows += sorted({k[len("eval/"):] for k in flat if k.endswith("/pass1") and k.count("/") == 2
                    and not k.startswith("eval/agent/")})  # extra splits: eval/<split>/pass1
    for m in rows:
        if m.count("/") == 1 and m.endswith("/pass1"):  # an extra split: eval/<split>/agent/<name>/pass1
            split_name = m.split("/")[0]
            cells = [_cell(flat, f"eval/{m}", n_seeds)] + [_cell(flat, f"eval/{split_name}/agent/{n}/pass1", n_seeds)
                                                           for n in names]
        else:
            cells = [_cell(flat, f"eval/{m}", n_seeds)] + [_cell(flat, f"eval/agent/{n}/{m}", n_seeds) for n in names]
        if any(cells):
            table.add_row(f"eval/{m}", *cells)
    console = Console() if sys.stdout.isatty() else Console(width=200)
    console.print(table)
