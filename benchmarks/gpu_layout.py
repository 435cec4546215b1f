"""GPU layout and memory on paper of the real presets (issue 14.4): which GPUs hold which vLLM engine,
which are training ranks, and GiB per GPU (mars2.agents.placement.memory_plan).

    .venv/bin/python benchmarks/gpu_layout.py      # writes benchmarks/results/gpu_layout.json

No GPU needed: the shapes below are the public configs of the checkpoints (parameters, layers, KV heads,
head dim, hidden size, vocabulary); the rosters and `gpus` come from conf/model/{8b,14b,32b}.yaml."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from omegaconf import OmegaConf  # noqa: E402

from mars2.agents.placement import GIB, PolicyShape, memory_plan  # noqa: E402

# (params, layers, kv_heads, head_dim, hidden, vocab) of the public configs
ARCH = {
    "Qwen/Qwen3-8B": (8.19e9, 36, 8, 128, 4096, 151936),
    "inclusionAI/AReaL-boba-2-8B": (8.19e9, 36, 8, 128, 4096, 151936),          # Qwen3-8B fine-tune
    "Qwen/Qwen3-14B": (14.77e9, 40, 8, 128, 5120, 151936),
    "inclusionAI/AReaL-boba-2-14B": (14.77e9, 40, 8, 128, 5120, 151936),        # Qwen3-14B fine-tune
    "agentica-org/DeepCoder-14B-Preview": (14.77e9, 48, 8, 128, 5120, 152064),  # R1-Distill-Qwen-14B (Qwen2.5)
    "Qwen/Qwen3-32B": (32.76e9, 64, 8, 128, 5120, 151936),
    "nvidia/OpenReasoning-Nemotron-32B": (32.76e9, 64, 8, 128, 5120, 152064),   # Qwen2.5-32B based
}
# name: (training ranks = GPUs over all nodes, GiB per GPU); engines always on node 0 (rank 0 starts them)
NODES = {"1 node 8x80GiB": (8, 80.0), "1 node 8x141GiB": (8, 141.0), "2 nodes 16x80GiB": (16, 80.0),
         "4 nodes 32x80GiB": (32, 80.0)}
HEADROOM_GIB = 8.0
# training sequence a rank holds at once: (tokens, response tokens whose logits are computed)
LENGTHS = {"seq_36864": (4096 + 32768, 32768), "seq_8192": (8192, 4096)}  # CUDA context, NCCL buffers, allocator fragmentation, one recomputed layer


def shapes(size: str) -> dict[str, PolicyShape]:
    m = OmegaConf.load(ROOT / "conf" / "model" / f"{size}.yaml")["model"]
    out = {}
    for pid in m["roster"]:
        spec = m["policies"][pid]
        params, layers, kv, hd, hidden, vocab = ARCH[spec["hf_id"]]
        out[pid] = PolicyShape(params=params, kv_bytes_per_token=2 * layers * kv * hd * 2, gpus=int(spec["gpus"]),
                               hidden=hidden, layers=layers, vocab=vocab)
    return out


def main() -> None:
    load0 = os.getloadavg()
    seq = 4096 + 32768  # max prompt + max response tokens (conf/model/*.yaml: MARTI's L_max)
    report = {"command": "python benchmarks/gpu_layout.py", "load_before": load0, "headroom_gib": HEADROOM_GIB,
              "sequence_tokens": seq, "assumptions": {
                  "training": "FSDP FULL_SHARD over every GPU of the node (trainer.devices: auto), all policies of "
                              "the team in one sharded module; bf16-mixed: fp32 master weights + fp32 grads + AdamW "
                              "m, v = 16 B/param, divided by the ranks",
                  "engines": "one vLLM engine per policy on its own consecutive GPUs (model.policies.*.gpus = tensor "
                             "parallel size), colocated with the training ranks; bf16 weights 2 B/param / tp",
                  "activations": "one training sequence per rank at a time (seq_36864: max prompt + max response; "
                                 "seq_8192: 4096 + 4096), per-layer activation checkpointing (layer inputs) + the "
                                 "response logits in bf16 and one fp32 copy",
                  "kv": "the KV cache left on the fullest engine GPU, as sequences of that length it holds at once"},
              "presets": {}}
    for size in ("8b", "14b", "32b"):
        sh = shapes(size)
        entry = {"team": {p: {"gpus": s.gpus, "params_b": s.params / 1e9, "kv_kib_per_token": s.kv_bytes_per_token / 1024}
                          for p, s in sh.items()}}
        for node, (n, gib) in NODES.items():
            for label, (tokens, response) in LENGTHS.items():
                plan = memory_plan(sh, gpu_gib=gib, n_gpus=n, headroom_gib=HEADROOM_GIB, train_tokens=tokens,
                                   logit_tokens=response)
                worst = max((d for d in plan["per_gpu"].values() if d["engine_weights"] > 0), key=lambda d: d["total"])
                free = gib - worst["total"]
                kv_per_seq = {p: tokens * s.kv_bytes_per_token / s.gpus / GIB for p, s in sh.items()}
                entry.setdefault(node, {"placement": plan["placement"],
                                        "training_ranks": f"0-{n - 1} (all GPUs of {n // 8} node(s))",
                                        "train_state_gib_per_gpu": round(plan["train_state_gib_per_gpu"], 1),
                                        "engine_weights_gib_per_gpu": {p: round(s.params * 2 / s.gpus / GIB, 1)
                                                                       for p, s in sh.items()}})
                entry[node][label] = {
                    "activations_gib": round(worst["activations"], 1),
                    "static_gib_on_engine_gpu": round(worst["total"], 1),
                    "kv_gib_left_on_engine_gpu": round(free, 1),
                    "sequences_in_kv": {p: int(max(0.0, free) // v) for p, v in kv_per_seq.items()},
                    "fits": free > 0,
                }
        report["presets"][size] = entry
    report["load_after"] = os.getloadavg()
    report["time"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = ROOT / "benchmarks" / "results" / "gpu_layout.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    for size, e in report["presets"].items():
        for node in NODES:
            r = e[node]
            cells = "  ".join(f"{lab}: act {r[lab]['activations_gib']} GiB, KV left {r[lab]['kv_gib_left_on_engine_gpu']} GiB"
                              for lab in LENGTHS)
            print(f"{size:>4} {node:<18} train {r['train_state_gib_per_gpu']:>5} GiB/GPU  {cells}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
