"""Body of `python evaluate.py`: Pass@1, Pass@1(MCTS), Pass@N, avg_pass1 and TTS on held-out problems,
printed as a table and written to results.json in the evaluation's run dir (method.md §7)."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from mars2.config import ConfigError
from mars2.resources import SetupError


def run_evaluate(cfg: DictConfig) -> dict[str, float]:
    from omegaconf.errors import OmegaConfBaseException

    try:
        c = OmegaConf.to_container(cfg, resolve=True)
        weights_dir = None
        if c.get("ckpt"):
            run = Path(c["ckpt"])
            saved = run / ".hydra" / "config.yaml"
            if not saved.is_file() or not (run / "policies").is_dir():
                raise SetupError(
                    f"ckpt={run} is not a finished train.py run dir (expected {saved} and {run / 'policies'}/)"
                )
            train_c = OmegaConf.to_container(OmegaConf.load(saved), resolve=False)
            for key in ("paradigm", "model", "task", "roles"):
                c[key] = train_c[key]
            c = OmegaConf.to_container(OmegaConf.create(c), resolve=True)
            weights_dir = run / "policies"
        return evaluate(c, weights_dir)
    except (ConfigError, SetupError, OmegaConfBaseException) as e:
        print(f"mars2: {e}", file=sys.stderr)
        sys.exit(2)


def evaluate(c: dict[str, Any], weights_dir: Path | None) -> dict[str, float]:
    import torch

    from mars2.agents.team import team_policies
    from mars2.cli.build import build_backend, build_policies, build_sandbox, load_problems, make_team, preflight, search_config
    from mars2.evaluation import evaluate_team
    from mars2.tracking.records import config_summary, write_json_atomic

    threads = c.get("trainer", {}).get("num_threads")
    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(int(c["seed"]))
    agents = make_team(c)
    if weights_dir is None:
        preflight(c, agents)
    out = Path(c["paths"]["output_dir"])
    problems = load_problems(c)
    ev = c["eval"]
    test = problems[ev["split"]]
    if int(ev.get("n_problems") or 0):
        test = test[: int(ev["n_problems"])]
    sandbox = build_sandbox(c)
    try:
        models, tokenizers, _ = build_policies(c, team_policies(agents), problems, sandbox, weights_dir=weights_dir)
        backend = build_backend(c, models, tokenizers, seed=int(c["seed"]))
        t0 = time.time()
        metrics, trees = evaluate_team(
            backend, sandbox, agents, test, search_config(ev["search"]), budget=int(ev["budget"]),
            mode=ev["mode"], pass1_samples=int(ev["pass1_samples"]), tts_budgets=list(ev["tts_budgets"]),
            seed=int(c["seed"]) + 7919,
        )
    finally:
        sandbox.close()
    from mars2.search.serialize import tree_to_dict

    summary = {**config_summary({**c, "rl": {"loss": None, "shaping": None}, "search": ev["search"]}),
               "ckpt": c.get("ckpt"), "eval_mode": ev["mode"], "n_problems": len(test)}
    write_json_atomic(out / "results.json", {"status": "completed", "config": summary, "final": metrics,
                                             "wall_s": time.time() - t0})
    (out / "trees.json").write_text(json.dumps({k: [tree_to_dict(t) for t in ts] for k, ts in trees.items()}))
    print_table(metrics, agents)
    return metrics


def print_table(metrics: dict[str, float], agents) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="mars2 evaluation")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("95% CI", justify="right")
    for key in ("eval/pass1", "eval/pass1_mcts", "eval/pass_at_n", "eval/avg_pass1"):
        if key in metrics:
            lo, hi = metrics.get(f"{key}_lo"), metrics.get(f"{key}_hi")
            table.add_row(key, f"{metrics[key]:.3f}", f"[{lo:.3f}, {hi:.3f}]" if lo is not None else "")
    for a in agents:
        for key in (f"eval/agent/{a.name}/pass1", f"eval/agent/{a.name}/pass1_mcts"):
            if key in metrics:
                table.add_row(key, f"{metrics[key]:.3f}", "")
    for key in sorted(k for k in metrics if "/tts/" in k and k.startswith("eval/tts")):
        table.add_row(key, f"{metrics[key]:.3f}", "")
    Console().print(table)
