"""Tree-level advantages and tree → samples (method.md §4.3, §4.4)."""
import math

import pytest

from mars2.rl.advantages import tree_advantages
from mars2.rl.samples import Sample, SampleConfig, samples_stats, tree_to_samples
from mars2.rl.shaping import shape_rewards
from mars2.search.tree import Node, Tree


def test_advantages_hand_values():
    # x = 1, 2, 3, 6: mean 3, unbiased var = (4 + 1 + 0 + 9) / 3 = 14/3
    std = math.sqrt(14 / 3)
    assert tree_advantages([1, 2, 3, 6]) == pytest.approx([-2 / std, -1 / std, 0.0, 3 / std])
    # binary group 1, 0, 0, 0: mean .25, unbiased std = sqrt((.5625 + 3 * .0625) / 3) = 0.5
    assert tree_advantages([1, 0, 0, 0]) == pytest.approx([1.5, -0.5, -0.5, -0.5])


def test_advantages_properties():
    x = [0.3, -1.2, 2.5, 0.0, 0.7, 1.1]
    a = tree_advantages(x)
    mean = sum(a) / len(a)
    var_unbiased = sum((v - mean) ** 2 for v in a) / (len(a) - 1)
    assert mean == pytest.approx(0.0, abs=1e-12)
    assert var_unbiased == pytest.approx(1.0, rel=1e-6)  # unbiased std 1 (a biased std would give ≈ 0.913)
    xm = sum(x) / len(x)
    for xi, ai in zip(x, a):
        assert (ai > 0) == (xi > xm)  # above-mean nodes positive, below-mean negative


def test_advantages_degenerate():
    assert tree_advantages([0.1, 0.1, 0.1]) == [0.0, 0.0, 0.0]  # exact zeros
    assert tree_advantages([1.0, 1.0]) == [0.0, 0.0]
    assert tree_advantages([5.0]) == [0.0]
    assert tree_advantages([]) == []


def _tree(spec):
    """spec: list of (parent_id, reward, policy_id, agent_id)."""
    tree = Tree(problem_id="prob-7")
    for parent, r, pid, aid in spec:
        tree.add(Node(id=-1, parent_id=parent, depth=0, agent_id=aid, agent_name=f"agent{aid}", policy_id=pid,
                      reward=r, prompt_ids=[1, 2, 3], response_ids=[7, 8], logprobs=[-0.1, -0.2]))
    return tree


def test_tree_to_samples_team_normalisation_before_split():
    # Policy "weak" writes only nodes with reward 0, policy "strong" the rewarded ones. Normalised over the
    # whole tree, "weak" gets only negative advantages; normalising per policy would give it all zeros.
    spec = [(0, 1.0, "strong", 0), (0, 0.0, "weak", 1), (1, 0.0, "weak", 1), (1, 1.0, "strong", 0),
            (2, 1.0, "strong", 0)]
    samples = tree_to_samples(_tree(spec), SampleConfig(max_new_tokens=100, overlong_buffer=10), step=4)
    shaped = shape_rewards([0, 0, 1, 1, 2], [1, 0, 0, 1, 1])
    assert [s.advantage for s in samples] == pytest.approx(tree_advantages(shaped))
    weak = [s.advantage for s in samples if s.policy_id == "weak"]
    strong = [s.advantage for s in samples if s.policy_id == "strong"]
    assert len(weak) == 2 and all(a < 0 for a in weak)
    assert len(strong) == 3 and all(a > 0 for a in strong)
    # one sample per node, for its writer's policy, carrying its data
    s = samples[2]
    assert (s.node_id, s.parent_id, s.tree_id, s.step, s.policy_id, s.agent_id, s.agent_name) == \
        (3, 1, "prob-7", 4, "weak", 1, "agent1")
    assert s.prompt_ids == [1, 2, 3] and s.response_ids == [7, 8] and s.rollout_logprobs == [-0.1, -0.2]
    assert s.old_logprobs is None and s.depth == 2


def test_flat_tree_equals_grpo_group_advantage():
    # iid search: all nodes are root children; shaping is affine with a common offset -> same advantages.
    rewards = [1.0, 0.0, 0.0, 1.0, 0.0]
    spec = [(0, r, "p", 0) for r in rewards]
    shaped = tree_to_samples(_tree(spec), SampleConfig(max_new_tokens=100, overlong_buffer=10), 0)
    plain = tree_to_samples(_tree(spec), SampleConfig(shaping="none", max_new_tokens=100, overlong_buffer=10), 0)
    assert [s.advantage for s in shaped] == pytest.approx([s.advantage for s in plain])
    assert [s.advantage for s in plain] == pytest.approx(tree_advantages(rewards))


def test_empty_response_counts_in_stats_but_yields_no_sample():
    tree = _tree([(0, 1.0, "p", 0), (0, 0.0, "p", 0), (0, 0.0, "p", 0)])
    tree.nodes[3].response_ids, tree.nodes[3].logprobs = [], []
    samples = tree_to_samples(tree, SampleConfig(shaping="none", max_new_tokens=100, overlong_buffer=10), 0)
    assert [s.node_id for s in samples] == [1, 2]
    # the group is still the 3 nodes 1, 0, 0: mean 1/3, unbiased var (4/9 + 1/9 + 1/9) / 2 = 1/3
    assert [s.advantage for s in samples] == pytest.approx([2 / math.sqrt(3), -1 / math.sqrt(3)])


def test_empty_tree():
    assert tree_to_samples(Tree(problem_id="x"), SampleConfig(), 0) == []


def test_samples_stats():
    mk = lambda pid, name, adv, r: Sample(pid, 0, name, "t", 1, 0, [1], [2, 3], r, r, adv, [-1.0, -1.0])  # noqa: E731
    st = samples_stats([mk("p", "x", 1.0, 1.0), mk("p", "y", -1.0, 0.0), mk("q", "y", -0.5, 0.0)])
    assert st["samples"] == 3
    assert st["reward_mean"] == pytest.approx(1 / 3)
    assert st["advantage_mean"] == pytest.approx(-0.5 / 3)
    assert st["advantage_pos_frac"] == pytest.approx(1 / 3)
    assert st["policy/p/advantage_mean"] == 0.0 and st["policy/q/samples"] == 1
    assert st["agent/y/reward_mean"] == 0.0
    assert st["response_len_mean"] == 2.0
    assert samples_stats([]) == {}
