"""Per-policy asynchronous buffers (method.md §5)."""
import pytest

from mars2.rl.buffers import PolicyBuffer, PolicyBuffers
from mars2.rl.samples import Sample


def mk(pid: str, k: int) -> Sample:
    return Sample(policy_id=pid, agent_id=0, agent_name="a", tree_id=f"t{k}", node_id=k, step=0, prompt_ids=[1],
                  response_ids=[2], reward=0.0, shaped_reward=0.0, advantage=float(k), rollout_logprobs=[-1.0])


def ids(batch):
    return [s.node_id for s in batch]


def test_ready_threshold():
    buf = PolicyBuffer(4)
    buf.add([mk("p", k) for k in range(3)])
    assert len(buf) == 3 and not buf.ready()
    assert buf.take() == [] and len(buf) == 3  # not ready: untouched, skips the round
    buf.add([mk("p", 3)])
    assert buf.ready()


def test_take_floor_oldest_first_drop_remainder():
    buf = PolicyBuffer(3)
    buf.add([mk("p", k) for k in range(5)])
    buf.add([mk("p", k) for k in range(5, 8)])  # 8 samples -> floor(8/3) = 2 minibatches, 2 dropped
    batches = buf.take()
    assert [ids(b) for b in batches] == [[0, 1, 2], [3, 4, 5]]
    assert len(buf) == 0 and buf.last_dropped == 2 and buf.dropped_total == 2


def test_take_keep_remainder():
    buf = PolicyBuffer(3, keep_remainder=True)
    buf.add([mk("p", k) for k in range(8)])
    assert [ids(b) for b in buf.take()] == [[0, 1, 2], [3, 4, 5]]
    assert len(buf) == 2 and not buf.ready()
    buf.add([mk("p", 8)])
    assert [ids(b) for b in buf.take()] == [[6, 7, 8]]  # the kept ones are now the oldest
    assert buf.dropped_total == 0


def test_per_policy_independence_and_routing():
    bufs = PolicyBuffers(["a", "b"], 2)
    bufs.route([mk("a", 0), mk("b", 1), mk("a", 2), mk("a", 3)])
    assert list(bufs) == ["a", "b"] and len(bufs["a"]) == 3 and len(bufs["b"]) == 1
    assert bufs.ready_policies() == ["a"]
    assert [ids(b) for b in bufs["a"].take()] == [[0, 2]]
    assert len(bufs["a"]) == 0 and len(bufs["b"]) == 1  # b untouched by a's round
    bufs.route([mk("b", 4)])
    assert bufs.ready_policies() == ["b"]
    with pytest.raises(KeyError):
        bufs.route([mk("c", 5)])


def test_per_policy_batch_sizes():
    bufs = PolicyBuffers(["a", "b"], {"a": 1, "b": 3})
    bufs.route([mk("a", 0), mk("b", 1), mk("b", 2)])
    assert bufs.ready_policies() == ["a"]


def test_state_dict_roundtrip():
    bufs = PolicyBuffers(["a", "b"], 3, keep_remainder=True)
    bufs.route([mk("a", 0), mk("a", 1), mk("b", 2)])
    state = bufs.state_dict()
    fresh = PolicyBuffers(["a", "b"], 99)
    fresh.load_state_dict(state)
    assert fresh["a"].train_batch_size == 3 and fresh["a"].keep_remainder
    assert ids(fresh["a"]._samples) == [0, 1] and fresh["b"]._samples[0] == mk("b", 2)
    fresh.route([mk("a", 3)])
    assert [ids(b) for b in fresh["a"].take()] == [[0, 1, 3]]


def test_bad_batch_size():
    with pytest.raises(ValueError):
        PolicyBuffer(0)
