"""Train-step time: mars2's GSPO step vs TRL's GRPOTrainer step on the same tiny model and batch (issue 8).

One step = policy loss (forward) + backward + grad-norm clip 1.0 + AdamW step + zero_grad, on one policy of
conf/model/tiny.yaml (qwen3_a) and one batch of 16 samples of ~150 tokens (real minicode prompts rendered with
the chat template, ~70 sampled response tokens). Generation, reward and old-log-prob passes are excluded on
both sides (TRL computes them in `_generate_and_score_completions`, mars2 in the rollout / data stream).

* mars2: `mars2.rl.objective.policy_loss` (GSPO, ε 0.2) on the `collate`d batch, as
  `MarsModule.training_step` runs it; also timed through a Lightning Trainer (`MarsModule` + manual
  optimisation) to include the framework's per-step overhead.
* TRL: `GRPOTrainer.training_step` (HF Trainer: compute_loss + accelerator.backward) with
  `_prepare_inputs` short-circuited to the ready batch, then the HF loop's clip / optimizer / scheduler /
  zero_grad; GSPO = ``importance_sampling_level="sequence"``, ``loss_type="grpo"`` (TRL's documented GSPO setup).
* KL: both without (TRL computes reference log-probs outside its training step, so with a KL term the steps
  would not be comparable); mars2 with its in-step k3 KL (reference forward) is reported separately.

Both share one process and one torch thread (the machine has 2 shared cores); runs alternate A/B in blocks
so load drift hits both. TRL lives in a throwaway venv that sees the project's packages:

    python -m venv /tmp/trlvenv
    echo "$PWD/.venv/lib/python3.11/site-packages" > /tmp/trlvenv/lib/python3.11/site-packages/main.pth
    /tmp/trlvenv/bin/pip install --no-deps trl==1.16.0 accelerate datasets psutil dill multiprocess
    PYTHONPATH=src /tmp/trlvenv/bin/python benchmarks/bench_train_step.py

Without trl importable only the mars2 numbers are measured. Results: benchmarks/results/train_step.json."""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def build_world(batch: int, resp_len: int, seed: int = 0):
    """The tiny qwen3_a policy, its tokenizer and `batch` samples (prompt ids from real minicode problems)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from mars2.agents.base import AgentSpec
    from mars2.rollout.hf_backend import chat_prompt_ids
    from mars2.agents.models import PolicySpec, build_policy
    from mars2.agents.prompts import fresh_messages
    from mars2.agents.tokenizer import build_tiny_tokenizer
    from mars2.cli.build import load_problems, pick
    from mars2.rl.samples import Sample
    from mars2.tasks.minicode import corpus_texts

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=["task.n_train=64", "task.n_test=8", "paths.output_dir=/tmp"])
    c = OmegaConf.to_container(cfg, resolve=True)
    problems = load_problems(c)
    tok = build_tiny_tokenizer(corpus_texts(problems["warmup"]), vocab_size=int(c["model"]["tokenizer"]["vocab_size"]),
                               cache_dir=ROOT / ".cache" / "mars2" / "tokenizers",
                               role_prompts=[r["prompt"] for r in c["roles"]])
    spec = pick(PolicySpec, c["model"]["policies"]["qwen3_a"], id="qwen3_a")
    model, _ = build_policy(spec, tok)
    agent = AgentSpec("solver", c["roles"][0]["prompt"], "qwen3_a")
    g = torch.Generator().manual_seed(seed)
    samples = []
    for i in range(batch):
        prompt = chat_prompt_ids(tok, fresh_messages(problems["train"][i], agent))
        n = resp_len + int(torch.randint(-20, 21, (1,), generator=g))
        resp = torch.randint(3, len(tok), (n,), generator=g).tolist()
        samples.append(Sample(policy_id="qwen3_a", agent_id=0, agent_name="solver", tree_id=str(i), node_id=1,
                              step=0, prompt_ids=prompt, response_ids=resp, reward=float(i % 2),
                              shaped_reward=float(i % 2), advantage=float(torch.randn(1, generator=g)),
                              rollout_logprobs=[]))
    return c, model, tok, samples


class Mars2Step:
    def __init__(self, c, model, samples, pad_id: int, kl: bool) -> None:
        import copy

        from mars2.rl.collate import collate
        from mars2.rl.objective import LossConfig, compute_old_logprobs

        self.model = model
        optim = c["model"]["optim"]
        self.cfg = LossConfig(loss="gspo", eps_low=0.2, eps_high=0.2, kl_coef=1e-3 if kl else 0.0)
        self.ref = copy.deepcopy(model).eval().requires_grad_(False) if kl else None
        compute_old_logprobs(model, samples, pad_id)
        self.batch = collate(samples, pad_id)
        self.opt = torch.optim.AdamW(model.parameters(), lr=float(optim["lr"]), betas=tuple(optim["betas"]),
                                     weight_decay=float(optim["weight_decay"]))
        self.clip = float(optim["grad_clip"])

    def step(self) -> float:
        from mars2.rl.objective import policy_loss

        self.model.train()
        loss, _ = policy_loss(self.model, self.ref, self.batch, self.cfg)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    def padded_tokens(self) -> int:
        return int(self.batch["input_ids"].numel())


class TRLStep:
    def __init__(self, c, model, tok, samples, tmp: Path, grad_ckpt: bool = False) -> None:
        from datasets import Dataset
        from trl import GRPOConfig, GRPOTrainer

        optim = c["model"]["optim"]
        n = len(samples)
        args = GRPOConfig(
            output_dir=str(tmp), use_cpu=True, report_to=[], bf16=False, fp16=False, seed=0,
            per_device_train_batch_size=n, num_generations=n // 2, gradient_accumulation_steps=1,
            learning_rate=float(optim["lr"]), adam_beta1=float(optim["betas"][0]), adam_beta2=float(optim["betas"][1]),
            weight_decay=float(optim["weight_decay"]), max_grad_norm=float(optim["grad_clip"]), lr_scheduler_type="constant",
            warmup_steps=0, beta=0.0, epsilon=0.2, loss_type="grpo", importance_sampling_level="sequence",
            max_completion_length=max(len(s.response_ids) for s in samples), logging_steps=10**9, save_strategy="no",
            disable_tqdm=True, dataloader_num_workers=0,
            gradient_checkpointing=grad_ckpt,  # TRL's default is True; mars2 does not recompute activations
        )
        data = Dataset.from_dict({"prompt": ["x"] * n})
        self.trainer = GRPOTrainer(model=model, reward_funcs=[lambda completions, **kw: [0.0] * len(completions)],
                                   args=args, train_dataset=data, processing_class=tok)
        self.trainer.create_optimizer_and_scheduler(num_training_steps=10_000)
        self.trainer._prepare_inputs = lambda inputs: inputs  # the batch is ready: no generation in the step
        self.trainer.current_gradient_accumulation_steps = 1  # set by the HF training loop it replaces
        self.model = self.trainer.model
        if grad_ckpt:  # what the HF training loop (bypassed here) does when args.gradient_checkpointing is set
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.grad_ckpt = bool(getattr(self.model, "is_gradient_checkpointing", False))
        self.inputs = self._inputs(samples, tok.pad_token_id)

    @staticmethod
    def _inputs(samples, pad: int) -> dict[str, torch.Tensor]:
        """TRL's layout: left-padded prompts, right-padded completions (what _generate_and_score_completions
        returns), advantages per sequence, old log-probs absent (= on-policy, TRL uses detach())."""
        b = len(samples)
        p = max(len(s.prompt_ids) for s in samples)
        r = max(len(s.response_ids) for s in samples)
        prompt_ids = torch.full((b, p), pad)
        prompt_mask = torch.zeros((b, p), dtype=torch.long)
        completion_ids = torch.full((b, r), pad)
        completion_mask = torch.zeros((b, r), dtype=torch.long)
        for i, s in enumerate(samples):
            prompt_ids[i, p - len(s.prompt_ids):] = torch.tensor(s.prompt_ids)
            prompt_mask[i, p - len(s.prompt_ids):] = 1
            completion_ids[i, :len(s.response_ids)] = torch.tensor(s.response_ids)
            completion_mask[i, :len(s.response_ids)] = 1
        return {
            "prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask, "advantages": torch.tensor([s.advantage for s in samples]),
            "num_items_in_batch": completion_mask.sum(),
        }

    def step(self) -> float:
        t = self.trainer
        loss = t.training_step(self.model, self.inputs, num_items_in_batch=None)
        t.accelerator.clip_grad_norm_(self.model.parameters(), t.args.max_grad_norm)
        t.optimizer.step()
        t.lr_scheduler.step()
        self.model.zero_grad()
        return float(loss)

    def padded_tokens(self) -> int:
        return int(self.inputs["prompt_ids"].numel() + self.inputs["completion_ids"].numel())


def lightning_step_time(c, model, samples, pad_id: int, steps: int) -> float:
    """Median seconds per step of `MarsModule.training_step` driven by a Lightning Trainer (framework overhead
    included), on the same batch repeated."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader, IterableDataset

    from mars2.rl.collate import collate
    from mars2.rl.objective import LossConfig, compute_old_logprobs
    from mars2.training.module import MarsModule

    compute_old_logprobs(model, samples, pad_id)
    batch = collate(samples, pad_id)
    batch["policy_id"] = "qwen3_a"

    class Repeat(IterableDataset):
        def __iter__(self):
            for _ in range(steps):
                yield batch

    times: list[float] = []

    class Timer(pl.Callback):
        def on_train_batch_start(self, *a):
            self.t = time.perf_counter()

        def on_train_batch_end(self, *a):
            times.append(time.perf_counter() - self.t)

    module = MarsModule({"qwen3_a": model}, LossConfig(kl_coef=0.0), c["model"]["optim"])
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[Timer()])
    trainer.fit(module, DataLoader(Repeat(), batch_size=None))
    return statistics.median(times[3:])


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--resp-len", type=int, default=70)
    ap.add_argument("--steps", type=int, default=10, help="timed steps per block")
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "train_step.json"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    import copy
    import tempfile

    c, model, tok, samples = build_world(a.batch, a.resp_len)
    pad = int(tok.pad_token_id)
    tokens = [len(s.prompt_ids) + len(s.response_ids) for s in samples]
    runners = {"mars2": Mars2Step(c, copy.deepcopy(model), samples, pad, kl=False),
               "mars2_kl": Mars2Step(c, copy.deepcopy(model), samples, pad, kl=True)}
    trl_version = None
    try:
        import trl

        trl_version = trl.__version__
        runners["trl"] = TRLStep(c, copy.deepcopy(model), tok, samples, Path(tempfile.mkdtemp()))
        # TRL's default GRPOConfig (gradient checkpointing on), for reference only
        runners["trl_default_grad_ckpt"] = TRLStep(c, copy.deepcopy(model), tok, samples, Path(tempfile.mkdtemp()),
                                                   grad_ckpt=True)
    except ImportError as e:
        print(f"trl not importable ({e}); measuring mars2 only", file=sys.stderr)
    for r in runners.values():  # warm-up (allocator, autograd graph caches)
        timed(r.step, 3)
    times: dict[str, list[float]] = {k: [] for k in runners}
    for _ in range(a.blocks):
        for k, r in runners.items():
            times[k] += timed(r.step, a.steps)
    lightning_s = lightning_step_time(c, copy.deepcopy(model), samples, pad, a.steps + 3)
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {
        "what": "one train step (loss + backward + clip 1.0 + AdamW + zero_grad), GSPO, qwen3_a of conf/model/tiny.yaml",
        "model_params": sum(p.numel() for p in model.parameters()),
        "batch": a.batch,
        "tokens_per_sample_mean": statistics.mean(tokens),
        "tokens_per_sample_min_max": [min(tokens), max(tokens)],
        "padded_tokens": {k: r.padded_tokens() for k, r in runners.items()},
        "threads": a.threads,
        "steps_timed": {k: len(v) for k, v in times.items()},
        "median_s": med,
        "p10_p90_s": {k: [sorted(v)[len(v) // 10], sorted(v)[(9 * len(v)) // 10]] for k, v in times.items()},
        "mars2_lightning_median_s": lightning_s,
        "ratio_mars2_over_trl": med["mars2"] / med["trl"] if "trl" in med else None,
        "ratio_mars2_lightning_over_trl": lightning_s / med["trl"] if "trl" in med else None,
        "trl_version": trl_version,
        "trl_gradient_checkpointing": {k: r.grad_ckpt for k, r in runners.items() if isinstance(r, TRLStep)},
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()}, shared 2-core CPU",
        "notes": "TRL step = GRPOTrainer.training_step (generation short-circuited) + the HF loop's clip/optimizer/"
                 "scheduler/zero_grad, with gradient checkpointing off like mars2 (trl_default_grad_ckpt: TRL's default "
                 "GRPOConfig, which recomputes activations in backward). TRL's forward also computes token entropies "
                 "(its default). mars2_kl adds the k3 KL term, i.e. a reference forward inside the step (TRL does its "
                 "reference pass outside the step). mars2_lightning: MarsModule.training_step under a Lightning Trainer.",
        "date": time.strftime("%Y-%m-%d"),
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
