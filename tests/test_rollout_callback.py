"""The pieces the TreeSearchRollout callback sequences (issue 20.4): the problem sampler, the collectives'
FSDP test, the per-round metrics and the tree files — each checked against hand-computed values."""
from __future__ import annotations

import json
import random

import pytest

from fakes import fake_problem
from mars2.sandbox.types import Evaluation, ExecResult, TestVerdict
from mars2.search.tree import Node, Tree


# ---- ProblemSampler ------------------------------------------------------------------------------------------
def test_sampler_walks_seeded_permutations_across_passes():
    from mars2.training.sampler import ProblemSampler

    problems = [fake_problem(f"t{i}") for i in range(5)]
    s = ProblemSampler(problems, batch_size=3, seed=7)
    perm0, perm1 = list(range(5)), list(range(5))
    random.Random(7 * 100003 + 0).shuffle(perm0)
    random.Random(7 * 100003 + 1).shuffle(perm1)
    assert s.order(0) == perm0 and s.order(1) == perm1
    ids = lambda b: [p.id for p in b]  # noqa: E731
    assert ids(s.next_batch()) == [f"t{i}" for i in perm0[:3]]
    # the second batch crosses the end of the first pass: 2 from pass 0, then pass 1 starts
    assert ids(s.next_batch()) == [f"t{i}" for i in perm0[3:] + perm1[:1]]
    assert s.state_dict() == {"data_epoch": 1, "data_pos": 1}


def test_sampler_resumes_the_same_sequence_from_its_state():
    from mars2.training.sampler import ProblemSampler

    problems = [fake_problem(f"t{i}") for i in range(4)]
    a = ProblemSampler(problems, 3, seed=0)
    a.next_batch()
    b = ProblemSampler(problems, 3, seed=0)
    b.load_state_dict(a.state_dict())
    assert [[p.id for p in x.next_batch()] for x in (a, a)] == [[p.id for p in y.next_batch()] for y in (b, b)]


def test_sampler_with_an_empty_split_names_it():
    from mars2.resources import SetupError
    from mars2.training.sampler import ProblemSampler

    with pytest.raises(SetupError, match="training split 'valid' has no problems"):
        ProblemSampler([], 2, 0, split="valid").next_batch()


# ---- strategy: FSDP by isinstance -----------------------------------------------------------------------------
def test_fsdp_is_recognised_by_lightnings_class_not_by_name():
    from types import SimpleNamespace

    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy

    from mars2.training.strategy import full_params, uses_fsdp

    class Sub(FSDPStrategy):
        def __init__(self) -> None:  # no process group needed for the type test
            pass

    NamedAlike = type("FSDPStrategy", (), {})  # same class name, not Lightning's strategy
    assert uses_fsdp(SimpleNamespace(strategy=Sub()))
    assert not uses_fsdp(SimpleNamespace(strategy=NamedAlike()))
    assert not uses_fsdp(SimpleNamespace(strategy=DDPStrategy()))
    assert not uses_fsdp(None)
    with full_params(SimpleNamespace(strategy=NamedAlike())):  # a no-op context outside FSDP
        pass


def test_collectives_are_identities_in_one_process():
    from mars2.training.strategy import all_gather, broadcast, dist_info

    assert dist_info() == (0, 1)
    obj = {"a": [1, 2]}
    assert broadcast(obj) is obj and all_gather(obj) == [obj]


# ---- per-round metrics ----------------------------------------------------------------------------------------
def _ev(public: bool, hidden: bool) -> Evaluation:
    res = lambda ok: ExecResult([TestVerdict("passed" if ok else "wrong_answer")])  # noqa: E731
    return Evaluation(res(public), res(hidden))


def _tree() -> Tree:
    """root → n1 (agent 0, fails) → n3 (agent 1, refines n1, passes all); root → n2 (agent 0, public only)."""
    t = Tree("p")
    t.add(Node(id=-1, parent_id=0, depth=0, agent_id=0, program="a", score=0.0, reward=0.0,
               response_ids=[1, 2], evaluation=_ev(False, False)))
    t.add(Node(id=-1, parent_id=0, depth=0, agent_id=0, program=None, score=1.0, reward=0.5,
               response_ids=[1, 2, 3, 4], evaluation=_ev(True, False)))
    t.add(Node(id=-1, parent_id=1, depth=0, agent_id=1, program="c", score=1.0, reward=1.0,
               response_ids=[1, 2, 3, 4, 5, 6], evaluation=_ev(True, True)))
    return t


def test_round_search_stats_by_hand():
    from mars2.metrics.rounds import round_search_stats

    m = round_search_stats([_tree()], ["solver", "debugger"])
    assert m["search/nodes"] == 3.0
    assert m["search/score_mean"] == pytest.approx(2 / 3)
    assert m["search/reward_mean"] == pytest.approx(0.5)
    assert m["search/pass_rate"] == pytest.approx(1 / 3)
    assert m["search/depth_mean"] == pytest.approx(4 / 3) and m["search/depth_max"] == 2.0
    assert m["search/root_width_mean"] == 2.0
    assert m["search/width_mean"] == pytest.approx(1.5) and m["search/width_max"] == 2.0  # root 2, n1 1
    assert m["search/solved_frac"] == 1.0 and m["search/no_code_frac"] == pytest.approx(1 / 3)
    assert m["search/response_len"] == 4.0
    assert m["agent/solver/nodes"] == 2.0 and m["agent/debugger/nodes"] == 1.0
    assert m["agent/solver/reward"] == 0.25 and m["agent/solver/public_pass_rate"] == 0.5
    assert m["agent/solver/refine_frac"] == 0.0 and m["agent/debugger/refine_frac"] == 1.0
    assert m["agent/debugger/pass_rate"] == 1.0 and m["agent/debugger/response_len"] == 6.0
    assert round_search_stats([], ["solver"]) == {}


def test_policy_update_stats_average_ranks_and_count_rank0():
    from mars2.metrics.rounds import policy_update_stats

    rank0 = {"q": [{"loss": 1.0, "train_tokens": 10.0, "train_s": 2.0}, {"loss": 3.0, "train_tokens": 10.0, "train_s": 2.0}]}
    rank1 = {"q": [{"loss": 5.0, "train_tokens": 20.0, "train_s": 9.0}, {"loss": 7.0, "train_tokens": 0.0, "train_s": 9.0}]}
    m, train_s = policy_update_stats([rank0, rank1], ["q", "l"])
    assert m == {"policy/q/updates": 2.0, "policy/q/loss": 4.0, "policy/q/train_tokens_per_s": 40 / 4}
    assert train_s == 4.0  # rank 0's seconds: the ranks step in lockstep


def test_buffer_runner_and_time_stats():
    from mars2.metrics.rounds import buffer_stats, round_time_stats, runner_stats

    assert buffer_stats({"q": 10}, {"q": 3}, {"q": 2}, {"q": 7}) == {
        "policy/q/step": 7.0, "policy/q/buffer_after": 3.0, "policy/q/dropped": 2.0, "policy/q/taken": 5.0}
    r = runner_stats({"generate_s": 2.0, "calls": 3, "label": "x"}, [_tree()])
    assert r == {"search/generate_s": 2.0, "search/calls": 3.0, "search/gen_tokens": 12.0,
                 "search/gen_tokens_per_s": 6.0}
    assert round_time_stats(10.0, 5.0, 2.0, 1.0) == {
        "time/round_s": 10.0, "time/train_s": 5.0, "time/sandbox_share": 0.2, "time/generate_share": 0.1,
        "time/train_share": 0.5}


# ---- tree files -----------------------------------------------------------------------------------------------
def test_eval_trees_file_format(tmp_path):
    from mars2.search.serialize import tree_from_dict
    from mars2.training.tree_files import save_eval_trees

    path = save_eval_trees(tmp_path, {"team": [_tree()]}, 12)
    assert path == tmp_path / "trees" / "eval_round0012.json"
    data = json.loads(path.read_text())
    assert list(data) == ["team"] and len(data["team"]) == 1
    back = tree_from_dict(data["team"][0])
    assert [n.program for n in back.real_nodes()] == ["a", None, "c"]
