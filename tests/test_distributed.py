"""Distributed wiring (issue 8): `trainer=ddp` (2 CPU processes, gloo) and `trainer=fsdp` (config only).

Design under test (src/mars2/training/{rollout,data,module}.py): the rollout and the evaluation run on rank 0,
which broadcasts the round's samples; every rank routes them into identical buffers, trains on rows
r, r+W, … of every minibatch with ``loss_scale`` = W · its share of the loss normaliser, and DDP averages the
gradients — so a 2-process run computes the same updates as a 1-process run. FSDP: Lightning refuses
``accelerator=cpu`` for FSDP, so on CPU its configuration is checked here, and what it relies on runs in raw
torch FSDP on two gloo processes: the sharded gradient-norm clip, the full-weights gather every rank enters,
saving the policies from it, and the weight sync to a (FAKE) rank-0 engine, lazy and eager (issue 14)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


# ---- minibatch slicing and loss scale -----------------------------------------------------------------------
def _samples(lengths: list[int]):
    from mars2.rl.samples import Sample

    return [Sample(policy_id="p", agent_id=0, agent_name="a", tree_id="t", node_id=i + 1, step=0,
                   prompt_ids=[1, 2, 3], response_ids=[4 + (i + j) % 5 for j in range(n)], reward=0.0,
                   shaped_reward=0.0, advantage=(-1.0) ** i * (0.5 + 0.25 * i), rollout_logprobs=[])
            for i, n in enumerate(lengths)]


def test_shard_and_loss_scale_by_hand():
    from mars2.training.data import loss_scale, shard

    mb = _samples([2, 3, 4, 5, 6])
    parts = [shard(mb, r, 2) for r in range(2)]
    assert [[s.node_id for s in p] for p in parts] == [[1, 3, 5], [2, 4]]
    # GSPO (mean over sequences): 2·3/5, 2·2/5
    assert [loss_scale(p, mb, 2, "gspo") for p in parts] == pytest.approx([1.2, 0.8])
    # GRPO (token mean): response tokens 2+4+6 = 12 and 3+5 = 8 of 20 → 2·12/20, 2·8/20
    assert [loss_scale(p, mb, 2, "grpo") for p in parts] == pytest.approx([1.2, 0.8])
    assert shard(mb, 0, 1) is mb


@pytest.mark.parametrize("loss", ["gspo", "grpo"])
def test_scaled_shard_gradients_average_to_the_full_minibatch_gradient(loss):
    """What DDP computes — (1/W) Σ_r ∇(scale_r · L(slice_r)) — equals ∇L(minibatch), also for uneven slices."""
    from mars2.rl.collate import collate
    from mars2.rl.objective import LossConfig, compute_old_logprobs, policy_loss
    from mars2.training.data import loss_scale, shard

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Embedding(12, 8), torch.nn.Linear(8, 12))
    model.forward = (lambda f: (lambda input_ids, attention_mask=None, **kw: f(input_ids)))(model.forward)
    mb = _samples([2, 3, 4, 5, 6])
    compute_old_logprobs(model, mb, pad_id=0)
    with torch.no_grad():  # move off the old policy so ratios ≠ 1 and clipping can act
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    cfg = LossConfig(loss=loss, kl_coef=0.0)

    def grads(batch, scale=1.0):
        model.zero_grad()
        loss_value, _ = policy_loss(model, None, batch, cfg)
        (loss_value * scale).backward()
        return [p.grad.clone() for p in model.parameters()]

    full = grads(collate(mb, 0))
    world = 2
    parts = [grads(collate(shard(mb, r, world), 0), loss_scale(shard(mb, r, world), mb, world, loss))
             for r in range(world)]
    avg = [(a + b) / world for a, b in zip(*parts)]
    for f, g in zip(full, avg):
        assert torch.allclose(f, g, atol=1e-6), (f - g).abs().max()
    assert any(f.abs().sum() > 0 for f in full)


# ---- sharded clip (what FSDP needs), two gloo processes -----------------------------------------------------
def _clip_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from mars2.training.strategy import clip_grad_norm

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    torch.manual_seed(0)
    full = [torch.randn(6), torch.randn(4, 3)]  # same on both ranks
    model = torch.nn.Module()
    model.a = torch.nn.Parameter(torch.zeros(3))
    model.b = torch.nn.Parameter(torch.zeros(2, 3))
    # rank 0 holds full[0][:3] and the first 2 rows of full[1]; rank 1 the rest: disjoint shards
    model.a.grad = full[0][:3].clone() if rank == 0 else full[0][3:].clone()
    model.b.grad = full[1][:2].clone() if rank == 0 else full[1][2:].clone()
    total = clip_grad_norm(model, 1.0, sharded=True)
    after = math.sqrt(float(sum(g.pow(2).sum() for g in (model.a.grad, model.b.grad))))
    Path(out, f"{rank}.json").write_text(json.dumps({"total": total, "local_after": after}))
    dist.destroy_process_group()


def test_sharded_grad_clip_uses_the_global_norm(tmp_path):
    import torch.multiprocessing as mp

    torch.manual_seed(0)
    full = [torch.randn(6), torch.randn(4, 3)]
    expected = math.sqrt(float(sum(g.pow(2).sum() for g in full)))
    # fork: the children inherit the imported modules (spawn would re-import torch in each, ~10 s here)
    mp.start_processes(_clip_worker, args=(2, f"file://{tmp_path}/store", str(tmp_path)), nprocs=2, join=True,
                       start_method="fork")
    res = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    assert res[0]["total"] == pytest.approx(expected, rel=1e-6) and res[1]["total"] == pytest.approx(expected, rel=1e-6)
    # after clipping to 1.0 the two shards together have norm 1 (each alone less)
    assert math.hypot(res[0]["local_after"], res[1]["local_after"]) == pytest.approx(1.0, rel=1e-5)
    assert expected > 1.0


# ---- raw torch FSDP on 2 gloo processes: full-weights gather, save, weight sync (issue 14) -------------------
# Lightning refuses FSDP on CPU, so these build the module as Lightning's FSDPStrategy does: one FSDP root around
# the MarsModule, one unit per decoder layer, use_orig_params=True (conf/trainer/fsdp.yaml).
def _fsdp_team():
    """Two tiny real-architecture policies (Qwen3 with tied embeddings, Llama untied) and the tiny tokenizer."""
    from mars2.agents.models import PolicySpec, build_policy
    from mars2.agents.tokenizer import build_tiny_tokenizer

    tok = build_tiny_tokenizer(["def solve(xs):\n    return sorted(xs)\n", "print(sum(map(int, input().split())))"] * 4,
                               vocab_size=300)
    models = {}
    for pid, arch, seed, tied in (("q", "qwen3", 1, True), ("l", "llama", 2, False)):
        spec = PolicySpec(id=pid, arch=arch, hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=16,
                          intermediate_size=48, seed=seed, tie_embeddings=tied)
        models[pid], _ = build_policy(spec, tok)
    return models, tok


def _bump(model: torch.nn.Module, k: float) -> None:
    """A deterministic change of every weight (stands in for an optimiser step)."""
    with torch.no_grad():
        for i, (_, p) in enumerate(sorted(model.named_parameters())):
            p.add_(k * (i + 1) * 1e-3)


def _wrap_fsdp(module: torch.nn.Module, classes: set) -> torch.nn.Module:
    """FSDP as conf/trainer/fsdp.yaml configures it (``classes``: its auto_wrap_policy), on the CPU."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    return FSDP(module, auto_wrap_policy=ModuleWrapPolicy(classes), use_orig_params=True,
                device_id=torch.device("cpu"))


class FakeEngineBackend:
    """FAKE rollout engine (tests only) with the real VLLMBackend's sync contract: ``on_policy_updated(pid,
    module)`` keeps the module and marks it stale; ``weight_sync="eager"`` reads its weights at once, ``lazy``
    at the next ``generate``. The weights are read with the real backend's `full_state_dict`."""

    def __init__(self, weight_sync: str) -> None:
        self.weight_sync = weight_sync
        self.models: dict[str, torch.nn.Module] = {}
        self.dirty: set[str] = set()
        self.received: dict[str, dict[str, torch.Tensor]] = {}

    def on_policy_updated(self, pid: str, module: torch.nn.Module) -> None:
        self.models[pid] = module
        self.dirty.add(pid)
        if self.weight_sync == "eager":
            self._sync(pid)

    def _sync(self, pid: str) -> None:
        from mars2.rollout.vllm_backend import full_state_dict

        self.received[pid] = {k: v.clone() for k, v in full_state_dict(self.models[pid]).items()}
        self.dirty.discard(pid)

    def generate(self) -> None:
        for pid in sorted(self.dirty):
            self._sync(pid)


def _fsdp_worker(rank: int, world: int, init: str, out: str, classes: set) -> None:
    import datetime

    import torch.distributed as dist

    from mars2.rl.objective import LossConfig
    from mars2.training.checkpointing import save_policies
    from mars2.training.module import MarsModule
    from mars2.training.strategy import gather_full_state_dict

    # a collective only some ranks enter fails after this timeout instead of hanging the test
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    models, tok = _fsdp_team()
    module = MarsModule(models, LossConfig(kl_coef=1e-3), {"lr": 1e-3})  # kl_coef > 0: references in the root too
    root = _wrap_fsdp(module, classes)
    module.set_wrapped_root(root)
    # engines live on rank 0 only; one lazy and one eager engine, fed by the same hook
    engines = {mode: FakeEngineBackend(mode) for mode in ("lazy", "eager")} if rank == 0 else {}

    def hook(pid: str, m: torch.nn.Module) -> None:
        for engine in engines.values():
            engine.on_policy_updated(pid, m)

    module.on_policy_updated = hook if engines else None
    module.publish_weights = True  # the same on every rank
    res: dict = {"sharded": module._sharded()}
    res["first_sync"] = module.sync_policies()  # every policy, once
    for mode, engine in engines.items():
        res[f"{mode}_before_generate"] = sorted(engine.received)
        engine.generate()
        res[f"{mode}_v0"] = {pid: {k: v.tolist() for k, v in sd.items()} for pid, sd in engine.received.items()}
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    with FSDP.summon_full_params(root, writeback=True):  # "train" q on every rank
        _bump(models["q"], 1.0)
    module.policy_steps["q"] += 1
    res["second_sync"] = module.sync_policies()  # only q changed
    res["third_sync"] = module.sync_policies()  # nothing changed: no collective, nothing published
    for mode, engine in engines.items():
        engine.generate()
        res[f"{mode}_v1"] = {k: v.tolist() for k, v in engine.received["q"].items()}
        res[f"{mode}_types"] = sorted({type(m).__name__ for m in engine.models.values()})
    res["gathered_keys"] = sorted(gather_full_state_dict(root, models["l"]))
    gq = gather_full_state_dict(root, models["q"])
    if rank == 0:
        res["gathered_q_tied"] = gq["lm_head.weight"] is gq["model.embed_tokens.weight"]
    else:
        res["gathered_elsewhere"] = len(gq)
    save_policies(models, {pid: tok for pid in models}, Path(out) / "policies", root=root)
    # checkpointing one policy's optimiser (what Lightning's FSDP checkpoint does for each): fp32 masters of a
    # step survive FSDP's optimiser state dict round trip
    from mars2.training.module import MasterWeightAdamW

    params = list(module.policies["l"].parameters())
    opt = MasterWeightAdamW(params, lr=1e-3)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    try:
        osd = FSDP.optim_state_dict(root, opt)
        opt2 = MasterWeightAdamW(params, lr=1e-3)
        opt2.load_state_dict(FSDP.optim_state_dict_to_load(root, opt2, osd))
        res["optim_roundtrip"] = all(torch.equal(opt2.state[p]["master"], opt.state[p]["master"])
                                     and opt2.state[p]["master"].dtype == torch.float32
                                     for p in params if p.numel() > 0)
    except RuntimeError as e:
        res["optim_roundtrip"] = str(e)[:300]
    # the wrapping before issue 14 (decoder layers only): the root unit mixes every policy's top-level weights
    # in one flat parameter, and a per-policy optimiser's state dict fails
    old_models, _ = _fsdp_team()
    old_module = MarsModule(old_models, LossConfig(kl_coef=0.0), {"lr": 1e-3})
    old_root = _wrap_fsdp(old_module, {c for c in classes if c.__name__.endswith("DecoderLayer")})
    old_params = list(old_module.policies["l"].parameters())
    old_opt = MasterWeightAdamW(old_params, lr=1e-3)
    for p in old_params:
        p.grad = torch.ones_like(p)
    old_opt.step()
    try:
        FSDP.optim_state_dict(old_root, old_opt)
        res["old_wrapping_optim"] = "ok"
    except RuntimeError as e:
        res["old_wrapping_optim"] = str(e)[:300]
    Path(out, f"{rank}.json").write_text(json.dumps(res))
    dist.destroy_process_group()


def test_fsdp_weight_sync_and_save_gather_full_weights_on_every_rank(tmp_path):
    """Under FSDP the engine (rank 0 only) receives the full, current weights of each updated policy, with
    lazy and with eager sync, and no rank runs a collective alone (a deadlock would time out the process
    group); the policies saved by every rank together reload with from_pretrained and equal the unsharded
    weights."""
    import torch.multiprocessing as mp
    from transformers import AutoModelForCausalLM

    from mars2.rollout.vllm_backend import full_state_dict

    models, _ = _fsdp_team()
    ref0 = {pid: {k: v.clone() for k, v in m.state_dict().items()} for pid, m in models.items()}
    # what the engine reads from an unsharded module: tied weights once (the engine ties them itself)
    engine_keys = {pid: set(full_state_dict(m)) for pid, m in models.items()}
    assert engine_keys["q"] == set(ref0["q"]) - {"lm_head.weight"} and engine_keys["l"] == set(ref0["l"])
    _bump(models["q"], 1.0)
    ref1 = {pid: {k: v.clone() for k, v in m.state_dict().items()} for pid, m in models.items()}
    assert not torch.equal(ref0["q"]["model.norm.weight"], ref1["q"]["model.norm.weight"])
    from mars2.training.strategy import strategy_kwargs

    classes = strategy_kwargs(_compose("trainer=fsdp")["strategy"])["auto_wrap_policy"]  # the shipped wrapping
    mp.start_processes(_fsdp_worker, args=(2, f"file://{tmp_path}/store", str(tmp_path), classes), nprocs=2,
                       join=True, start_method="fork")
    res = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    assert res[0]["sharded"] and res[1]["sharded"]
    assert res[0]["optim_roundtrip"] is True and res[1]["optim_roundtrip"] is True
    assert "not in the optimizer state" in res[0]["old_wrapping_optim"]
    assert res[0]["first_sync"] == res[1]["first_sync"] == ["q", "l"]
    assert res[0]["second_sync"] == res[1]["second_sync"] == ["q"] and res[0]["third_sync"] == []
    assert res[0]["eager_before_generate"] == ["l", "q"] and res[0]["lazy_before_generate"] == []
    for mode in ("lazy", "eager"):
        assert res[0][f"{mode}_types"] == ["FullWeights"]  # never an FSDP module
        for pid in ("q", "l"):
            got = res[0][f"{mode}_v0"][pid]
            assert set(got) == engine_keys[pid]
            for k in engine_keys[pid]:
                assert torch.equal(torch.tensor(got[k], dtype=ref0[pid][k].dtype), ref0[pid][k]), (mode, pid, k)
        assert set(res[0][f"{mode}_v1"]) == engine_keys["q"]
        for k, v in ref1["q"].items():
            if k in engine_keys["q"]:
                assert torch.equal(torch.tensor(res[0][f"{mode}_v1"][k], dtype=v.dtype), v), (mode, k)
    assert res[0]["gathered_q_tied"] is True  # the gathered lm_head is the embedding tensor, as in the module
    assert res[0]["gathered_keys"] == sorted(ref1["l"]) and res[1]["gathered_elsewhere"] == 0  # rank 0 only
    for pid in ("q", "l"):
        folder = tmp_path / "policies" / pid
        assert (folder / "config.json").is_file() and (folder / "tokenizer.json").is_file()
        loaded = AutoModelForCausalLM.from_pretrained(folder, local_files_only=True).state_dict()
        for k, v in ref1[pid].items():
            assert torch.equal(loaded[k], v), (pid, k)


# ---- configs ---------------------------------------------------------------------------------------------------
def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides))
    return OmegaConf.to_container(cfg.trainer, resolve=True)


def test_ddp_config_builds_a_ddp_strategy():
    from lightning.pytorch.strategies import DDPStrategy

    from mars2.training.strategy import build_strategy

    t = _compose("trainer=ddp")
    assert t["devices"] == 2 and t["accelerator"] == "cpu" and t["num_threads"] == 1
    strategy = build_strategy(t["strategy"])
    assert isinstance(strategy, DDPStrategy)
    assert strategy._ddp_kwargs["find_unused_parameters"] is True


def test_fsdp_config_resolves_and_builds_but_lightning_needs_cuda():
    """FSDP is configured for one optimiser per policy (use_orig_params) and per-decoder-layer wrapping; on this
    CPU-only machine Lightning refuses to run it, which is why the CPU tests use DDP."""
    import lightning.pytorch as pl
    from lightning.pytorch.strategies import FSDPStrategy
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaForCausalLM
    from transformers.models.qwen2.modeling_qwen2 import Qwen2ForCausalLM
    from transformers.models.qwen3.modeling_qwen3 import Qwen3DecoderLayer, Qwen3ForCausalLM

    from mars2.training.strategy import build_strategy, strategy_kwargs

    t = _compose("trainer=fsdp")
    assert t["accelerator"] == "gpu"
    kwargs = strategy_kwargs(t["strategy"])
    assert kwargs["use_orig_params"] is True and kwargs["state_dict_type"] == "sharded"
    assert {Qwen3DecoderLayer, LlamaDecoderLayer} <= kwargs["auto_wrap_policy"]
    # whole policies are units too (per-policy optimiser state dicts); activation checkpointing on layers only
    assert {Qwen3ForCausalLM, LlamaForCausalLM} <= kwargs["auto_wrap_policy"]
    assert kwargs["activation_checkpointing_policy"] == kwargs["auto_wrap_policy"] - {
        Qwen3ForCausalLM, LlamaForCausalLM, Qwen2ForCausalLM}
    strategy = build_strategy(t["strategy"])
    assert isinstance(strategy, FSDPStrategy)
    with pytest.raises(ValueError, match="requires a GPU accelerator"):
        pl.Trainer(accelerator="cpu", devices=1, strategy=strategy, logger=False)


def test_rank_from_env(monkeypatch):
    from mars2.training.strategy import global_rank_from_env

    for k in ("RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert global_rank_from_env() == 0
    monkeypatch.setenv("LOCAL_RANK", "1")  # Lightning's subprocess launcher
    assert global_rank_from_env() == 1
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("NODE_RANK", "1")  # rank 0 of the second node is not global rank 0
    assert global_rank_from_env() != 0
    monkeypatch.setenv("RANK", "0")
    assert global_rank_from_env() == 0


# ---- end to end: 2 processes = 1 process ------------------------------------------------------------------
ARGS = ["debug=fast", "rounds=2", "eval.n_problems=2", "eval.budget=2", "model.generation.max_new_tokens=32"]


def _train(args: list[str], out: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "WANDB_MODE": "disabled", "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(ROOT / "src")}
    env.setdefault("MARS2_CACHE_DIR", str(ROOT / ".cache" / "mars2"))
    return subprocess.run([sys.executable, str(ROOT / "train.py"), *ARGS, *args, f"hydra.run.dir={out}"], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_ddp_two_cpu_processes_equal_one_process(tmp_path):
    ddp, single = tmp_path / "ddp", tmp_path / "single"
    p = _train(["trainer=ddp"], ddp)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "Starting with 2 processes" in p.stdout + p.stderr
    assert (ddp / "train_ddp_process_1.log").is_file()  # rank 1 ran in the same run dir ...
    res = json.loads((ddp / "results.json").read_text())  # ... and rank 0 alone wrote the results
    assert res["status"] == "completed" and [e["round"] for e in res["evals"]] == [0, 1, 2]
    assert (ddp / "policies" / "qwen3_a" / "config.json").is_file() and (ddp / "checkpoints" / "last.ckpt").is_file()
    p = _train(["trainer.num_threads=1"], single)
    assert p.returncode == 0, p.stderr[-3000:]
    ref = json.loads((single / "results.json").read_text())

    def same(a: float, b: float) -> bool:
        return a == b or (a != a and b != b) or abs(a - b) <= 1e-5 * max(1.0, abs(a))

    # Rank 0's rollout is the single process's rollout; the averaged slice gradients are the full-batch gradient,
    # so losses, grad norms, steps and the next round's trees agree. logp_mean is a token mean per slice, averaged
    # over ranks (a mean of means), so it is the one statistic allowed to differ.
    updates = 0
    for hr, hd in zip(ref["history"], res["history"]):
        for k, v in hr.items():
            if k.startswith("time/") or k.endswith(("_s", "per_s", "logp_mean")):
                continue
            assert k in hd and same(v, hd[k]), (k, v, hd.get(k))
        updates += sum(v for k, v in hd.items() if k.endswith("/updates"))
    assert updates >= 2
    for er, ed in zip(ref["evals"], res["evals"]):
        for k, v in er.items():
            if "seconds" not in k:
                assert same(v, ed[k]), (k, v, ed[k])
