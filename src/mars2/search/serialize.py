"""Trees and search states ⇄ JSON-able dicts, so trees can be saved, reloaded, plotted and resumed.

- :func:`tree_to_dict` / :func:`tree_from_dict`: the tree alone (nodes with their evaluations).
- :func:`search_to_dict` / :func:`search_from_dict`: a search state (tree + generator state + T+ counts +
  mode settings). The Thompson states and agent arms are a deterministic function of the tree (each commit
  updates them from the new node's path, agent and score), so loading *replays* the commits in expand
  order instead of trusting stored numbers; the stored posteriors are there for inspection only. A resumed
  search continues exactly as the uninterrupted one would (same generator state).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from mars2.sandbox.types import Evaluation, ExecResult, TestVerdict
from mars2.search.ab_mcts import ABMCTSSearch, Expansion, GenDiscount, TreeSearch
from mars2.search.baselines import IIDSearch, SequentialSearch
from mars2.search.tree import ROOT_ID, Node, Tree

FORMAT_VERSION = 1


# -- evaluation -----------------------------------------------------------------------------------------------
def _exec_to_dict(r: ExecResult) -> dict[str, Any]:
    return {"verdicts": [dataclasses.asdict(v) for v in r.verdicts], "wall_s": float(r.wall_s)}


def _exec_from_dict(d: dict[str, Any]) -> ExecResult:
    return ExecResult(verdicts=[TestVerdict(**v) for v in d.get("verdicts", [])], wall_s=float(d.get("wall_s", 0.0)))


def evaluation_to_dict(e: Evaluation | None) -> dict[str, Any] | None:
    if e is None:
        return None
    return {"public": _exec_to_dict(e.public), "hidden": _exec_to_dict(e.hidden)}


def evaluation_from_dict(d: dict[str, Any] | None) -> Evaluation | None:
    if d is None:
        return None
    return Evaluation(public=_exec_from_dict(d["public"]), hidden=_exec_from_dict(d["hidden"]))


# -- nodes and trees ------------------------------------------------------------------------------------------
def node_to_dict(n: Node) -> dict[str, Any]:
    return {
        "id": n.id,
        "parent_id": n.parent_id,
        "depth": n.depth,
        "agent_id": n.agent_id,
        "agent_name": n.agent_name,
        "policy_id": n.policy_id,
        "text": n.text,
        "program": n.program,
        "prompt_ids": [int(t) for t in n.prompt_ids],
        "response_ids": [int(t) for t in n.response_ids],
        "logprobs": [float(x) for x in n.logprobs],
        "truncated": bool(n.truncated),
        "evaluation": evaluation_to_dict(n.evaluation),
        "score": float(n.score),
        "reward": float(n.reward),
        "feedback": n.feedback,
        "children": list(n.children),
        # convenience for readers of saved trees (not read back)
        "hidden_pass": n.hidden_pass,
    }


def node_from_dict(d: dict[str, Any]) -> Node:
    return Node(
        id=int(d["id"]),
        parent_id=d["parent_id"],
        depth=int(d["depth"]),
        agent_id=d.get("agent_id"),
        agent_name=d.get("agent_name", ""),
        policy_id=d.get("policy_id", ""),
        text=d.get("text", ""),
        program=d.get("program"),
        prompt_ids=list(d.get("prompt_ids", [])),
        response_ids=list(d.get("response_ids", [])),
        logprobs=list(d.get("logprobs", [])),
        truncated=bool(d.get("truncated", False)),
        evaluation=evaluation_from_dict(d.get("evaluation")),
        score=float(d.get("score", 0.0)),
        reward=float(d.get("reward", 0.0)),
        feedback=d.get("feedback", ""),
        children=list(d.get("children", [])),
    )


def tree_to_dict(tree: Tree) -> dict[str, Any]:
    """Every node, root included, in id (= expand) order."""
    return {"version": FORMAT_VERSION, "problem_id": tree.problem_id, "nodes": [node_to_dict(n) for n in tree.nodes]}


def tree_from_dict(d: dict[str, Any]) -> Tree:
    nodes = [node_from_dict(nd) for nd in d["nodes"]]
    for i, n in enumerate(nodes):
        if n.id != i:
            raise ValueError(f"tree {d.get('problem_id')!r}: node at position {i} has id {n.id}")
    return Tree(problem_id=d["problem_id"], nodes=nodes)


# -- search states --------------------------------------------------------------------------------------------
def search_to_dict(search: TreeSearch) -> dict[str, Any]:
    """Tree + search state. Pending (proposed, uncommitted) expansions cannot be saved: commit them first."""
    if search.pending:
        raise ValueError(f"search on {search.tree.problem_id!r} has {search.pending} uncommitted expansion(s); "
                         "commit them before saving")
    return {"version": FORMAT_VERSION, "state": search.state_dict(), "tree": tree_to_dict(search.tree)}


def _rng_from_state(state: dict[str, Any]) -> np.random.Generator:
    bitgen = getattr(np.random, state["bit_generator"])()
    bitgen.state = state
    return np.random.Generator(bitgen)


def search_from_dict(d: dict[str, Any]) -> TreeSearch:
    """Rebuild a search state by replaying the saved tree's commits, then restore the generator and counts."""
    st = d["state"]
    saved = tree_from_dict(d["tree"])
    tree = Tree(problem_id=saved.problem_id)
    rng = _rng_from_state(st["rng"])
    mode = st["mode"]
    search: TreeSearch
    if mode == "ab_mcts":
        gd = st.get("gen_discount")
        search = ABMCTSSearch(
            tree, st["n_agents"], rng, posterior=st["posterior"], prior_mean=st.get("prior_mean"),
            prior_mean_scope=st.get("prior_mean_scope", "agents"),
            # states saved before the discount had a `form` used the product form: resume them with it
            gen_discount=None if gd is None else GenDiscount(**{"form": "product", **gd}), budget=st.get("budget"),
            parallel_rule=st.get("parallel_rule", "virtual_loss"),
        )
    elif mode == "iid":
        search = IIDSearch(tree, st["n_agents"], rng, budget=st.get("budget"))
    elif mode == "sequential":
        search = SequentialSearch(tree, st["n_agents"], rng, budget=st.get("budget"))
    else:
        raise ValueError(f"unknown search mode {mode!r}")
    for node in saved.nodes[1:]:
        node.children = []
        assert node.parent_id is not None and node.agent_id is not None
        search.commit(Expansion(node.parent_id, node.agent_id), node)
    if isinstance(search, ABMCTSSearch):
        search.gen_counts = {int(k): int(v) for k, v in st.get("gen_counts", {}).items()}
    assert search.pending == 0
    assert len(search.tree) == len(saved) and search.tree.nodes[ROOT_ID].children == saved.root.children
    return search
