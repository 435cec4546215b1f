"""Real-scale training on CPU stand-ins (issue 14): fp32 master weights under bf16 compute, the rollout's empty
train split, and the collective weight publication order. The end-to-end `model=real_tiny` run (real HF
checkpoints loaded from a path) is in tests/test_real_scale_e2e.py."""
from __future__ import annotations

import pytest
import torch


def _grads(shapes, seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g) * 0.3 for s in shapes]


def test_master_adamw_equals_fp32_adamw_on_the_masters():
    """MasterWeightAdamW on bf16 parameters: its fp32 masters follow torch's AdamW on fp32 parameters given the
    same (bf16-rounded) gradients, to fp32 rounding; the bf16 parameters are the masters rounded."""
    from mars2.training.module import MasterWeightAdamW

    torch.manual_seed(0)
    shapes = [(7, 5), (5,)]
    w0 = [torch.randn(s) * 0.05 for s in shapes]
    low = [torch.nn.Parameter(w.bfloat16()) for w in w0]
    ref = [torch.nn.Parameter(w.bfloat16().float()) for w in w0]  # same start: the bf16 weights
    opt = MasterWeightAdamW(low, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1)
    ref_opt = torch.optim.AdamW(ref, lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1, foreach=False)
    for step in range(3):
        for p, r, g in zip(low, ref, _grads(shapes, step)):
            p.grad = g.bfloat16()
            r.grad = g.bfloat16().float()
        opt.step()
        ref_opt.step()
    for p, r in zip(low, ref):
        master = opt.state[p]["master"]
        assert master.dtype == torch.float32 and p.dtype == torch.bfloat16
        assert torch.allclose(master, r.detach(), rtol=0, atol=1e-7)
        assert torch.equal(p.detach(), master.bfloat16())
        assert opt.state[p]["exp_avg"].dtype == torch.float32


def test_bf16_updates_at_lr_1e6_survive_only_with_master_weights():
    """Two steps at lr 1e-6 (the real-scale recipe): AdamW straight on bf16 weights of magnitude ~0.02 rounds
    almost every update away (the update is ~1e-6, half a bf16 ulp is ~6e-5); the masters keep them all."""
    from mars2.training.module import make_adamw

    torch.manual_seed(0)
    w = torch.randn(4096) * 0.02
    for master in (False, True):
        p = torch.nn.Parameter(w.bfloat16())
        opt = make_adamw([p], lr=1e-6, master_weights=master)
        assert type(opt).__name__ == ("MasterWeightAdamW" if master else "AdamW")
        for step in range(2):
            p.grad = _grads([(4096,)], step)[0].bfloat16()
            opt.step()
        held = opt.state[p]["master"] if master else p.detach().float()
        changed = float((held != w.bfloat16().float()).float().mean())
        if master:
            assert changed > 0.99
        else:
            assert changed < 0.05


def test_fp32_parameters_keep_torch_adamw():
    from mars2.training.module import make_adamw

    p = torch.nn.Parameter(torch.zeros(3))
    assert type(make_adamw([p], lr=1e-3)) is torch.optim.AdamW


def test_master_state_survives_a_state_dict_round_trip_in_fp32():
    """torch's Optimizer.load_state_dict casts floating state to the parameter dtype (bf16); exact resume needs
    the fp32 masters and moments back."""
    from mars2.training.module import MasterWeightAdamW

    torch.manual_seed(0)
    p = torch.nn.Parameter((torch.randn(64) * 0.02).bfloat16())
    opt = MasterWeightAdamW([p], lr=1e-6)
    p.grad = torch.randn(64).bfloat16()
    opt.step()
    sd = opt.state_dict()
    master = opt.state[p]["master"].clone()
    q = torch.nn.Parameter(p.detach().clone())
    opt2 = MasterWeightAdamW([q], lr=1e-6)
    opt2.load_state_dict(sd)
    for key in ("master", "exp_avg", "exp_avg_sq"):
        assert opt2.state[q][key].dtype == torch.float32
    assert torch.equal(opt2.state[q]["master"], master)
    assert not torch.equal(master.bfloat16().float(), master)  # the master holds more than bf16 can


def test_marsmodule_uses_master_weights_for_bf16_policies():
    from mars2.rl.objective import LossConfig
    from mars2.training.module import MarsModule, MasterWeightAdamW

    bf16 = torch.nn.Linear(3, 3).to(torch.bfloat16)
    fp32 = torch.nn.Linear(3, 3)
    mod = MarsModule({"a": bf16, "b": fp32}, LossConfig(kl_coef=0.0), {"lr": 1e-6})
    opts, _ = mod.configure_optimizers()
    assert isinstance(opts[0], MasterWeightAdamW) and type(opts[1]) is torch.optim.AdamW
    mod2 = MarsModule({"a": bf16}, LossConfig(kl_coef=0.0), {"lr": 1e-6, "master_weights": False})
    assert type(mod2.configure_optimizers()[0][0]) is torch.optim.AdamW


# ---- rollout callback ----------------------------------------------------------------------------------------
def _rollout(train_problems, **kw):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from fakes import FakeBackend, FakeScorer, fake_problem

    from mars2.agents.base import AgentSpec
    from mars2.rl.buffers import PolicyBuffers
    from mars2.rl.samples import SampleConfig
    from mars2.search.factory import SearchConfig
    from mars2.training.rollout import TreeSearchRollout

    return TreeSearchRollout(
        agents=[AgentSpec(name="a", role_prompt="", policy_id="p")], backend=FakeBackend(), scorer=FakeScorer(),
        train_problems=train_problems, test_problems=[fake_problem("e0")], buffers=PolicyBuffers(["p"], 2),
        search=SearchConfig(mode="iid"), sample_cfg=SampleConfig(), rollout_batch_size=2, reward_tests="public",
        eval_cfg={"budget": 1}, eval_search=SearchConfig(mode="iid"), seed=0, output_dir=Path("/nonexistent"),
        **kw,
    )


def test_empty_train_split_raises_naming_the_split_instead_of_spinning():
    from mars2.resources import SetupError

    rollout = _rollout([], train_split="valid")
    with pytest.raises(SetupError, match="training split 'valid' has no problems"):
        rollout.next_batch()


def test_rollout_and_evaluation_publish_weights_before_rank0_generates(monkeypatch):
    """TreeSearchRollout asks the module to publish updated policies (a collective under FSDP) at every round
    and evaluation, on every rank, before the rank-0-only generation."""
    from types import SimpleNamespace

    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from fakes import fake_problem

    order: list[str] = []
    module = SimpleNamespace(sync_policies=lambda: order.append("sync"))
    rollout = _rollout([fake_problem("t0"), fake_problem("t1")])
    rollout._trainer = SimpleNamespace(lightning_module=module, strategy=SimpleNamespace())
    monkeypatch.setattr(rollout, "_rollout", lambda problems, r: (order.append("rollout"), ([], {}))[1])
    monkeypatch.setattr(rollout, "_evaluate", lambda r: (order.append("evaluate"), {})[1])
    monkeypatch.setattr(rollout, "_log", lambda *a, **k: None)
    rollout.run_round()
    rollout.evaluate(SimpleNamespace(loggers=[]), 0)
    assert order == ["sync", "rollout", "sync", "evaluate"]


@pytest.mark.parametrize("preset", ["8b", "14b", "32b", "real_tiny"])
def test_real_presets_train_bf16_with_fp32_master_weights(preset):
    """Every real preset composes to bf16 compute and an optimiser with fp32 masters for its bf16 policies."""
    from pathlib import Path

    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from mars2.rl.objective import LossConfig
    from mars2.training.module import MarsModule, MasterWeightAdamW

    root = Path(__file__).resolve().parents[1]
    with initialize_config_dir(config_dir=str(root / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=[f"model={preset}", "paths.output_dir=unused"])
    c = OmegaConf.to_container(cfg, resolve=True)
    assert c["trainer"]["precision"] == "bf16-true" and c["model"]["optim"]["master_weights"] is True
    assert {p["dtype"] for p in c["model"]["policies"].values()} == {"bfloat16"}
    policy = torch.nn.Linear(4, 4).to(torch.bfloat16)  # a bf16 policy as from_pretrained(dtype=bf16) gives
    opts, _ = MarsModule({"p": policy}, LossConfig(kl_coef=0.0), c["model"]["optim"]).configure_optimizers()
    assert isinstance(opts[0], MasterWeightAdamW)


@pytest.mark.parametrize("sharded", [False, True])
def test_training_step_publishes_unsharded_and_defers_to_sync_policies_when_sharded(sharded, monkeypatch):
    """Unsharded: the hook gets the policy module right after each step (backend lazy/eager as configured).
    Sharded: never from training_step (a collective inside one rank's step would deadlock); sync_policies,
    which every rank enters, publishes each updated policy once, as an unsharded FullWeights copy."""
    import importlib.util
    import sys
    from pathlib import Path

    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from mars2.agents.models import PolicySpec, build_policy
    from mars2.agents.tokenizer import build_tiny_tokenizer
    from mars2.rl.collate import collate
    from mars2.rl.objective import LossConfig, compute_old_logprobs
    from mars2.training.module import MarsModule

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "real_scale.py"
    spec = importlib.util.spec_from_file_location("bench_real_scale", path)
    bench = importlib.util.module_from_spec(spec)
    sys.modules["bench_real_scale"] = bench
    spec.loader.exec_module(bench)
    tok = build_tiny_tokenizer(["def solve(xs):\n    return xs\n"] * 4, vocab_size=300)
    model, _ = build_policy(PolicySpec(id="p", hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                                       head_dim=16, intermediate_size=48), tok)
    module = MarsModule({"p": model}, LossConfig(kl_coef=0.0), {"lr": 1e-3, "grad_clip": 0.0})
    calls: list[tuple[str, str]] = []
    module.on_policy_updated = lambda pid, m: calls.append((pid, type(m).__name__))
    if sharded:
        monkeypatch.setattr(module, "_sharded", lambda: True)
    batches = []
    for samples in bench.synthetic_batches(model.config.vocab_size, int(tok.pad_token_id), "p", steps=2):
        compute_old_logprobs(model, samples, int(tok.pad_token_id))
        b = collate(samples, int(tok.pad_token_id))
        b["policy_id"] = "p"
        batches.append(b)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    assert module.policy_steps["p"] == 2
    if not sharded:
        assert calls == [("p", type(model).__name__)] * 2
        assert module.sync_policies() == [] and len(calls) == 2
        return
    assert calls == []
    assert module.sync_policies() == ["p"] and calls == [("p", "FullWeights")]
    assert module.sync_policies() == [] and len(calls) == 1  # nothing new since
