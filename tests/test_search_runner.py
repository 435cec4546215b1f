"""SearchRunner (method.md §3 "Budgets", §1 prompts, §2 scores/rewards/feedback) with the FAKE backend and
scorer from tests/fakes.py."""
from __future__ import annotations

import pytest
from fakes import HIDDEN_MARK, FakeBackend, FakeScorer, fake_problem, response

from mars2.agents.base import AgentSpec
from mars2.agents.prompts import fresh_messages
from mars2.search.factory import SearchConfig
from mars2.rl.reward import training_reward
from mars2.rollout.runner import SearchRunner, search_score

AGENTS = [AgentSpec("coder", "You write code.", "pol_a"), AgentSpec("debugger", "You fix code.", "pol_b")]


def cycling_backend():
    # public 1/2 passing, hidden failing → the search keeps refining; every 4th response has no code
    texts = [response([1, 0], [0, 0, 0], "a"), response([0, 1], [1, 0, 0], "b"),
             response([1, 1], [1, 1, 0], "c"), "I am not sure how to do this."]
    return FakeBackend(texts)


@pytest.mark.parametrize("mode", ["ab_mcts", "t_plus", "iid", "sequential"])
def test_one_generate_call_per_round_across_trees(mode):
    problems = [fake_problem(f"p{i}") for i in range(3)]
    backend, scorer = cycling_backend(), FakeScorer()
    runner = SearchRunner(backend, scorer, AGENTS, SearchConfig(mode=mode, budget=4))
    trees = runner.run(problems, seed=1)
    assert [len(t) for t in trees] == [4, 4, 4]
    assert [t.problem_id for t in trees] == ["p0", "p1", "p2"]
    assert len(backend.calls) == 4 and [len(c) for c in backend.calls] == [3, 3, 3, 3]
    assert len(scorer.calls) == 4 and [len(c) for c in scorer.calls] == [3, 3, 3, 3]
    # each batch holds one request per tree, in problem order
    for call in scorer.calls:
        assert [p.id for p, _ in call] == ["p0", "p1", "p2"]
    assert runner.stats["nodes"] == 12 and runner.stats["generate_calls"] == 4 and runner.stats["batch_max"] == 3
    assert runner.stats["generate_s"] >= 0 and runner.stats["score_s"] >= 0


def test_budget_override_and_progress():
    seen = []
    runner = SearchRunner(FakeBackend(), FakeScorer(), AGENTS, SearchConfig(budget=8))
    trees = runner.run([fake_problem("a"), fake_problem("b")], budget=3, progress=lambda d, t: seen.append((d, t)))
    assert [len(t) for t in trees] == [3, 3]
    assert seen == [(2, 6), (4, 6), (6, 6)]


@pytest.mark.parametrize("feedback", ["vanilla", "t_plus"])
def test_refine_prompts_hold_parent_program_and_public_feedback(feedback):
    problems = [fake_problem("p0"), fake_problem("p1")]
    backend, scorer = cycling_backend(), FakeScorer()
    runner = SearchRunner(backend, scorer, AGENTS, SearchConfig(mode="sequential", budget=5, feedback=feedback))
    trees = runner.run(problems)
    for round_idx, call in enumerate(backend.calls):
        for tree, req in zip(trees, call):
            node = tree.nodes[round_idx + 1]
            assert req.policy_id == AGENTS[node.agent_id].policy_id
            assert req.messages[0] == {"role": "system", "content": AGENTS[node.agent_id].role_prompt}
            user = req.messages[-1]["content"]
            if round_idx == 0:  # fresh solution under the root
                assert req.messages == fresh_messages(problems[trees.index(tree)], AGENTS[node.agent_id])
                continue
            parent = tree.nodes[node.parent_id]
            assert parent.feedback and parent.feedback.strip() in user
            if parent.program is not None:
                assert parent.program in user
            else:
                assert "no code" in user.lower()
            assert problems[trees.index(tree)].statement in user  # include_statement=True (default)
    # hidden test data never reaches feedback or prompts
    for tree in trees:
        for n in tree.real_nodes():
            assert HIDDEN_MARK not in n.feedback
    for call in backend.calls:
        for req in call:
            assert all(HIDDEN_MARK not in m["content"] for m in req.messages)


def test_include_statement_off():
    runner = SearchRunner(cycling_backend(), FakeScorer(), AGENTS[:1],
                          SearchConfig(mode="sequential", budget=2, include_statement=False))
    problem = fake_problem("p0")
    runner.run([problem])
    refine_user = runner.backend.calls[1][0].messages[-1]["content"]
    assert problem.statement not in refine_user and "Previous program" in refine_user


def test_node_fields_scores_and_rewards():
    backend = FakeBackend([response([1, 1], [1, 0, 1], "x")])
    runner = SearchRunner(backend, FakeScorer(), AGENTS, SearchConfig(mode="iid", budget=2, score="fraction"),
                          reward_tests="public")
    (tree,) = runner.run([fake_problem("p0")])
    n1, n2 = tree.nodes[1], tree.nodes[2]
    assert (n1.agent_id, n1.agent_name, n1.policy_id) == (0, "coder", "pol_a")
    assert (n2.agent_id, n2.agent_name, n2.policy_id) == (1, "debugger", "pol_b")
    assert n1.program is not None and "# public: 1 1" in n1.program and n1.text == backend.respond(None, 0)
    assert n1.logprobs == [-0.25] * len(n1.response_ids) and n1.prompt_ids and not n1.truncated
    assert n1.score == 1.0 and n1.reward == 1.0  # public all pass; reward on public tests only
    assert not n1.hidden_pass  # hidden test 2 fails
    assert "Correct" in n1.feedback or "correct" in n1.feedback


def test_search_score_and_training_reward():
    ev = FakeScorer().evaluate(fake_problem("p", n_public=4, n_hidden=2), "# public: 1 1 1 0\n# hidden: 1 1")
    assert search_score(ev, "pass_all") == 0.0 and search_score(ev, "fraction") == 0.75
    assert training_reward(ev, "all") == 0.0 and training_reward(ev, "public") == 0.0
    assert training_reward(ev, "hidden") == 1.0
    ev2 = FakeScorer().evaluate(fake_problem("p"), "# public: 1 1\n# hidden: 1 1 1")
    assert search_score(ev2, "pass_all") == 1.0 and training_reward(ev2, "all") == 1.0
    with pytest.raises(ValueError):
        SearchRunner(FakeBackend(), FakeScorer(), AGENTS, SearchConfig(), reward_tests="private")


def test_no_code_node():
    runner = SearchRunner(FakeBackend(["no code here"]), FakeScorer(), AGENTS[:1], SearchConfig(budget=1))
    (tree,) = runner.run([fake_problem("p0")])
    n = tree.nodes[1]
    assert n.program is None and n.score == 0.0 and n.reward == 0.0 and "no code" in n.feedback.lower()


def test_t_plus_feedback_names_the_failing_public_test():
    runner = SearchRunner(FakeBackend([response([1, 0], [0, 0, 0])]), FakeScorer(), AGENTS[:1],
                          SearchConfig(mode="t_plus", budget=1))
    (tree,) = runner.run([fake_problem("p0")])
    fb = tree.nodes[1].feedback
    assert "wrong_1" in fb  # the actual output of the first failing public test (input [[1]])
    assert HIDDEN_MARK not in fb and len(fb) <= 600


def test_seeded_runs_are_reproducible():
    def run(seed):
        runner = SearchRunner(cycling_backend(), FakeScorer(), AGENTS, SearchConfig(budget=10))
        return [[(n.parent_id, n.agent_id) for n in t.real_nodes()]
                for t in runner.run([fake_problem("a"), fake_problem("b")], seed=seed)]

    assert run(3) == run(3)
    assert run(3) != run(4)
