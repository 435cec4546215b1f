"""Saved search trees → plain, display-ready records (the explorer's one reader).

Reads the files a run writes (``<run dir>/trees/eval_round<NNNN>.json`` from train.py, ``trees/seed<S>.json``
from evaluate.py): ``{search key: [tree, ...]}`` where a tree is :func:`mars2.search.serialize.tree_to_dict`'s
``{"version", "problem_id", "nodes": [...]}``. A bare tree, a list of trees and a saved search state
(``{"state", "tree"}``) are read too.

Per node: agent, policy, depth, public score, reward, public / hidden tests passed, the program (or the raw
response when no code was extracted), the feedback it produced (what its refinements were shown) and the
feedback it received (its parent's). The final answer is the node :func:`mars2.search.select.final_answer`
picks without a reward model (best public score, ties to the newest); a run that used a reward model
(``eval.reward_model``) may have chosen another node. The layout (x in leaf slots, y = depth) is computed
here so every renderer draws the same tree.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_TEXT = 6000  # characters of a program / response / feedback kept per node

# node status, drawn as the node's colour
STATUS_LABELS = {
    "hidden_pass": "passes public + hidden tests",
    "public_pass": "passes public tests only",
    "partial": "passes some public tests",
    "fail": "fails the public tests",
    "no_code": "no code extracted",
}
# tree outcome, used by the filters
OUTCOME_LABELS = {
    "solved": "final answer correct",
    "missed": "a correct node exists, the final answer is wrong",
    "overfit": "final answer passes public tests only",
    "unsolved": "no correct node",
}


class TreeFileError(ValueError):
    """The file is not a saved search-tree file (one line for the CLI)."""


@dataclass
class ViewNode:
    id: int
    parent: int | None
    depth: int
    agent: str
    policy: str
    score: float
    reward: float
    public: tuple[int, int]  # (passed, total)
    hidden: tuple[int, int]
    public_pass: bool
    hidden_pass: bool
    truncated: bool
    status: str
    program: str | None
    text: str
    feedback: str
    received: str
    children: list[int] = field(default_factory=list)
    x: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "parent": self.parent, "depth": self.depth, "agent": self.agent, "policy": self.policy,
            "score": self.score, "reward": self.reward, "public": list(self.public), "hidden": list(self.hidden),
            "public_pass": self.public_pass, "hidden_pass": self.hidden_pass, "truncated": self.truncated,
            "status": self.status, "program": self.program, "text": self.text, "feedback": self.feedback,
            "received": self.received, "children": self.children, "x": self.x,
        }


@dataclass
class ViewTree:
    search: str
    index: int
    problem: str
    nodes: list[ViewNode]  # the virtual root first (id 0), then the real nodes in id (= expand) order
    final: int | None
    outcome: str
    width: int  # leaf slots of the layout

    @property
    def n_real(self) -> int:
        return len(self.nodes) - 1

    def as_dict(self) -> dict[str, Any]:
        best = max((n.score for n in self.nodes[1:]), default=0.0)
        return {
            "search": self.search, "index": self.index, "problem": self.problem, "final": self.final,
            "outcome": self.outcome, "width": self.width, "n_nodes": self.n_real,
            "depth": max((n.depth for n in self.nodes), default=0), "best_score": best,
            "agents": sorted({n.agent for n in self.nodes[1:] if n.agent}),
            "nodes": [n.as_dict() for n in self.nodes],
        }


def _clip(s: Any) -> str:
    s = "" if s is None else str(s)
    return s if len(s) <= MAX_TEXT else s[:MAX_TEXT] + f"\n… ({len(s) - MAX_TEXT} more characters)"


def _tests(ev: Any, part: str) -> tuple[int, int, bool]:
    """(passed, total, any no_code) of ``evaluation[part]``."""
    verdicts = ((ev or {}).get(part) or {}).get("verdicts") or []
    passed = sum(1 for v in verdicts if v.get("status") == "passed")
    no_code = any(v.get("status") == "no_code" for v in verdicts)
    return passed, len(verdicts), no_code


def _node(d: dict[str, Any]) -> ViewNode:
    ev = d.get("evaluation")
    pp, pn, no_code = _tests(ev, "public")
    hp, hn, _ = _tests(ev, "hidden")
    public_pass = pn > 0 and pp == pn
    hidden_pass = bool(d.get("hidden_pass")) if "hidden_pass" in d else (public_pass and hn > 0 and hp == hn)
    program = d.get("program")
    if d.get("parent_id") is None:
        status = "root"
    elif hidden_pass:
        status = "hidden_pass"
    elif public_pass:
        status = "public_pass"
    elif program is None and (no_code or not pn):
        status = "no_code"
    elif pp > 0:
        status = "partial"
    else:
        status = "fail"
    return ViewNode(
        id=int(d["id"]), parent=None if d.get("parent_id") is None else int(d["parent_id"]),
        depth=int(d.get("depth", 0)), agent=str(d.get("agent_name") or ""), policy=str(d.get("policy_id") or ""),
        score=float(d.get("score", 0.0)), reward=float(d.get("reward", 0.0)), public=(pp, pn), hidden=(hp, hn),
        public_pass=public_pass, hidden_pass=hidden_pass, truncated=bool(d.get("truncated", False)), status=status,
        program=None if program is None else _clip(program), text=_clip(d.get("text", "")) if program is None else "",
        feedback=_clip(d.get("feedback", "")), received="",
    )


def final_node(nodes: list[ViewNode]) -> int | None:
    """The final answer without a reward model: best public score, ties to the newest (highest id) —
    the rule of :func:`mars2.search.select.final_answer`."""
    real = [n for n in nodes if n.parent is not None]
    return max(real, key=lambda n: (n.score, n.id)).id if real else None


def layout(nodes: list[ViewNode]) -> int:
    """x of every node in leaf slots (leaves left to right in id order, a parent centred over its children);
    returns the number of slots. Iterative, so a deep sequential chain cannot hit the recursion limit."""
    by_id = {n.id: n for n in nodes}
    if not nodes:
        return 0
    root = next((n for n in nodes if n.parent is None), nodes[0])
    slot = 0
    stack: list[tuple[ViewNode, bool]] = [(root, False)]
    while stack:
        n, expanded = stack.pop()
        kids = [by_id[c] for c in n.children if c in by_id]
        if not kids:
            n.x = float(slot)
            slot += 1
        elif expanded:
            n.x = (kids[0].x + kids[-1].x) / 2.0
        else:
            stack.append((n, True))
            stack.extend((k, False) for k in reversed(kids))
    return max(slot, 1)


def view_tree(d: dict[str, Any], search: str, index: int) -> ViewTree:
    if not isinstance(d, dict) or not isinstance(d.get("nodes"), list):
        raise TreeFileError(f"{search}[{index}] is not a tree (no 'nodes' list)")
    try:
        nodes = [_node(nd) for nd in d["nodes"]]
    except (KeyError, TypeError, ValueError) as e:
        raise TreeFileError(f"{search}[{index}]: malformed node ({type(e).__name__}: {e})") from None
    by_id = {n.id: n for n in nodes}
    for n in nodes:  # children from the parent links (the saved `children` lists say the same)
        if n.parent is not None and n.parent in by_id:
            by_id[n.parent].children.append(n.id)
            n.received = by_id[n.parent].feedback
    for n in nodes:
        n.children.sort()
    final = final_node(nodes)
    solved_any = any(n.hidden_pass for n in nodes)
    fin = by_id.get(final) if final is not None else None
    if fin is not None and fin.hidden_pass:
        outcome = "solved"
    elif solved_any:
        outcome = "missed"
    elif fin is not None and fin.public_pass:
        outcome = "overfit"
    else:
        outcome = "unsolved"
    width = layout(nodes)
    return ViewTree(search=search, index=index, problem=str(d.get("problem_id", f"tree {index}")), nodes=nodes,
                    final=final, outcome=outcome, width=width)


def load_trees(path: str | Path) -> list[ViewTree]:
    """Every tree of a saved tree file, in file order. Raises :class:`TreeFileError` (one line) on a file
    that is missing, not JSON, or not a tree file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise TreeFileError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise TreeFileError(f"{p} is a directory; give one tree file, e.g. {p}/eval_round0001.json") from None
    except (OSError, UnicodeDecodeError) as e:
        raise TreeFileError(f"{p}: cannot read ({e})") from None
    except json.JSONDecodeError as e:
        raise TreeFileError(f"{p}: not JSON ({e.msg} at line {e.lineno}; a run killed while writing it?)") from None
    if isinstance(data, dict) and "tree" in data and "state" in data:  # a saved search state
        groups = {"search": [data["tree"]]}
    elif isinstance(data, dict) and "nodes" in data:
        groups = {"tree": [data]}
    elif isinstance(data, list):
        groups = {"trees": data}
    elif isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        groups = data
    else:
        raise TreeFileError(f"{p}: not a search-tree file (expected {{search: [tree, ...]}} as in "
                            "<run dir>/trees/*.json)")
    trees = [view_tree(t, str(key), i) for key, ts in groups.items() for i, t in enumerate(ts)]
    if not trees:
        raise TreeFileError(f"{p}: the file holds no trees")
    return trees


def select(trees: list[ViewTree], problem: str | None = None, search: str | None = None,
           outcome: str | None = None) -> list[ViewTree]:
    """Trees whose problem id contains ``problem``, of search key ``search``, with outcome ``outcome``."""
    out = trees
    if problem:
        out = [t for t in out if problem in t.problem]
    if search:
        out = [t for t in out if t.search == search]
    if outcome:
        out = [t for t in out if t.outcome == outcome]
    return out
