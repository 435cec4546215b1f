"""GSPO / GRPO losses, k3 KL and TIS against hand computations (method.md §5)."""
import math

import pytest
import torch

from mars2.rl.losses import grpo_loss, gspo_loss, k3_kl, tis_weights


def t(rows):
    return torch.tensor(rows, dtype=torch.float64)


def test_gspo_hand_value_and_gradients():
    # row 0: response columns 1, 2; log-ratio 0.2 on both -> s0 = e^0.2 = 1.2214 > 1.2, A0 = +1 -> clipped.
    # row 1: response columns 0, 1; log-ratios 0.1, -0.2 -> s1 = e^-0.05 = 0.95123, A1 = -2 -> unclipped.
    logp = t([[-9.0, -1.0, -2.0], [-0.5, -0.7, -9.0]]).requires_grad_()
    old = t([[-3.0, -1.2, -2.2], [-0.6, -0.5, -3.0]])  # masked columns differ wildly: must not matter
    mask = t([[0, 1, 1], [1, 1, 0]])
    adv = t([1.0, -2.0])
    loss, stats = gspo_loss(logp, old, adv, mask)
    s1 = math.exp(-0.05)
    l0 = -min(math.exp(0.2) * 1.0, 1.2 * 1.0)  # -1.2
    l1 = -min(s1 * -2.0, s1 * -2.0)  # s1 inside [0.8, 1.2]
    assert loss.item() == pytest.approx((l0 + l1) / 2, abs=1e-12)
    assert (l0 + l1) / 2 == pytest.approx(0.35122942, abs=1e-7)
    assert stats["clip_frac"] == 0.5
    assert stats["ratio_mean"] == pytest.approx((math.exp(0.2) + s1) / 2)
    loss.backward()
    g = logp.grad
    assert torch.all(g[0] == 0)  # clipped row: no gradient at all
    # unclipped row: d/dlogp_t of -s·A / B with s = exp(mean of 2 tokens) -> -A·s/(2·2) on each response token
    assert g[1, 0].item() == pytest.approx(2.0 * s1 / 4) and g[1, 1].item() == pytest.approx(2.0 * s1 / 4)
    assert g[1, 2].item() == 0.0  # masked token


@pytest.mark.parametrize(
    "log_ratio, adv, zero_grad",
    [
        (math.log(1.5), 1.0, True),    # A > 0, s > 1 + ε: clipped, no push further up
        (math.log(0.5), 1.0, False),   # A > 0, s < 1 − ε: unclipped branch (min picks s·A), still pushes up
        (math.log(0.5), -1.0, True),   # A < 0, s < 1 − ε: clipped
        (math.log(1.5), -1.0, False),  # A < 0, s > 1 + ε: unclipped, pushes down
        (math.log(1.1), 1.0, False),   # inside the range
        (math.log(0.9), -1.0, False),
    ],
)
@pytest.mark.parametrize("fn", [gspo_loss, grpo_loss])
def test_clipping_zero_gradient_exactly_where_expected(fn, log_ratio, adv, zero_grad):
    old = t([[-1.0, -2.0]])
    logp = (old + log_ratio).clone().requires_grad_()
    loss, stats = fn(logp, old, t([adv]), t([[1, 1]]))
    loss.backward()
    assert bool(torch.all(logp.grad == 0)) is zero_grad
    assert stats["clip_frac"] == (1.0 if zero_grad else 0.0)
    if not zero_grad:  # descent direction raises logp iff A > 0
        assert bool(torch.all(torch.sign(-logp.grad) == math.copysign(1.0, adv)))


def test_asymmetric_clip_range():
    old = t([[-1.0]])
    logp = (old + math.log(1.25)).requires_grad_()
    loss, _ = gspo_loss(logp, old, t([1.0]), t([[1]]), eps_low=0.2, eps_high=0.28)  # 1.25 < 1.28: unclipped
    loss.backward()
    assert loss.item() == pytest.approx(-1.25) and logp.grad.item() != 0
    logp2 = (old + math.log(0.75)).requires_grad_()
    loss2, _ = gspo_loss(logp2, old, t([-1.0]), t([[1]]), eps_low=0.2, eps_high=0.28)  # 0.75 < 0.8: clipped
    loss2.backward()
    assert loss2.item() == pytest.approx(0.8) and logp2.grad.item() == 0


def test_sign_raising_logp_of_positive_advantage_lowers_loss():
    old = t([[-1.0, -1.5, -0.5], [-2.0, -1.0, -1.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    adv = t([1.0, -1.0])
    for fn in (gspo_loss, grpo_loss):
        base, _ = fn(old.clone(), old, adv, mask)
        up = old.clone()
        up[0] += 0.05  # raise the positive-advantage sequence
        raised, _ = fn(up, old, adv, mask)
        down = old.clone()
        down[1] += 0.05  # raise the negative-advantage sequence
        worse, _ = fn(down, old, adv, mask)
        assert raised.item() < base.item() < worse.item()


def test_grpo_token_mean_hand_value():
    # row 0 (A=+1): log-ratios 0.1, 0.3, 0 on 3 tokens; row 1 (A=-2): 0.1, -0.3 on 2 tokens (+1 masked).
    old = t([[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]])
    logp = old + t([[0.1, 0.3, 0.0], [0.1, -0.3, 5.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    adv = t([1.0, -2.0])
    per_tok = [
        -min(math.exp(0.1), math.exp(0.1)),        # -1.10517
        -min(math.exp(0.3), 1.2),                  # -1.2 (clipped)
        -1.0,
        -min(math.exp(0.1) * -2, math.exp(0.1) * -2),   # 2.21034
        -min(math.exp(-0.3) * -2, 0.8 * -2),       # 1.6 (clipped)
    ]
    loss, stats = grpo_loss(logp, old, adv, mask)
    assert loss.item() == pytest.approx(sum(per_tok) / 5)  # token-mean over the batch's 5 response tokens
    assert sum(per_tok) / 5 == pytest.approx(0.1010342, abs=1e-6)
    # (a mean of per-sequence token means would be 0.4017: different)
    assert (sum(per_tok[:3]) / 3 + sum(per_tok[3:]) / 2) / 2 == pytest.approx(0.4017242, abs=1e-6)
    assert stats["clip_frac"] == pytest.approx(2 / 5)


def test_k3_kl():
    logp = t([[-1.0, -2.0, -3.0], [-1.0, -1.0, -1.0]])
    assert torch.all(k3_kl(logp, logp.clone(), torch.ones_like(logp)) == 0)
    ref = logp + t([[0.5, -0.5, 7.0], [0.0, 0.0, 0.0]])
    mask = t([[1, 1, 0], [1, 1, 1]])
    kl = k3_kl(logp, ref, mask)
    hand = ((math.exp(0.5) - 0.5 - 1) + (math.exp(-0.5) + 0.5 - 1)) / 2  # (0.148721 + 0.106531) / 2
    assert kl[0].item() == pytest.approx(hand) and kl[1].item() == 0.0
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(4, 9, generator=g, dtype=torch.float64), torch.randn(4, 9, generator=g, dtype=torch.float64)
    assert torch.all(k3_kl(a, b, torch.ones_like(a)) > 0)


def test_tis_cap_veto_and_mask():
    rollout = t([[-1.0, -1.0, -1.0, -1.0], [-1.0, -1.0, -1.0, -1.0], [-1.0, -1.0, -1.0, -1.0]])
    old = rollout + t([
        [0.0, math.log(3.0), -0.5, -50.0],   # ratios 1, 3 -> cap 2, e^-0.5; last token masked (no veto)
        [0.0, math.log(1e-5), 0.0, 0.0],     # one response token with ratio 1e-5 < 1e-4 -> whole row 0
        [math.log(2e-4), 0.0, 0.0, 0.0],     # 2e-4 > veto: kept
    ])
    mask = t([[1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 1, 0]])
    w = tis_weights(old.requires_grad_(), rollout, mask, cap=2.0, veto=1e-4)
    assert not w.requires_grad
    assert w[0].tolist() == pytest.approx([1.0, 2.0, math.exp(-0.5), 0.0])
    assert w[1].tolist() == [0.0, 0.0, 0.0, 0.0]
    assert w[2].tolist() == pytest.approx([2e-4, 1.0, 1.0, 0.0])


def test_tis_weights_in_losses():
    old = t([[-1.0, -1.0, -1.0], [-1.0, -1.0, -1.0]])
    logp = old.clone()  # ratio 1: loss per sequence is -A
    mask = t([[1, 1, 1], [1, 1, 0]])
    adv = t([1.0, 2.0])
    w = t([[1.0, 2.0, 0.5], [0.25, 0.75, 0.0]])
    # GSPO: sequence weight = mean of its token weights: 3.5/3 and 1/2
    loss, _ = gspo_loss(logp, old, adv, mask, tis_weights=w)
    assert loss.item() == pytest.approx((-1.0 * 3.5 / 3 - 2.0 * 0.5) / 2)
    # GRPO: per token, token-mean over 5 tokens
    loss, _ = grpo_loss(logp, old, adv, mask, tis_weights=w)
    assert loss.item() == pytest.approx((-(1.0 + 2.0 + 0.5) - 2.0 * (0.25 + 0.75)) / 5)
