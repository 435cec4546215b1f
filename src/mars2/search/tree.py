"""The search tree shared by all agents of one episode (method.md §1)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

from mars2.sandbox.types import Evaluation

ROOT_ID = 0


@dataclass
class Node:
    """One complete response of one agent. The root (id 0) is virtual: no code, no agent.

    ``id`` of a real node is ``expand_idx + 1``; ``expand_idx`` is the creation order 0, 1, 2, …"""

    id: int
    parent_id: int | None
    depth: int
    agent_id: int | None = None
    agent_name: str = ""
    policy_id: str = ""
    text: str = ""
    program: str | None = None
    prompt_ids: list[int] = field(default_factory=list)
    response_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    truncated: bool = False
    evaluation: Evaluation | None = None
    score: float = 0.0  # search score in [0, 1] from public tests
    reward: float = 0.0  # training reward (method.md §2 reward.tests)
    feedback: str = ""  # refinement feedback text built from public tests only
    children: list[int] = field(default_factory=list)

    @property
    def expand_idx(self) -> int:
        return self.id - 1

    @property
    def is_root(self) -> bool:
        return self.id == ROOT_ID

    @property
    def hidden_pass(self) -> bool:
        """The node is correct: ``Evaluation.solved`` (the one definition; the name is the tree files' field)."""
        return bool(self.evaluation and self.evaluation.solved)


@dataclass
class Tree:
    problem_id: str
    nodes: list[Node] = field(default_factory=lambda: [Node(id=ROOT_ID, parent_id=None, depth=0)])

    @property
    def root(self) -> Node:
        return self.nodes[ROOT_ID]

    def __len__(self) -> int:
        """Number of real (non-root) nodes."""
        return len(self.nodes) - 1

    def real_nodes(self) -> Iterator[Node]:
        """Real nodes in expand order."""
        return iter(self.nodes[1:])

    def add(self, node: Node) -> Node:
        if node.parent_id is None or not (0 <= node.parent_id < len(self.nodes)):
            raise ValueError(f"bad parent id {node.parent_id}")
        node.id = len(self.nodes)
        node.depth = self.nodes[node.parent_id].depth + 1
        self.nodes.append(node)
        self.nodes[node.parent_id].children.append(node.id)
        return node
