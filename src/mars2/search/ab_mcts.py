"""Multi-agent AB-MCTS-A (method.md §3) with the T+ depth-guided GEN discount (method.md §6.2).

The interface is split so that many trees can advance together with one batched generation call:

- :meth:`TreeSearch.propose` — selection and agent choice (§3 steps 1–3): which node to expand, by which
  agent. Returns an :class:`Expansion`.
- :meth:`TreeSearch.commit` — the scored node goes into the tree (``Tree.add``) and is backpropagated
  (§3 step 4).
- :meth:`TreeSearch.step` — propose + generate + commit for a single tree (treequest's ``step()``).

Order of random draws (all from the tree's own generator, so a seed fixes the whole search): at each
visited node with child posteriors, one GEN draw, then one CONT draw, then — if CONT wins — one draw per
child in creation order; finally one draw per agent (none with a single agent). Ties go to GEN, then to the
earliest child / lowest agent id (TreeQuest's tie rules). Unlike TreeQuest we do not draw GEN/CONT where the
outcome is forced (empty root, leaf): the distribution of the search is the same, fewer draws are spent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from mars2.search.posteriors import Posterior, make_posterior
from mars2.search.tree import ROOT_ID, Node, Tree


@dataclass(frozen=True)
class Expansion:
    """A pending expansion: agent ``agent_id`` writes a new child of node ``parent_id``.

    A child of the root is a fresh solution; any other child is a refinement of its parent (§1)."""

    parent_id: int
    agent_id: int

    @property
    def fresh(self) -> bool:
        return self.parent_id == ROOT_ID


@dataclass(frozen=True)
class GenDiscount:
    """T+ depth-guided GEN discount (method.md §6.2, schedule = our choice): at a node of depth d whose GEN
    option has already been chosen c times, the GEN draw is multiplied by ω = γ(d)^c with
    γ(d) = max(γ_min, γ0 − δ·d)."""

    gamma0: float = 0.98
    delta: float = 0.02
    gamma_min: float = 0.5

    def gamma(self, depth: int) -> float:
        return max(self.gamma_min, self.gamma0 - self.delta * depth)

    def omega(self, depth: int, count: int) -> float:
        return self.gamma(depth) ** count


@dataclass
class ThompsonState:
    """Posteriors of one expanded node (§3): GEN (widen this node), CONT (descend into a child), one per
    child (keyed by child node id, in creation order) and one per agent (local agent arms — updated as in
    TreeQuest, kept for inspection; agent *choice* uses the tree-global arms)."""

    gen: Posterior
    cont: Posterior
    agents: list[Posterior]
    children: dict[int, Posterior] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "gen": self.gen.to_dict(),
            "cont": self.cont.to_dict(),
            "agents": [p.to_dict() for p in self.agents],
            "children": {str(k): p.to_dict() for k, p in self.children.items()},
        }


class TreeSearch:
    """Common state of every search mode: the tree, the agents' scores, the generator, the budget.

    ``agent_scores[a]`` lists every score agent ``a`` produced anywhere in this tree (§3).
    ``pending`` counts proposals not yet committed, so the budget holds even if a caller proposes several
    expansions of one tree before committing them."""

    mode: str = "base"

    def __init__(self, tree: Tree, n_agents: int, rng: np.random.Generator, budget: int | None = None) -> None:
        if n_agents < 1:
            raise ValueError(f"n_agents must be >= 1, got {n_agents}")
        self.tree = tree
        self.n_agents = int(n_agents)
        self.rng = rng
        self.budget = budget
        self.agent_scores: list[list[float]] = [[] for _ in range(self.n_agents)]
        self.pending = 0

    # -- budget ---------------------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.budget is not None and len(self.tree) + self.pending >= self.budget

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else max(0, self.budget - len(self.tree) - self.pending)

    # -- interface ------------------------------------------------------------------------------------------
    def propose(self) -> Expansion:
        if self.done:
            raise RuntimeError(f"tree {self.tree.problem_id!r} has used its budget of {self.budget} nodes")
        exp = self._select()
        self.pending += 1
        return exp

    def commit(self, expansion: Expansion, node: Node) -> Node:
        """Add the scored ``node`` (``node.score`` set) as the child the ``expansion`` asked for, then
        backpropagate. ``parent_id``/``agent_id`` of the node are taken from the expansion."""
        if not 0 <= expansion.agent_id < self.n_agents:
            raise ValueError(f"agent id {expansion.agent_id} out of range for {self.n_agents} agents")
        score = float(node.score)
        if not np.isfinite(score):
            raise ValueError(f"node score must be finite, got {node.score}")
        node.parent_id = expansion.parent_id
        node.agent_id = expansion.agent_id
        self.tree.add(node)
        self.pending = max(0, self.pending - 1)
        self.agent_scores[expansion.agent_id].append(score)
        self._backpropagate(node, score)
        return node

    def step(self, generate_fn: Callable[[Expansion], Node]) -> Node:
        """One node: propose, let ``generate_fn`` write and score it, commit."""
        exp = self.propose()
        return self.commit(exp, generate_fn(exp))

    # -- mode-specific --------------------------------------------------------------------------------------
    def _select(self) -> Expansion:
        raise NotImplementedError

    def _backpropagate(self, node: Node, score: float) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        """Search state beyond the tree (the tree is serialised separately, see ``search.serialize``)."""
        return {
            "mode": self.mode,
            "n_agents": self.n_agents,
            "budget": self.budget,
            "pending": self.pending,
            "rng": self.rng.bit_generator.state,
        }


class ABMCTSSearch(TreeSearch):
    """Multi-agent AB-MCTS-A on one tree (method.md §3), optionally with the T+ GEN discount (§6.2).

    State: the tree; ``agent_scores``; ``agent_arms`` (per agent, the prior updated with every score in
    ``agent_scores[a]`` — kept incrementally, identical to rebuilding it from the list at each choice);
    ``states[node_id]``: the :class:`ThompsonState` of every expanded node; ``gen_counts[node_id]``: how
    many times GEN was chosen at that node — forced choices (empty root, leaf) included, so it equals the
    number of children made there (our choice for T+'s c; method.md is silent)."""

    mode = "ab_mcts"

    def __init__(
        self,
        tree: Tree,
        n_agents: int,
        rng: np.random.Generator,
        posterior: str = "gaussian",
        prior_mean: float | None = None,
        prior_mean_scope: str = "agents",
        gen_discount: GenDiscount | None = None,
        budget: int | None = None,
    ) -> None:
        super().__init__(tree, n_agents, rng, budget)
        self.posterior = posterior
        self.prior_mean = prior_mean
        self.prior_mean_scope = prior_mean_scope
        self.gen_discount = gen_discount
        # TreeQuest applies reward_average_prior to the agent (action) arms only; scope "all" extends it.
        self._pm_agents = prior_mean
        self._pm_other = prior_mean if prior_mean_scope == "all" else None
        make_posterior(posterior, prior_mean)  # validate kind / prior mean early
        self.agent_arms: list[Posterior] = [self._new_agent_posterior() for _ in range(self.n_agents)]
        self.states: dict[int, ThompsonState] = {}
        self.gen_counts: dict[int, int] = {}

    def _new_posterior(self) -> Posterior:
        return make_posterior(self.posterior, self._pm_other)

    def _new_agent_posterior(self) -> Posterior:
        return make_posterior(self.posterior, self._pm_agents)

    def thompson_state(self, node_id: int) -> ThompsonState:
        """The node's Thompson state, created on first use."""
        st = self.states.get(node_id)
        if st is None:
            st = ThompsonState(
                gen=self._new_posterior(),
                cont=self._new_posterior(),
                agents=[self._new_agent_posterior() for _ in range(self.n_agents)],
            )
            self.states[node_id] = st
        return st

    # -- selection (§3 steps 1–3) ---------------------------------------------------------------------------
    def _select(self) -> Expansion:
        nodes = self.tree.nodes
        node = nodes[ROOT_ID]
        if not node.children:  # step 1: empty tree → a fresh solution under the root
            return self._generate_at(ROOT_ID)
        rng = self.rng
        while True:
            st = self.states[node.id]
            if not st.children:  # no child has a posterior yet → GEN
                return self._generate_at(node.id)
            g = st.gen.sample(rng)
            c = st.cont.sample(rng)
            if self.gen_discount is not None:
                # §6.2 exactly: multiply the draw. Caveat: a negative Gaussian draw (possible when the GEN
                # posterior mean is near 0) moves *up* towards 0 under ω < 1; Beta draws are always ≥ 0.
                g *= self.gen_discount.omega(node.depth, self.gen_counts.get(node.id, 0))
            if g >= c:  # step 2a: GEN wins (ties to GEN, as TreeQuest)
                return self._generate_at(node.id)
            # step 2b: CONT → Thompson-sample the children, move to the argmax (first max wins)
            best_id, best_v = -1, -np.inf
            for cid, post in st.children.items():
                v = post.sample(rng)
                if v > best_v:
                    best_id, best_v = cid, v
            node = nodes[best_id]
            if not node.children:  # step 2c: a leaf → refine it
                return self._generate_at(node.id)

    def _generate_at(self, node_id: int) -> Expansion:
        self.gen_counts[node_id] = self.gen_counts.get(node_id, 0) + 1
        return Expansion(node_id, self.choose_agent())

    def choose_agent(self) -> int:
        """§3 step 3: one draw from each agent's tree-global posterior, argmax; one agent → no draw."""
        if self.n_agents == 1:
            return 0
        rng = self.rng
        best, best_v = 0, -np.inf
        for a, post in enumerate(self.agent_arms):
            v = post.sample(rng)
            if v > best_v:
                best, best_v = a, v
        return best

    # -- backpropagation (§3 step 4) ------------------------------------------------------------------------
    def _backpropagate(self, node: Node, score: float) -> None:
        a = node.agent_id
        assert a is not None and node.parent_id is not None
        self.agent_arms[a].update(score)
        nodes = self.tree.nodes
        # at the parent p: GEN ← s, agent a ← s, new child's posterior initialised with s
        p = node.parent_id
        st = self.thompson_state(p)
        st.gen.update(score)
        st.agents[a].update(score)
        child = self._new_posterior()
        child.update(score)
        st.children[node.id] = child
        # for each ancestor u from p up to (not including) the root, at u's parent's state:
        # child-u ← s, CONT ← s, the agent that made u ← s
        u = nodes[p]
        while u.id != ROOT_ID:
            assert u.parent_id is not None and u.agent_id is not None
            st = self.states[u.parent_id]
            st.children[u.id].update(score)
            st.cont.update(score)
            st.agents[u.agent_id].update(score)
            u = nodes[u.parent_id]

    def state_dict(self) -> dict[str, Any]:
        d = super().state_dict()
        d.update({
            "posterior": self.posterior,
            "prior_mean": self.prior_mean,
            "prior_mean_scope": self.prior_mean_scope,
            "gen_discount": None if self.gen_discount is None else {
                "gamma0": self.gen_discount.gamma0, "delta": self.gen_discount.delta,
                "gamma_min": self.gen_discount.gamma_min},
            "gen_counts": {str(k): v for k, v in self.gen_counts.items()},
            # derived from the tree (rebuilt by replay on load); stored for inspection and plotting
            "agent_arms": [p.to_dict() for p in self.agent_arms],
            "thompson_states": {str(k): st.to_dict() for k, st in self.states.items()},
        })
        return d
