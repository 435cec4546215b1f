"""The objective on a tiny random transformers model: collate alignment, token log-probs, old log-probs, and
that one update moves log-probs in the advantage's direction (method.md §5)."""
import copy
import math

import pytest
import torch

from mars2.rl.collate import collate
from mars2.rl.losses import token_logprobs
from mars2.rl.objective import LossConfig, compute_old_logprobs, policy_loss
from mars2.rl.samples import Sample

PAD = 0


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def tiny_model(seed: int = 0, dtype=torch.float32):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, head_dim=16, intermediate_size=64, pad_token_id=PAD)
    return Qwen3ForCausalLM(cfg).to(dtype)


def mk(prompt, response, adv=0.0, rollout=None, pid="p", node=1):
    return Sample(policy_id=pid, agent_id=0, agent_name="a", tree_id="t", node_id=node, step=0,
                  prompt_ids=list(prompt), response_ids=list(response), reward=0.0, shaped_reward=0.0,
                  advantage=adv, rollout_logprobs=list(rollout) if rollout is not None else [])


def manual_logprobs(model, ids, mask):
    """The textbook computation: full log-softmax, take log p(x_t | x_<t) for t ≥ 1."""
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits.float()
    return torch.log_softmax(logits, -1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)


def test_collate_alignment_hand_example():
    a = mk([11, 12, 13], [14, 15], adv=1.5, rollout=[-0.4, -0.5])
    b = mk([21], [22, 23, 24], adv=-0.5, rollout=[-1.0, -2.0, -3.0])
    batch = collate([a, b], pad_id=PAD)
    assert batch["input_ids"].tolist() == [[11, 12, 13, 14, 15], [21, 22, 23, 24, PAD]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]]
    # column j <-> token j+1: row a's response tokens 14, 15 sit at inputs 3, 4 -> columns 2, 3
    assert batch["response_mask"].tolist() == [[0, 0, 1, 1], [1, 1, 1, 0]]
    assert torch.allclose(batch["rollout_logprobs"], torch.tensor([[0, 0, -0.4, -0.5], [-1.0, -2.0, -3.0, 0]]))
    assert batch["advantages"].tolist() == [1.5, -0.5]
    assert batch["prompt_lens"].tolist() == [3, 1] and batch["response_lens"].tolist() == [2, 3]
    assert "old_logprobs" not in batch  # not computed yet
    ids, m = batch["input_ids"], batch["response_mask"].bool()
    assert ids[:, 1:][m].tolist() == [14, 15, 22, 23, 24]  # masked columns name exactly the response tokens
    a.old_logprobs, b.old_logprobs = [-0.1, -0.2], [-0.3, -0.4, -0.6]
    expected_old = torch.tensor([[0, 0, -0.1, -0.2], [-0.3, -0.4, -0.6, 0]])
    assert torch.allclose(collate([a, b], PAD)["old_logprobs"], expected_old)
    with pytest.raises(ValueError):
        collate([mk([], [1, 2])], PAD)
    with pytest.raises(ValueError):
        collate([mk([1], [2, 3], rollout=[-1.0])], PAD)


def test_token_logprobs_matches_manual_and_ignores_right_padding():
    model = tiny_model()
    batch = collate([mk([5, 6, 7, 8], [9, 10]), mk([3, 4], [20, 21, 22, 23, 24])], PAD)
    ids, am = batch["input_ids"], batch["attention_mask"]
    lp = token_logprobs(model, ids, am)
    assert lp.shape == (2, ids.shape[1] - 1)
    assert torch.allclose(lp, manual_logprobs(model, ids, am), atol=1e-6)
    # skipping prompt columns (logits_to_keep path) keeps the needed columns exact and zeros the rest
    lp1 = token_logprobs(model, ids, am, first_col=1, chunk_rows=1)
    assert torch.all(lp1[:, 0] == 0) and torch.allclose(lp1[:, 1:], lp[:, 1:], atol=1e-6)

    # a wrapper that accepts **kwargs but ignores logits_to_keep gives the same columns
    class Ignoring(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, **kwargs):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask)

    expected = torch.cat([torch.zeros(2, 3), lp[:, 3:]], 1)
    assert torch.allclose(token_logprobs(Ignoring(model), ids, am, first_col=3), expected, atol=1e-6)
    # a row scored alone equals the same row inside a right-padded batch (where it is real)
    alone = collate([mk([5, 6, 7, 8], [9, 10])], PAD)
    lp_alone = token_logprobs(model, alone["input_ids"], alone["attention_mask"])
    assert torch.allclose(lp_alone[0], lp[0, :5], atol=1e-6)
    # temperature: log-softmax of logits / T
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=am).logits.float() / 0.7
    manual_t = torch.log_softmax(logits, -1)[:, :-1].gather(-1, ids[:, 1:, None]).squeeze(-1)
    assert torch.allclose(token_logprobs(model, ids, am, temperature=0.7), manual_t, atol=1e-6)


def test_token_logprobs_bf16_grad_path():
    model = tiny_model(dtype=torch.bfloat16)
    batch = collate([mk([5, 6], [9, 10, 11])], PAD)
    lp = token_logprobs(model, batch["input_ids"], batch["attention_mask"])
    assert lp.dtype == torch.float32
    lp.sum().backward()  # goes through the checkpointed float32 upcast
    assert model.lm_head.weight.grad is not None and torch.isfinite(model.lm_head.weight.grad.float()).all()


def test_compute_old_logprobs_fills_response_positions():
    model = tiny_model()
    model.train()
    samples = [mk([5, 6, 7], [9, 10], node=1), mk([3], [20, 21, 22], node=2), mk([1, 2, 3, 4, 5], [6], node=3)]
    compute_old_logprobs(model, samples, PAD, batch_size=2)
    assert model.training  # mode restored
    for s in samples:
        one = collate([s], PAD)
        full = manual_logprobs(model, one["input_ids"], one["attention_mask"])[0]
        p, r = len(s.prompt_ids), len(s.response_ids)
        assert len(s.old_logprobs) == r
        assert s.old_logprobs == pytest.approx(full[p - 1:p + r - 1].tolist(), abs=1e-6)


def seq_logprob(model, s):
    b = collate([s], PAD)
    return float((manual_logprobs(model, b["input_ids"], b["attention_mask"]) * b["response_mask"]).sum())


@pytest.mark.parametrize("loss", ["gspo", "grpo"])
def test_one_step_moves_logprobs_with_advantage(loss):
    model = tiny_model(seed=1)
    good = mk([5, 6, 7], [9, 10, 11], adv=1.0, node=1)
    bad = mk([5, 6, 7], [30, 31], adv=-1.0, node=2)
    before = [seq_logprob(model, good), seq_logprob(model, bad)]
    compute_old_logprobs(model, [good, bad], PAD)
    ref = copy.deepcopy(model).requires_grad_(False)
    batch = collate([good, bad], PAD)
    cfg = LossConfig(loss=loss, kl_coef=1e-3)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    total, stats = policy_loss(model, ref, batch, cfg)
    # at the first step ratio = 1, KL = 0: the loss is -mean(A) for GSPO, -token-mean(A) for GRPO
    assert stats["ratio_mean"] == pytest.approx(1.0, abs=1e-5) and stats["kl"] == pytest.approx(0.0, abs=1e-7)
    expected = 0.0 if loss == "gspo" else -(3 * 1.0 + 2 * -1.0) / 5
    assert stats["pg_loss"] == pytest.approx(expected, abs=1e-5)
    assert stats["resp_len"] == 2.5 and stats["adv_mean"] == 0.0 and stats["clip_frac"] == 0.0
    for key in ("loss", "pg_loss", "kl", "clip_frac", "tis_weight_mean", "adv_mean", "resp_len"):
        assert isinstance(stats[key], float)
    opt.zero_grad()
    total.backward()
    opt.step()
    after = [seq_logprob(model, good), seq_logprob(model, bad)]
    assert after[0] > before[0]  # positive advantage: more likely
    assert after[1] < before[1]  # negative advantage: less likely
    _, stats2 = policy_loss(model, ref, batch, cfg)
    assert stats2["kl"] > 0 and stats2["ratio_mean"] != pytest.approx(1.0, abs=1e-6)


def test_policy_loss_kl_term_and_tis_identity():
    model = tiny_model(seed=2)
    s1 = mk([5, 6, 7], [9, 10, 11], adv=1.0, node=1)
    s2 = mk([5, 6], [30, 31], adv=-0.5, node=2)
    compute_old_logprobs(model, [s1, s2], PAD)
    # rollout log-probs equal to the old ones: TIS weights all 1 -> same loss as without TIS
    s1.rollout_logprobs, s2.rollout_logprobs = list(s1.old_logprobs), list(s2.old_logprobs)
    batch = collate([s1, s2], PAD)
    ref = tiny_model(seed=3)  # a different reference: KL > 0
    no_kl, st0 = policy_loss(model, None, batch, LossConfig(kl_coef=1e-3))
    with_kl, st1 = policy_loss(model, ref, batch, LossConfig(kl_coef=0.5))
    assert st0["kl"] == 0.0 and st1["kl"] > 0
    assert with_kl.item() == pytest.approx(no_kl.item() + 0.5 * st1["kl"], rel=1e-5)
    tis, st2 = policy_loss(model, None, batch, LossConfig(kl_coef=0.0, tis=True))
    assert tis.item() == pytest.approx(no_kl.item(), abs=1e-6)
    assert st2["tis_weight_mean"] == pytest.approx(1.0, abs=1e-5) and st2["rollout_logp_gap"] < 1e-5
    # a rollout engine that gave one token a far higher probability than the trainer: veto -> no pg signal
    s2.rollout_logprobs = [s2.old_logprobs[0] + 12.0, s2.old_logprobs[1]]
    vetoed, st3 = policy_loss(model, None, collate([s1, s2], PAD), LossConfig(kl_coef=0.0, tis=True))
    assert st3["tis_veto_frac"] == 0.5
    assert vetoed.item() == pytest.approx(-1.0 / 2, abs=1e-5)  # only s1 (ratio 1, A=1, weight 1) remains
    with pytest.raises(ValueError):  # TIS without rollout log-probs is an error, not a silent no-op
        policy_loss(model, None, collate([mk([5], [6], adv=1.0)], PAD), LossConfig(tis=True))


def test_policy_loss_without_old_logprobs_is_on_policy():
    model = tiny_model(seed=4)
    batch = collate([mk([5, 6], [7, 8], adv=2.0)], PAD)
    loss, stats = policy_loss(model, None, batch, LossConfig(kl_coef=0.0))
    assert stats["ratio_mean"] == 1.0 and loss.item() == pytest.approx(-2.0)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_loss_config_validation():
    with pytest.raises(ValueError):
        LossConfig(loss="ppo")
    assert math.isclose(LossConfig().kl_coef, 1e-3)
