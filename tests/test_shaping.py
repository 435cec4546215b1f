"""Overlong penalty and tree-consistent shaping against hand-computed values (method.md §4.1, §4.2)."""
import pytest

from mars2.rl.samples import SampleConfig, tree_to_samples
from mars2.rl.shaping import overlong_penalty, shape_rewards
from mars2.search.tree import Node, Tree

# The hand-built tree: root → A(r=1), B(r=0); A → C(r=0), D(r=1); B → E(r=1).
# Expand order A=1, B=2, C=3, D=4, E=5.
PARENTS = [0, 0, 1, 1, 2]
REWARDS = [1.0, 0.0, 0.0, 1.0, 1.0]


def build_tree(rewards=REWARDS, parents=PARENTS, policies=None, lengths=None) -> Tree:
    tree = Tree(problem_id="p0")
    for i, (p, r) in enumerate(zip(parents, rewards)):
        n = (lengths or [3] * len(rewards))[i]
        tree.add(Node(id=-1, parent_id=p, depth=0, agent_id=i % 2, agent_name=f"a{i % 2}",
                      policy_id=(policies or ["pol"] * len(rewards))[i], reward=r,
                      prompt_ids=[1, 2], response_ids=[5] * n, logprobs=[-0.5] * n))
    return tree


def test_shaping_hand_tree_default_lambda_gamma():
    lam = gamma = 0.5
    # A: parent is the root -> no parent term; one sibling B (r=0) -> sibling term alone is the baseline.
    a = 1 + gamma * (1 - 0)  # 1.5
    # B: sibling A (r=1) alone.
    b = 0 + gamma * (0 - 1)  # -0.5
    # C: both terms: parent A shaped 1.5, sibling D raw 1.
    c = 0 + gamma * (0 - ((1 - lam) * a + lam * 1))  # 0 + 0.5*(0 - 1.25) = -0.625
    # D: parent 1.5, sibling C raw 0.
    d = 1 + gamma * (1 - ((1 - lam) * a + lam * 0))  # 1 + 0.5*(1 - 0.75) = 1.125
    # E: parent B shaped -0.5 alone (no siblings).
    e = 1 + gamma * (1 - b)  # 1 + 0.5*1.5 = 1.75
    assert [a, b, c, d, e] == [1.5, -0.5, -0.625, 1.125, 1.75]
    assert shape_rewards(PARENTS, REWARDS, lam, gamma) == pytest.approx([1.5, -0.5, -0.625, 1.125, 1.75])


def test_shaping_hand_tree_other_lambda_gamma():
    lam, gamma = 0.25, 1.0
    a = 1 + 1.0 * (1 - 0)  # 2.0 (sibling-only: λ does not scale a lone term)
    b = 0 + 1.0 * (0 - 1)  # -1.0
    c = 0 + 1.0 * (0 - (0.75 * 2.0 + 0.25 * 1))  # -1.75
    d = 1 + 1.0 * (1 - (0.75 * 2.0 + 0.25 * 0))  # 0.5
    e = 1 + 1.0 * (1 - (-1.0))  # 3.0 (parent-only: (1-λ) does not scale a lone term)
    assert [a, b, c, d, e] == [2.0, -1.0, -1.75, 0.5, 3.0]
    assert shape_rewards(PARENTS, REWARDS, lam, gamma) == pytest.approx([2.0, -1.0, -1.75, 0.5, 3.0])


def test_shaping_gamma_zero_is_identity():
    assert shape_rewards(PARENTS, REWARDS, 0.3, 0.0) == pytest.approx(REWARDS)


def test_shaping_neither_term():
    # A lone child of the root: no parent term, no sibling -> unchanged.
    assert shape_rewards([0], [0.7]) == [0.7]
    # A chain root -> X -> Y: X unchanged (neither), Y parent-only against X.
    assert shape_rewards([0, 1], [0.0, 1.0], 0.5, 0.5) == pytest.approx([0.0, 1.0 + 0.5 * (1.0 - 0.0)])


def test_shaping_parent_uses_shaped_reward_and_siblings_include_later_ones():
    # root -> X(1), Y(0); X -> Z(1).  X shaped against Y (created after X): 1 + 0.5*(1-0) = 1.5.
    # Z: parent X shaped 1.5, no sibling -> 1 + 0.5*(1 - 1.5) = 0.75 (raw parent would give 1.0).
    assert shape_rewards([0, 0, 1], [1.0, 0.0, 1.0]) == pytest.approx([1.5, -0.5, 0.75])


def test_shaping_sibling_mean_over_all_others():
    # Three root children r = 1, 0, 0: for the first, b = mean(0, 0) = 0 -> 1.5; for the others b = mean(1, 0)=0.5
    assert shape_rewards([0, 0, 0], [1.0, 0.0, 0.0]) == pytest.approx([1.5, -0.25, -0.25])


def test_shaping_rejects_non_expand_order():
    with pytest.raises(ValueError):
        shape_rewards([0, 3, 0], [0.0, 0.0, 0.0])  # node 2's parent (3) comes later
    with pytest.raises(ValueError):
        shape_rewards([0], [0.0, 1.0])


def test_tree_to_samples_shaping_tree_vs_none():
    tree = build_tree()
    cfg = SampleConfig(shaping="tree", max_new_tokens=100, overlong_buffer=10)
    shaped = [s.shaped_reward for s in tree_to_samples(tree, cfg, step=0)]
    assert shaped == pytest.approx([1.5, -0.5, -0.625, 1.125, 1.75])
    none = tree_to_samples(tree, SampleConfig(shaping="none", max_new_tokens=100, overlong_buffer=10), step=0)
    assert [s.shaped_reward for s in none] == REWARDS
    assert [s.reward for s in none] == REWARDS


def test_sample_config_rejects_unknown_shaping():
    with pytest.raises(ValueError):
        SampleConfig(shaping="bogus")


# -- overlong penalty (DAPO) ------------------------------------------------------------------------------------
def test_overlong_penalty_regions():
    # L_max = 100, B = 20 -> E = 80.
    assert overlong_penalty(50, 100, 20) == 0.0
    assert overlong_penalty(80, 100, 20) == 0.0  # L = E: no penalty
    assert overlong_penalty(85, 100, 20) == pytest.approx(-5 / 20)
    assert overlong_penalty(90, 100, 20, factor=2.0) == pytest.approx(-10 / 20 * 2.0)
    assert overlong_penalty(100, 100, 20) == pytest.approx(-1.0)  # L = L_max: full penalty
    assert overlong_penalty(150, 100, 20) == pytest.approx(-1.0)  # beyond: clamped at -factor
    # MARTI's numbers: 32768 / 2048 -> E = 30720
    assert overlong_penalty(30720 + 512, 32768, 2048) == pytest.approx(-0.25)


def test_overlong_applied_before_shaping():
    # Two root children, r = 1 and 1; the second is 90 tokens long with L_max 100, B 20: penalty -0.5.
    tree = build_tree(rewards=[1.0, 1.0], parents=[0, 0], lengths=[10, 90])
    s = tree_to_samples(tree, SampleConfig(max_new_tokens=100, overlong_buffer=20), step=3)
    assert [x.overlong_penalty for x in s] == [0.0, -0.5]
    # penalised rewards 1.0 and 0.5, then sibling-only shaping: 1 + 0.5*(1-0.5) = 1.25, 0.5 + 0.5*(0.5-1) = 0.25
    assert [x.shaped_reward for x in s] == pytest.approx([1.25, 0.25])
    off = tree_to_samples(tree, SampleConfig(max_new_tokens=100, overlong_buffer=20, overlong=False), step=3)
    assert [x.shaped_reward for x in off] == [1.0, 1.0]
    assert [x.advantage for x in off] == [0.0, 0.0]
