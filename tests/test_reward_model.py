"""T+ reward model (method.md §6.3): labels from trees, AUC, and that both models learn a held-out task."""
import math
import random

import pytest
import torch

from mars2.reward_model import (
    HashedNgramRM,
    RMExample,
    RMTrainConfig,
    ValueHeadRM,
    evaluate_reward_model,
    examples_from_trees,
    load_reward_model,
    roc_auc,
    save_reward_model,
    split_by_problem,
    train_reward_model,
)
from mars2.sandbox.types import Evaluation, ExecResult, TestVerdict
from mars2.search.tree import Node, Tree
from mars2.tasks.problem import Problem, TestCase


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def test_roc_auc_hand_values():
    # positives 0.35, 0.8; negatives 0.1, 0.4: pairs (0.35>0.1 yes, 0.35>0.4 no, 0.8>both yes) -> 3/4
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert roc_auc([0.5, 0.5, 0.5], [1, 0, 0]) == pytest.approx(0.5)  # ties count one half
    assert roc_auc([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0]) == pytest.approx((1 + 1 + 0.5 + 1) / 4)
    assert roc_auc([0.0, 1.0], [1, 0]) == 0.0
    assert math.isnan(roc_auc([0.2, 0.3], [1, 1]))


def _ev(public_ok: bool, hidden_ok: bool) -> Evaluation:
    v = lambda ok: [TestVerdict(status="passed" if ok else "wrong_answer")]  # noqa: E731
    return Evaluation(public=ExecResult(v(public_ok)), hidden=ExecResult(v(hidden_ok)))


def test_examples_from_trees_labels_and_split():
    probs = [Problem(id=f"p{i}", statement=f"task {i}", mode="stdin", public_tests=(TestCase("1", "1"),),
                     hidden_tests=(TestCase("2", "2"),)) for i in range(5)]
    trees = []
    for p in probs:
        t = Tree(problem_id=p.id)
        t.add(Node(id=-1, parent_id=0, depth=0, program="print(1)", evaluation=_ev(True, True), score=1.0))
        t.add(Node(id=-1, parent_id=1, depth=0, program="print(2)", evaluation=_ev(True, False), score=1.0))
        t.add(Node(id=-1, parent_id=1, depth=0, program=None, evaluation=_ev(False, False)))  # no code
        t.add(Node(id=-1, parent_id=0, depth=0, program="print(3)", evaluation=None))  # not evaluated
        trees.append(t)
    ex = examples_from_trees(trees, probs)
    assert len(ex) == 10
    assert [(e.node_id, e.label, e.public_score) for e in ex[:2]] == [(1, 1.0, 1.0), (2, 0.0, 1.0)]
    assert ex[0].problem_text == "task 0" and ex[0].program == "print(1)"
    assert len(examples_from_trees(trees, {p.id: p for p in probs}, include_no_code=True)) == 15
    train, held = split_by_problem(ex, 0.4, seed=1)
    tr_ids, ho_ids = {e.problem_id for e in train}, {e.problem_id for e in held}
    assert len(ho_ids) == 2 and len(tr_ids) == 3 and not tr_ids & ho_ids
    assert split_by_problem(ex, 0.4, seed=1) == (train, held)  # seeded


FAMILIES = {
    "sort": ("Sort the {n} numbers in increasing order.", "return sorted({v})"),
    "reverse": ("Reverse the order of the {n} items.", "return {v}[::-1]"),
    "sum": ("Return the total of the {n} values.", "return sum({v})"),
    "max": ("Return the largest of the {n} values.", "return max({v})"),
}


def synthetic(n_problems: int, seed: int) -> list[RMExample]:
    """Correct iff the program's operation matches the statement's family: needs statement × program."""
    rng = random.Random(seed)
    out = []
    for i in range(n_problems):
        fam = rng.choice(list(FAMILIES))
        text = FAMILIES[fam][0].format(n=rng.randint(2, 99))
        for other in FAMILIES:
            v = rng.choice(["xs", "a", "items", "data"])
            prog = f"def solve({v}):\n    " + FAMILIES[other][1].format(v=v)
            out.append(RMExample(f"q{seed}_{i}", text, prog, 1.0 if other == fam else 0.0))
    return out


def test_hashed_rm_learns_held_out_problems(tmp_path):
    train, held = synthetic(60, seed=0), synthetic(20, seed=1)
    model = HashedNgramRM(n_buckets=1024, hidden=32, seed=0)
    before = evaluate_reward_model(model, held)
    hist = train_reward_model(model, train, RMTrainConfig(epochs=15, batch_size=16, lr=1e-2), held_out=held)
    after = evaluate_reward_model(model, held)
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    # every program family is correct equally often, so a program-only (or statement-only) model has AUC 0.5:
    # clearing 0.9 on unseen problems needs the statement × program interaction (measured: 0.96)
    assert after["auc"] > 0.9 and before["auc"] < 0.7
    assert after["pos_frac"] == 0.25 and after["n"] == 80
    path = tmp_path / "rm.pt"
    save_reward_model(model, path)
    again = load_reward_model(path)
    probe = ([e.problem_text for e in held[:8]], [e.program for e in held[:8]])
    assert again.score(*probe) == pytest.approx(model.score(*probe))


class CharTok:
    """Stand-in tokenizer: one id per character (mod 64)."""

    pad_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [1 + ord(c) % 63 for c in text]}


def tiny_backbone(seed=0):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    return Qwen3ForCausalLM(Qwen3Config(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                        num_key_value_heads=1, head_dim=16, intermediate_size=64, pad_token_id=0))


def test_value_head_rm_pooling_training_and_save(tmp_path):
    model = ValueHeadRM(tiny_backbone(), CharTok(), max_length=64)
    # the logit of a row does not depend on the right padding added for a longer neighbour
    short = model.score(["sort"], ["return sorted(xs)"])[0]
    both = model.score(["sort", "sort the numbers please"], ["return sorted(xs)", "return sorted(xs) + []"])
    assert both[0] == pytest.approx(short, abs=1e-5)
    data = [RMExample("a", "s", "good", 1.0), RMExample("a", "s", "bad!", 0.0)] * 4
    hist = train_reward_model(model, data, RMTrainConfig(epochs=8, batch_size=8, lr=1e-2))
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    p_good, p_bad = model.score(["s", "s"], ["good", "bad!"])
    assert p_good > p_bad
    save_reward_model(model, tmp_path / "vh.pt")
    again = load_reward_model(tmp_path / "vh.pt", backbone=tiny_backbone(seed=5), tokenizer=CharTok())
    assert again.score(["s", "s"], ["good", "bad!"]) == pytest.approx([p_good, p_bad], abs=1e-6)
    with pytest.raises(ValueError):
        load_reward_model(tmp_path / "vh.pt")
