"""Calibration of the miniature world (issue 17, point 6): measured targets, per policy.

Targets (stated before any study): base Pass@1 on `test` 15–40 %; one-step repair rate >= the fresh-sample
pass rate on the same failing programs, for every policy and both feedback styles; the default run raises
`test_iid` Pass@1 with a paired 95 % CI above 0 (3 seeds).

Phases (each writes/updates benchmarks/results/calibration.json; run them in this order):

``warm``  builds the policies exactly as `python train.py` does (tokenizer, warm start, cache .cache/mars2)
          with the uncached ones trained in parallel processes (`warm_start_many`), and records the wall time.
``base``  per policy, on `test` and `test_iid`: fresh Pass@1 from ``--samples`` samples per problem (T=1);
          then for every failing fresh program of `test`, in each feedback style (vanilla, t_plus), one
          refinement with its real public-test feedback (the search's formatter and prompt) *and* one new
          fresh sample of the same problem — exactly the choice the search makes at that node (deepen or
          widen). ``repair_rate`` and ``fresh_pass_rate_on_failing`` are pass rates (hidden + public tests)
          of those two, with a paired bootstrap CI of their difference over the failing programs.
``rl``    per policy, for the finished default runs given with ``--runs`` (one per seed): Pass@1 on
          `test_iid` (and `test`) of the trained policy minus that of the warm-started one, on the same
          problems with the same sampling seed (the run's seed), paired bootstrap CI over problems x seeds
          (`mars2.metrics.stats.paired_bootstrap_ci`).

    PYTHONPATH=src python benchmarks/calibration.py warm [--policies qwen3_a llama_a qwen3_b] [overrides ...]
    PYTHONPATH=src python benchmarks/calibration.py base [--samples 4] [--n-problems 128]
    PYTHONPATH=src python benchmarks/calibration.py rl --runs outputs/.../seed0 outputs/.../seed1 ...
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
OUT = ROOT / "benchmarks" / "results" / "calibration.json"
STYLES = ("vanilla", "t_plus")


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _config(overrides: list[str]) -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    os.environ.setdefault("MARS2_ROOT", str(ROOT))
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["paths.output_dir=/tmp/mars2-calibration", *overrides])
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


def build_untrained(c: dict, pids: list[str], problems: dict):
    """Tokenizer and random-init tiny policies as `mars2.cli.build.build_policies` makes them."""
    from mars2.agents.models import build_policy
    from mars2.agents.tokenizer import build_tiny_tokenizer
    from mars2.schema import policy_spec, warm_start_config
    from mars2.tasks.minicode import corpus_texts

    cache = Path(c["paths"]["cache_dir"])
    tok = build_tiny_tokenizer(corpus_texts(problems["warmup"]), vocab_size=int(c["model"]["tokenizer"]["vocab_size"]),
                               cache_dir=cache / "tokenizers", role_prompts=[r["prompt"] for r in c["roles"]])
    models, toks, cfgs = {}, {}, {}
    for pid in pids:
        spec_d = dict(c["model"]["policies"][pid])
        models[pid], toks[pid] = build_policy(policy_spec(pid, spec_d), tok)
        cfgs[pid] = warm_start_config(c["model"].get("warm_start_defaults") or {}, spec_d.get("warm_start") or {},
                                      f"model.policies.{pid}")
    return models, toks, cfgs


def warm(c: dict, pids: list[str], problems: dict, sandbox, processes: int | None, progress: bool = False):
    from mars2.training.warm_start import warm_start_many

    models, toks, cfgs = build_untrained(c, pids, problems)
    t0 = time.time()
    stats = warm_start_many(models, toks, problems["warmup"], cfgs, Path(c["paths"]["cache_dir"]) / "warm_start",
                            sandbox=sandbox, progress=progress, role_prompts=[r["prompt"] for r in c["roles"]],
                            processes=processes)
    return models, toks, stats, time.time() - t0


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def _pass(ev) -> float:
    return float(ev.public_pass and ev.hidden_pass)


def fresh(backend, sandbox, pid, agent, probs, samples):
    """(per-sample pass list, programs, evaluations) of ``samples`` fresh solutions per problem."""
    from mars2.rollout.backend import GenerationRequest
    from mars2.agents.extraction import extract_program
    from mars2.agents.prompts import fresh_messages

    flat = [p for p in probs for _ in range(samples)]
    gens = backend.generate([GenerationRequest(pid, fresh_messages(p, agent)) for p in flat])
    progs = [extract_program(g.text) for g in gens]
    evs = sandbox.evaluate_many(list(zip(flat, progs)))
    return flat, progs, evs


def per_problem(flat, ok, probs) -> list[float]:
    by: dict[str, list[float]] = {}
    for p, v in zip(flat, ok):
        by.setdefault(p.id, []).append(v)
    return [sum(by[p.id]) / len(by[p.id]) for p in probs]


def repair_vs_fresh(backend, sandbox, pid, agent, fails, max_chars: int, seed: int) -> dict:
    """One refinement per (failing program, style) and one new fresh sample per failing program."""
    import numpy as np

    from mars2.rollout.backend import GenerationRequest
    from mars2.agents.extraction import extract_program
    from mars2.agents.prompts import fresh_messages, refine_messages
    from mars2.metrics.stats import paired_bootstrap_ci
    from mars2.sandbox.feedback import format_feedback

    out: dict = {"failing_programs": len(fails)}
    if not fails:
        return out
    f_gens = backend.generate([GenerationRequest(pid, fresh_messages(p, agent)) for p, _, _ in fails])
    f_ok = [_pass(e) for e in sandbox.evaluate_many([(p, extract_program(g.text)) for (p, _, _), g in zip(fails, f_gens)])]
    for style in STYLES:
        reqs = [GenerationRequest(pid, refine_messages(p, agent, prog, format_feedback(ev.public, style, max_chars)))
                for p, prog, ev in fails]
        gens = backend.generate(reqs)
        r_ok = [_pass(e) for e in sandbox.evaluate_many([(p, extract_program(g.text)) for (p, _, _), g in zip(fails, gens)])]
        m, lo, hi = paired_bootstrap_ci(np.array([r_ok]), np.array([f_ok]), seed=seed)
        out[style] = {"repair_rate": float(np.mean(r_ok)), "fresh_pass_rate_on_failing": float(np.mean(f_ok)),
                      "repair_minus_fresh": {"mean": m, "ci_low": lo, "ci_high": hi},
                      "repair_no_code_rate": float(np.mean([extract_program(g.text) is None for g in gens]))}
    return out


def cost(args, problems: dict, sandbox) -> dict:
    """Side by side, one process, ``--threads`` threads: seconds per warm-start step (batch 32, the real
    fresh + repair mix, after the first step) and per batch of 32 fresh generations (128 new tokens max) of
    every policy of each ``--models`` config. RL round cost scales with the same two numbers (rollout =
    generation, update = forward/backward of the same shapes)."""
    import dataclasses

    from mars2.agents.base import AgentSpec
    from mars2.rollout.backend import GenerationRequest
    from mars2.rollout.hf_backend import HFBackend
    from mars2.agents.prompts import fresh_messages
    from mars2.training.warm_start import warm_start

    out: dict = {}
    for name in args.models:
        c = _config([f"model={name}"])
        pids = args.policies or list(c["model"]["roster"])
        models, toks, cfgs = build_untrained(c, pids, problems)
        for pid in pids:
            cfg = dataclasses.replace(cfgs[pid], steps=args.steps, n_refine_pool=64, harvest_at=[], checkpoint_every=0)
            stamps: list[tuple[float, float]] = []
            warm_start(models[pid], toks[pid], problems["warmup"], cfg, None, sandbox=sandbox, progress=False, tag=pid,
                       role_prompts=[r["prompt"] for r in c["roles"]],
                       on_step=lambda s, l: stamps.append((time.time(), time.process_time())))
            n = max(1, len(stamps) - 1)
            step_wall, step_cpu = ((stamps[-1][i] - stamps[0][i]) / n for i in (0, 1))
            models[pid].eval()
            be = HFBackend({pid: models[pid]}, {pid: toks[pid]}, max_new_tokens=128, temperature=1.0, seed=0)
            agent = AgentSpec(name="a", role_prompt="", policy_id=pid)
            reqs = [GenerationRequest(pid, fresh_messages(p, agent)) for p in problems["test"][:32]]
            t, tc = time.time(), time.process_time()
            gens = be.generate(reqs)
            gen_s, gen_cpu = time.time() - t, time.process_time() - tc
            new_tokens = sum(len(g.response_ids) for g in gens)
            # CPU seconds (this process, 1 thread) are what the model costs; wall seconds depend on the load.
            out[f"{name}/{pid}"] = {"params": n_params(models[pid]), "warm_start_step_cpu_seconds": step_cpu,
                                    "warm_start_step_wall_seconds": step_wall, "generate_32_cpu_seconds": gen_cpu,
                                    "generate_32_wall_seconds": gen_s, "new_tokens": new_tokens,
                                    "generate_cpu_ms_per_token": 1000 * gen_cpu / max(1, new_tokens)}
            print(name, pid, json.dumps(out[f"{name}/{pid}"]), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("phase", choices=["warm", "base", "rl", "cost", "pool"])
    ap.add_argument("--inputs", nargs="*", default=[], help="pool: rl-phase json files (per-problem values) to pool")
    ap.add_argument("--models", nargs="*", default=["tiny", "small"], help="cost: model configs side by side")
    ap.add_argument("--steps", type=int, default=6, help="cost: warm-start steps timed per policy")
    ap.add_argument("--policies", nargs="*", default=None, help="default: the model's roster")
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--n-problems", type=int, default=0, help="first n problems of each split (0 = all)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--processes", type=int, default=None)
    ap.add_argument("--runs", nargs="*", default=[])
    ap.add_argument("--round", type=int, default=None,
                    help="rl: evaluate the runs' snapshot checkpoints/roundNNNN.ckpt (runs may still be running)")
    ap.add_argument("--splits", nargs="*", default=["test", "test_iid"], help="rl: held-out splits to compare on")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--note", default="")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides of conf/train.yaml")
    args, extra = ap.parse_known_args()  # Hydra overrides may come after the options too
    bad = [a for a in extra if a.startswith("-")]
    if bad:
        ap.error(f"unrecognized arguments: {' '.join(bad)}")
    args.overrides = list(args.overrides) + extra

    import numpy as np
    import torch

    from mars2.agents.base import AgentSpec
    from mars2.cli.build import build_backend, build_policies, build_sandbox, load_problems

    torch.set_num_threads(args.threads)
    load0 = os.getloadavg()
    c = _config(args.overrides)
    problems = load_problems(c)
    sandbox = build_sandbox(c)
    pids = args.policies or list(c["model"]["roster"])
    out_path = Path(args.out)
    res = _load(out_path)
    res.setdefault("targets", {
        "pass1_test": "15-40 % per policy",
        "repair_rate": ">= fresh_pass_rate_on_failing for every policy and both feedback styles",
        "rl_gain_test_iid": "paired 95 % CI above 0 (3 seeds, default run)"})
    res.setdefault("commands", {})
    res["commands"][args.phase] = "PYTHONPATH=src python benchmarks/calibration.py " + " ".join(sys.argv[1:])
    res.setdefault("machine", {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                               "note": "2 cores shared with ~6 other processes of other engineers: see loadavg"})
    res.setdefault("policies", {})
    res.setdefault("model", c["model"]["name"])
    t0 = time.time()
    phase: dict = {"loadavg_before": load0, "overrides": args.overrides, "note": args.note}

    if args.phase == "pool":  # rl runs measured in separate calls -> one paired CI over seeds x problems
        from mars2.metrics.stats import paired_bootstrap_ci

        runs = [r for f in args.inputs for r in _load(Path(f))["phases"]["rl"]["runs"]]
        runs.sort(key=lambda r: r["seed"])
        for pid in pids:
            entry = res["policies"].setdefault(pid, {})
            for split in args.splits:
                rows = [r["policies"][pid][split] for r in runs if split in r["policies"].get(pid, {})]
                if not rows:
                    continue
                a = np.array([r["trained_per_problem"] for r in rows])
                b = np.array([r["base_per_problem"] for r in rows])
                m, lo, hi = paired_bootstrap_ci(a, b, seed=0)
                entry[f"rl_gain_{split}"] = {"mean": m, "ci_low": lo, "ci_high": hi, "seeds": len(rows),
                                             "per_seed": [float(x) for x in (a - b).mean(axis=1)],
                                             "base": float(b.mean()), "trained": float(a.mean())}
        phase.update(inputs=args.inputs, runs=runs, splits=args.splits)
        phase_name = "rl"
    elif args.phase == "cost":
        phase["model_cost"] = cost(args, problems, sandbox)
    elif args.phase == "warm":
        models, _, stats, wall = warm(c, pids, problems, sandbox, args.processes)
        phase["wall_seconds"] = wall
        for pid in pids:
            st = stats.get(pid, {})
            res["policies"].setdefault(pid, {})["warm_start"] = {
                "params": n_params(models[pid]), "seconds": st.get("train_seconds") or st.get("seconds"),
                "final_loss": st.get("final_loss"), "cached": st.get("cached"), "n_refine": st.get("n_refine"),
                "n_self_refine": st.get("n_self_refine"), "harvest": st.get("harvest"),
                "parallel_processes": st.get("parallel_processes")}
    else:
        role = c["roles"][0]
        max_chars = int(c["search"].get("feedback_max_chars", 600))
        if args.phase == "base":
            models, toks, _ = build_policies(c, pids, problems, sandbox, progress=False)
            for m in models.values():
                m.eval()
            backend = build_backend(c, models, toks, seed=int(c["seed"]))
            for pid in pids:
                agent = AgentSpec(name=role["name"], role_prompt=role["prompt"], policy_id=pid)
                entry = res["policies"].setdefault(pid, {})
                entry["params"] = n_params(models[pid])
                t_p = time.time()
                for split in ("test", "test_iid"):
                    probs = problems[split][: args.n_problems or None]
                    flat, progs, evs = fresh(backend, sandbox, pid, agent, probs, args.samples)
                    ok = [_pass(e) for e in evs]
                    pp = per_problem(flat, ok, probs)
                    entry[f"pass1_{split}"] = float(np.mean(pp))
                    entry[f"pass1_{split}_by_depth"] = {
                        str(d): float(np.mean([v for p, v in zip(probs, pp) if p.difficulty == d]))
                        for d in sorted({p.difficulty for p in probs})}
                    entry[f"no_code_rate_{split}"] = float(np.mean([g is None for g in progs]))
                    if split == "test":
                        fails = [(p, prog, e) for p, prog, e, v in zip(flat, progs, evs, ok) if not v]
                        rep = repair_vs_fresh(backend, sandbox, pid, agent, fails, max_chars, int(c["seed"]))
                        entry["failing_programs"] = rep.pop("failing_programs")
                        entry["repair_rate"] = {s: rep[s]["repair_rate"] for s in STYLES if s in rep}
                        entry["fresh_pass_rate_on_failing"] = {s: rep[s]["fresh_pass_rate_on_failing"]
                                                               for s in STYLES if s in rep}
                        entry["repair_minus_fresh"] = {s: rep[s]["repair_minus_fresh"] for s in STYLES if s in rep}
                        entry["repair_no_code_rate"] = {s: rep[s]["repair_no_code_rate"] for s in STYLES if s in rep}
                entry["eval_seconds"] = time.time() - t_p
                print(pid, json.dumps(entry), flush=True)
            phase.update(samples=args.samples, n_problems={s: len(problems[s][: args.n_problems or None])
                                                           for s in ("test", "test_iid")})
        else:  # rl
            from mars2.metrics.stats import paired_bootstrap_ci

            if not args.runs:
                sys.exit("calibration.py rl: give the finished runs with --runs DIR ...")
            base_models, base_toks, _ = build_policies(c, pids, problems, sandbox, progress=False)
            diffs: dict[str, dict[str, list]] = {pid: {s: [] for s in args.splits} for pid in pids}
            per_run = []
            for run in args.runs:
                run = Path(run)
                rc = json.loads((run / "results.json").read_text()) if (run / "results.json").is_file() else {}
                seed = int(rc["config"]["seed"])
                if args.round is not None:  # a snapshot of a (possibly still running) run
                    from mars2.cli.evaluate import load_checkpoint_policies

                    ck = run / "checkpoints" / f"round{args.round:04d}.ckpt"
                    if not ck.is_file():
                        sys.exit(f"calibration.py rl: no snapshot {ck}")
                    trained = list(pids)
                    t_models, t_toks, _ = build_policies(c, trained, problems, sandbox, progress=False, warm=False)
                    rounds_done = load_checkpoint_policies(t_models, ck)
                else:
                    if rc.get("status") != "completed":
                        sys.exit(f"calibration.py rl: {run} is not a completed run (status {rc.get('status')!r}); "
                                 f"use --round N for a snapshot")
                    trained = [p for p in pids if (run / "policies" / p).is_dir()]
                    t_models, t_toks, _ = build_policies(c, trained, problems, sandbox, weights_dir=run / "policies",
                                                         progress=False)
                    rounds_done = int(rc["config"].get("rounds", -1))
                row = {"run": str(run), "seed": seed, "rounds_done": rounds_done, "policies": {}}
                for pid in trained:
                    agent = AgentSpec(name=role["name"], role_prompt=role["prompt"], policy_id=pid)
                    for split in args.splits:
                        probs = problems[split][: args.n_problems or None]
                        vals = {}
                        for tag, mdl, tk in (("base", base_models[pid], base_toks[pid]),
                                             ("trained", t_models[pid], t_toks[pid])):
                            mdl.eval()
                            backend = build_backend(c, {pid: mdl}, {pid: tk}, seed=seed)
                            flat, _, evs = fresh(backend, sandbox, pid, agent, probs, args.samples)
                            vals[tag] = per_problem(flat, [_pass(e) for e in evs], probs)
                        diffs[pid][split].append((vals["trained"], vals["base"]))
                        row["policies"].setdefault(pid, {})[split] = {
                            "base": float(np.mean(vals["base"])), "trained": float(np.mean(vals["trained"])),
                            # per problem, so that runs measured in separate calls can be pooled (paired CI)
                            "base_per_problem": [float(v) for v in vals["base"]],
                            "trained_per_problem": [float(v) for v in vals["trained"]]}
                per_run.append(row)
                print(json.dumps(row), flush=True)
            for pid in pids:
                entry = res["policies"].setdefault(pid, {})
                for split in args.splits:
                    pairs = diffs[pid][split]
                    if not pairs:
                        continue
                    a = np.array([t for t, _ in pairs])
                    b = np.array([bb for _, bb in pairs])
                    m, lo, hi = paired_bootstrap_ci(a, b, seed=0)
                    entry[f"rl_gain_{split}"] = {"mean": m, "ci_low": lo, "ci_high": hi, "seeds": len(pairs),
                                                 "per_seed": [float(x) for x in (a - b).mean(axis=1)]}
            phase["runs"] = per_run
            phase.update(samples=args.samples, splits=args.splits,
                         n_problems={s: len(problems[s][: args.n_problems or None]) for s in args.splits})
    phase["seconds"] = time.time() - t0
    phase["loadavg_after"] = os.getloadavg()
    res.setdefault("phases", {})[phase_name if args.phase == "pool" else args.phase] = phase
    # Merge into the file as it is now (another phase may have written it meanwhile): this phase's keys win.
    now = _load(out_path)
    for k, v in res.items():
        if k == "policies":
            for pid, entry in v.items():
                now.setdefault("policies", {}).setdefault(pid, {}).update(entry)
        elif isinstance(v, dict) and isinstance(now.get(k), dict):
            now[k].update(v)
        else:
            now[k] = v
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(now, indent=2) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
