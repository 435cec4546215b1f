"""Calibration of the supervised warm start (issue 6 target: held-out Pass@1 of the warm-started tiny
policies between ~10 % and 50 %, and refinement that repairs some failing programs).

Builds the policies of the default config exactly as `python train.py` does (same tokenizer, same warm
start, same cache under .cache/mars2), then per policy on held-out `test` problems:

- fresh Pass@1: ``--samples`` fresh solutions per problem at T=1 (hidden + public tests);
- repair rate: every failing fresh program is refined once with its real public-test feedback (vanilla
  refinement prompt, method.md §1); the share of those refinements that pass all tests.

Results go to benchmarks/results/warm_start.json (the v1 world: vanilla repair data only). The v2 calibration
(issue 17: both feedback styles, repair vs a fresh sample on the *same* failing programs, `test_iid`, RL gain
with paired CIs) is benchmarks/calibration.py → benchmarks/results/calibration.json.

    PYTHONPATH=src python benchmarks/calibrate_warm_start.py [--samples 4] [overrides ...]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--split", default="test")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "warm_start.json"))
    ap.add_argument("--run", default=None, help="a finished run dir: evaluate its trained policies/ instead")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml, e.g. model.policies.qwen3_a.warm_start.steps=200")
    args = ap.parse_args()

    import torch
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from mars2.agents.base import AgentSpec
    from mars2.rollout.backend import GenerationRequest
    from mars2.agents.extraction import extract_program
    from mars2.agents.prompts import fresh_messages, refine_messages
    from mars2.cli.build import build_backend, build_policies, build_sandbox, load_problems
    from mars2.sandbox.feedback import format_feedback

    torch.set_num_threads(args.threads)
    os.environ.setdefault("MARS2_ROOT", str(ROOT))
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_dir=/tmp/mars2-calibrate", *args.overrides])
    c = OmegaConf.to_container(cfg, resolve=True)
    t0 = time.time()
    problems = load_problems(c)
    sandbox = build_sandbox(c)
    roster = list(c["model"]["roster"])
    if args.run:
        roster = [p.name for p in sorted((Path(args.run) / "policies").iterdir()) if p.is_dir()]
        models, toks, warm = build_policies(c, roster, problems, sandbox, weights_dir=Path(args.run) / "policies")
    else:
        models, toks, warm = build_policies(c, roster, problems, sandbox)
    for m in models.values():
        m.eval()
    backend = build_backend(c, models, toks, seed=int(c["seed"]))
    held = problems[args.split]
    role = c["roles"][0]
    out = {"command": "PYTHONPATH=src python benchmarks/calibrate_warm_start.py " + " ".join(sys.argv[1:]),
           "machine": {"cpu": platform.processor() or platform.machine(), "threads": args.threads},
           "split": args.split, "n_problems": len(held), "samples": args.samples, "policies": {}}
    for pid in roster:
        agent = AgentSpec(name=role["name"], role_prompt=role["prompt"], policy_id=pid)
        reqs = [GenerationRequest(pid, fresh_messages(p, agent)) for p in held for _ in range(args.samples)]
        probs = [p for p in held for _ in range(args.samples)]
        t_gen = time.time()
        gens = backend.generate(reqs)
        progs = [extract_program(g.text) for g in gens]
        evs = sandbox.evaluate_many(list(zip(probs, progs)))
        ok = [float(e.public_pass and e.hidden_pass) for e in evs]
        by_depth: dict[int, list[float]] = {}
        for p, v in zip(probs, ok):
            by_depth.setdefault(int(p.difficulty), []).append(v)
        fails = [(p, prog, e) for p, prog, e, v in zip(probs, progs, evs, ok) if not v]
        ref_reqs = [GenerationRequest(pid, refine_messages(p, agent, prog, format_feedback(e.public, "vanilla", 600)))
                    for p, prog, e in fails]
        ref_gens = backend.generate(ref_reqs) if ref_reqs else []
        ref_evs = sandbox.evaluate_many([(p, extract_program(g.text)) for (p, _, _), g in zip(fails, ref_gens)])
        repaired = [float(e.public_pass and e.hidden_pass) for e in ref_evs]
        ws = warm.get(pid, {})
        out["policies"][pid] = {
            "pass1": sum(ok) / len(ok),
            "pass1_by_depth": {d: sum(v) / len(v) for d, v in sorted(by_depth.items())},
            "problems_solved_any": sum(1 for i in range(len(held)) if any(ok[i * args.samples:(i + 1) * args.samples])) / len(held),
            "no_code_rate": sum(1 for g in progs if g is None) / len(progs),
            "refine_attempts": len(repaired),
            "repair_rate": sum(repaired) / max(1, len(repaired)),
            "warm_start_seconds": ws.get("train_seconds") or ws.get("seconds"),
            "warm_start_final_loss": ws.get("final_loss"),
            "eval_seconds": time.time() - t_gen,
        }
        print(pid, json.dumps(out["policies"][pid]), flush=True)
    out["total_seconds"] = time.time() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
