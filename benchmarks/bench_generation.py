"""Generation throughput of the HF backend on the tiny presets (design.md "Facts measured on this machine").

Tokens/s of `HFBackend.generate` (sampling, T=1, 128 new tokens, KV cache, left padding) at batch 1, 16
and 64 on minicode fresh-solution prompts, for each tiny preset of conf/model/tiny.yaml, random-init (a
random model almost never emits eos, so every row generates the full 128 tokens: a clean per-token
measure). For reference the same batch through ``model.generate`` (HF's own loop, no log-probs). Results
go to benchmarks/results/generation.json.

    PYTHONPATH=src python benchmarks/bench_generation.py [--threads 2] [--repeats 3]
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

import torch  # noqa: E402

from mars2.agents.base import AgentSpec, GenerationRequest  # noqa: E402
from mars2.agents.hf_backend import HFBackend  # noqa: E402
from mars2.agents.models import PolicySpec, build_policy, count_parameters  # noqa: E402
from mars2.agents.prompts import fresh_messages  # noqa: E402
from mars2.agents.tokenizer import build_tiny_tokenizer  # noqa: E402
from mars2.tasks.minicode import corpus_texts, generate_minicode  # noqa: E402

PRESETS = {  # = conf/model/tiny.yaml policies
    "qwen3_a": PolicySpec("qwen3_a", "qwen3", 128, 4, 4, 2, 32, 384, seed=1),
    "llama_a": PolicySpec("llama_a", "llama", 160, 3, 5, 5, 32, 320, seed=2),
    "qwen3_b": PolicySpec("qwen3_b", "qwen3", 96, 6, 3, 1, 32, 288, seed=3),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batches", default="1,16,64")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "generation.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    splits = generate_minicode(seed=0, n_warmup=2000, n_train=8, n_test=64)
    tok = build_tiny_tokenizer(corpus_texts(splits["warmup"]), 1024)
    agent = AgentSpec("solver", "You are an expert Python programmer. Solve the task exactly as stated.", "p")
    prompts = [fresh_messages(p, agent) for p in splits["test"]]
    results = []
    load_before = os.getloadavg()
    for name, spec in PRESETS.items():
        model, _ = build_policy(spec, tok)
        be = HFBackend({name: model}, {name: tok}, max_new_tokens=args.max_new_tokens, seed=0)
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
                n_tok = int((new != tok.pad_token_id).sum())
                hf_rates.append(n_tok / (time.perf_counter() - t))
            row = {"preset": name, "params": count_parameters(model), "batch": bs,
                   "tokens_per_s": round(max(rates)), "tokens_per_s_median": round(sorted(rates)[len(rates) // 2]),
                   "hf_generate_tokens_per_s": round(max(hf_rates))}
            results.append(row)
            print(json.dumps(row), flush=True)
    record = {
        "benchmark": "hf generation, sampling T=1, random-init tiny presets, minicode fresh prompts",
        "max_new_tokens": args.max_new_tokens, "threads": args.threads, "repeats": args.repeats,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "loadavg_before": [round(x, 2) for x in load_before],
                    "loadavg_after": [round(x, 2) for x in os.getloadavg()]},
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
