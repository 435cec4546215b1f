"""Write tiny random-init checkpoints in the real Hugging Face format for `model=real_tiny` (issue 14).

    python scripts/make_real_tiny.py                 # → models/real_tiny/{Qwen3-tiny,Llama-tiny}
    python scripts/make_real_tiny.py --out DIR       # → DIR/{Qwen3-tiny,Llama-tiny} (e.g. ${paths.models_dir}/real_tiny)

Each folder is what a downloaded checkpoint looks like: ``config.json`` / ``generation_config.json``,
``model.safetensors`` (bf16) written by ``save_pretrained``, and a tokenizer saved in the HF format
(``tokenizer.json``, ``tokenizer_config.json`` with its chat template). The models are a
``Qwen3ForCausalLM`` and a ``LlamaForCausalLM`` with random weights (fixed seeds); the tokenizer is the tiny
byte-level BPE of the miniature (mars2.agents.tokenizer), trained on the minicode warm-up corpus. So
``model=real_tiny`` goes through the real-scale loading path (``scale: real``: ``from_pretrained`` from a
path, tokenizer from the folder, no warm start) on a CPU in seconds. Deterministic: the same command writes
the same weights. Never touches the network."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

#: folder name → (architecture, seed, tied embeddings); sizes shared. Folder names are what
#: conf/model/real_tiny.yaml expects. Qwen3 small checkpoints tie their embeddings, Llama-3 8B does not.
POLICIES = {"Qwen3-tiny": ("qwen3", 11, True), "Llama-tiny": ("llama", 12, False)}
SIZES = dict(hidden_size=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32, intermediate_size=128,
             max_position_embeddings=2048)
VOCAB = 1024


def build_tokenizer(cache_dir: Path | None = None):
    from mars2.agents.tokenizer import build_tiny_tokenizer
    from mars2.tasks.minicode import corpus_texts
    from mars2.tasks.registry import load_task

    import yaml

    warmup = load_task("minicode", seed=0, n_warmup=200, n_train=8, n_test=4, n_test_iid=0)["warmup"]
    roles = yaml.safe_load((Path(__file__).resolve().parents[1] / "conf" / "roles" / "default.yaml").read_text())["roles"]
    return build_tiny_tokenizer(corpus_texts(warmup), vocab_size=VOCAB, cache_dir=cache_dir,
                                role_prompts=[r["prompt"] for r in roles])  # the configured roles, as train.py


def write(out: Path, cache_dir: Path | None = None) -> list[Path]:
    """Write every checkpoint under ``out``; returns the folders."""
    import torch

    from mars2.agents.models import PolicySpec, build_policy

    tok = build_tokenizer(cache_dir)
    folders = []
    for name, (arch, seed, tied) in POLICIES.items():
        spec = PolicySpec(id=name, arch=arch, seed=seed, dtype="float32", tie_embeddings=tied, **SIZES)
        model, _ = build_policy(spec, tok)  # random init from the seed, eos/pad ids from the tokenizer
        model = model.to(torch.bfloat16)  # real checkpoints ship in bf16
        folder = out / name
        folder.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(folder, safe_serialization=True)
        tok.save_pretrained(folder)
        folders.append(folder)
    return folders


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "real_tiny",
                    help="folder to write the checkpoints into (default: models/real_tiny)")
    args = ap.parse_args(argv)
    for folder in write(args.out, cache_dir=ROOT / ".cache" / "mars2" / "tokenizers"):
        print(folder)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
