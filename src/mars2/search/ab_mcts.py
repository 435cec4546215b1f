"""Multi-agent AB-MCTS-A (method.md §3) with the T+ depth-guided GEN discount (method.md §6.2).

The interface is split so that many trees can advance together with one batched generation call:

- :meth:`TreeSearch.propose` — selection and agent choice (§3 steps 1–3): which node to expand, by which
  agent. Returns an :class:`Expansion`.
- :meth:`TreeSearch.commit` — the scored node goes into the tree (``Tree.add``) and is backpropagated
  (§3 step 4).
- :meth:`TreeSearch.step` — propose + generate + commit for a single tree (treequest's ``step()``).

Order of random draws (all from the tree's own generator, so a seed fixes the whole search): at each
visited node with child posteriors, one GEN draw, then one CONT draw, then — with the T+ discount in its
default ``probability`` form, only if GEN won and ω < 1 — one uniform draw; then, if CONT wins, one draw per
child in creation order; finally one draw per agent (none with a single agent). Ties go to GEN, then to the
earliest child / lowest agent id (TreeQuest's tie rules). Unlike TreeQuest we do not draw GEN/CONT where the
outcome is forced (empty root, leaf): the distribution of the search is the same, fewer draws are spent.

**Pending expansions** (``search.parallel=k``, issue 21; our extension — the method expands one node at a
time): a caller may :meth:`~TreeSearch.propose` up to k expansions of one tree before committing any of them
(ask/tell). With nothing pending — always the case at k=1 — selection is exactly the above, draw for draw.
With proposals pending, the default ``virtual_loss`` rule makes selection see every pending expansion as if
it had already come back with score 0 (the worst score): its parent's GEN posterior, the CONT and child
posteriors along its path, and its agent's arm each get one virtual observation 0 (on copies; the real
posteriors are never touched), so the next proposal is pushed away from places that already have work
pending. Committing the expansion drops its virtual observations and backpropagates the real score.
``independent`` is TreeQuest's ``ask_batch``: k proposals drawn independently from the same posteriors.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from mars2.search.posteriors import Posterior, make_posterior
from mars2.search.tree import ROOT_ID, Node, Tree


VIRTUAL_SCORE = 0.0  # the score a pending expansion is assumed to get under the virtual-loss rule
PARALLEL_RULES = ("virtual_loss", "independent")
DISCOUNT_FORMS = ("probability", "product")


@dataclass(frozen=True)
class Expansion:
    """A pending expansion: agent ``agent_id`` writes a new child of node ``parent_id``.

    A child of the root is a fresh solution; any other child is a refinement of its parent (§1).
    ``ticket`` identifies a proposal (``propose`` numbers them 0, 1, 2, … per tree); it does not take part
    in equality. A hand-made expansion (ticket −1) inserts a node directly (used by replay)."""

    parent_id: int
    agent_id: int
    ticket: int = field(default=-1, compare=False)

    @property
    def fresh(self) -> bool:
        return self.parent_id == ROOT_ID


@dataclass(frozen=True)
class GenDiscount:
    """T+ depth-guided GEN discount (method.md §6.2, schedule = our choice): at a node of depth d whose GEN
    option has already been chosen c times, ω = γ(d)^c with γ(d) = max(γ_min, γ0 − δ·d).

    ``form`` says where ω acts:

    - ``probability`` (default): ω multiplies the **probability of widening**. GEN and CONT are
      Thompson-sampled as in plain AB-MCTS-A; if GEN wins, the node is widened only with probability ω
      (one uniform draw u, widen iff u < ω), otherwise the search descends as if CONT had won. So
      P(widen) = ω · P(GEN draw ≥ CONT draw) exactly, whatever the score scale or the sign of the draws:
      each widening of a level makes the next one γ(d) times as likely, at every score level — also in a
      tree where every score is 0, which is where T+ most needs to go deeper.
    - ``product``: the GEN draw itself is multiplied by ω before the comparison (the literal reading of
      §6.2, the behaviour before issue 17). Inert when the draws are centred on 0: with every score 0 the
      Gaussian GEN and CONT draws are symmetric around 0 and ω·draw keeps P(widen) ≈ 0.5; kept only to
      reproduce earlier runs.
    """

    gamma0: float = 0.98
    delta: float = 0.02
    gamma_min: float = 0.5
    form: str = "probability"

    def __post_init__(self) -> None:
        if self.form not in DISCOUNT_FORMS:
            raise ValueError(f"GenDiscount.form must be one of {list(DISCOUNT_FORMS)}, got {self.form!r}")

    def gamma(self, depth: int) -> float:
        return max(self.gamma_min, self.gamma0 - self.delta * depth)

    def omega(self, depth: int, count: int) -> float:
        return self.gamma(depth) ** count

    def to_dict(self) -> dict[str, Any]:
        return {"gamma0": self.gamma0, "delta": self.delta, "gamma_min": self.gamma_min, "form": self.form}


@dataclass
class VirtualCounts:
    """Virtual-loss observations of the pending expansions: per node id, the pending children of it
    (``gen``, → its GEN), the pending expansions strictly below it (``cont``, → its CONT) and those in its
    subtree (``child``, → its child posterior at its parent); per agent, its pending expansions (``agent``)."""

    agent: list[int]
    gen: dict[int, int] = field(default_factory=dict)
    cont: dict[int, int] = field(default_factory=dict)
    child: dict[int, int] = field(default_factory=dict)


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
    expansions of one tree before committing them (``search.parallel=k``). ``max_pending`` is how many
    proposals the mode can have outstanding at once (None: no limit)."""

    mode: str = "base"
    max_pending: int | None = None

    def __init__(self, tree: Tree, n_agents: int, rng: np.random.Generator, budget: int | None = None) -> None:
        if n_agents < 1:
            raise ValueError(f"n_agents must be >= 1, got {n_agents}")
        self.tree = tree
        self.n_agents = int(n_agents)
        self.rng = rng
        self.budget = budget
        self.agent_scores: list[list[float]] = [[] for _ in range(self.n_agents)]
        self._pending: dict[int, Expansion] = {}  # ticket → proposal, in proposal order
        self._next_ticket = 0

    # -- budget ---------------------------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return len(self._pending)

    def pending_expansions(self) -> list[Expansion]:
        """The proposals not yet committed, oldest first."""
        return list(self._pending.values())

    @property
    def done(self) -> bool:
        return self.budget is not None and len(self.tree) + self.pending >= self.budget

    @property
    def remaining(self) -> int | None:
        return None if self.budget is None else max(0, self.budget - len(self.tree) - self.pending)

    def can_propose(self) -> bool:
        """Budget left and room for one more outstanding proposal."""
        return not self.done and (self.max_pending is None or self.pending < self.max_pending)

    # -- interface ------------------------------------------------------------------------------------------
    def propose(self) -> Expansion:
        if self.done:
            raise RuntimeError(f"tree {self.tree.problem_id!r} has used its budget of {self.budget} nodes")
        exp = self._select()
        exp = Expansion(exp.parent_id, exp.agent_id, ticket=self._next_ticket)
        self._next_ticket += 1
        self._pending[exp.ticket] = exp
        return exp

    def commit(self, expansion: Expansion, node: Node) -> Node:
        """Add the scored ``node`` (``node.score`` set) as the child the ``expansion`` asked for, then
        backpropagate. ``parent_id``/``agent_id`` of the node are taken from the expansion.

        A proposed expansion can be committed once: committing it again (or one this search never
        proposed) raises, so no node is ever scored into the tree twice. A hand-made expansion (ticket −1)
        settles the oldest pending proposal with the same parent and agent, if any, else inserts directly."""
        if not 0 <= expansion.agent_id < self.n_agents:
            raise ValueError(f"agent id {expansion.agent_id} out of range for {self.n_agents} agents")
        if not 0 <= expansion.parent_id < len(self.tree.nodes):
            raise ValueError(f"bad parent id {expansion.parent_id}")
        score = float(node.score)
        if not np.isfinite(score):
            raise ValueError(f"node score must be finite, got {node.score}")
        if expansion.ticket >= 0:
            if self._pending.get(expansion.ticket) != expansion:
                raise ValueError(f"tree {self.tree.problem_id!r}: expansion {expansion.ticket} is not pending "
                                 "(already committed, or proposed by another search)")
            settled: Expansion | None = expansion
        else:
            settled = next((e for e in self._pending.values() if e == expansion), None)
        if settled is not None:
            del self._pending[settled.ticket]
        node.parent_id = expansion.parent_id
        node.agent_id = expansion.agent_id
        self.tree.add(node)
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
        parallel_rule: str = "virtual_loss",
    ) -> None:
        super().__init__(tree, n_agents, rng, budget)
        if parallel_rule not in PARALLEL_RULES:
            raise ValueError(f"parallel_rule must be one of {list(PARALLEL_RULES)}, got {parallel_rule!r}")
        self.posterior = posterior
        self.prior_mean = prior_mean
        self.prior_mean_scope = prior_mean_scope
        self.gen_discount = gen_discount
        self.parallel_rule = parallel_rule
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
    def _virtual(self, post: Posterior, n: int) -> Posterior:
        """``post`` plus ``n`` virtual observations of ``VIRTUAL_SCORE`` (a copy; ``post`` itself if n = 0)."""
        if n == 0:
            return post
        post = post.copy()
        for _ in range(n):
            post.update(VIRTUAL_SCORE)
        return post

    def _select(self) -> Expansion:
        nodes = self.tree.nodes
        node = nodes[ROOT_ID]
        if not node.children:  # step 1: empty tree → a fresh solution under the root
            return self._generate_at(ROOT_ID)
        rng = self.rng
        # virtual losses only exist with proposals outstanding (never at parallel=1)
        vl = self.virtual_counts() if self._pending and self.parallel_rule == "virtual_loss" else None
        while True:
            st = self.states[node.id]
            if not st.children:  # no child has a posterior yet → GEN
                return self._generate_at(node.id, vl)
            if vl is not None:
                gen = self._virtual(st.gen, vl.gen.get(node.id, 0))
                cont = self._virtual(st.cont, vl.cont.get(node.id, 0))
            else:
                gen, cont = st.gen, st.cont
            if self._widen(node, gen, cont):  # step 2a: GEN wins
                return self._generate_at(node.id, vl)
            # step 2b: CONT → Thompson-sample the children, move to the argmax (first max wins)
            best_id, best_v = -1, -np.inf
            for cid, post in st.children.items():
                if vl is not None:
                    post = self._virtual(post, vl.child.get(cid, 0))
                v = post.sample(rng)
                if v > best_v:
                    best_id, best_v = cid, v
            node = nodes[best_id]
            if not node.children:  # step 2c: a leaf → refine it
                return self._generate_at(node.id, vl)

    def _widen(self, node: Node, gen: Posterior, cont: Posterior) -> bool:
        """Step 2a: one GEN draw, one CONT draw; GEN wins ties (TreeQuest). With the T+ discount (§6.2) at
        ω = γ(depth)^(GEN choices so far): ``probability`` form — a GEN win stands with probability ω (one
        uniform draw, only when ω < 1); ``product`` form — the GEN draw is multiplied by ω."""
        rng = self.rng
        g = gen.sample(rng)
        c = cont.sample(rng)
        d = self.gen_discount
        if d is None:
            return g >= c
        w = d.omega(node.depth, self.gen_counts.get(node.id, 0))
        if d.form == "product":
            return g * w >= c
        if g < c:
            return False
        return w >= 1.0 or bool(rng.random() < w)

    def _generate_at(self, node_id: int, vl: VirtualCounts | None = None) -> Expansion:
        self.gen_counts[node_id] = self.gen_counts.get(node_id, 0) + 1
        return Expansion(node_id, self.choose_agent(vl))

    def choose_agent(self, vl: VirtualCounts | None = None) -> int:
        """§3 step 3: one draw from each agent's tree-global posterior, argmax; one agent → no draw. Under
        the virtual-loss rule an agent's pending expansions count as scores 0 in its arm."""
        if self.n_agents == 1:
            return 0
        rng = self.rng
        best, best_v = 0, -np.inf
        for a, post in enumerate(self.agent_arms):
            if vl is not None:
                post = self._virtual(post, vl.agent[a])
            v = post.sample(rng)
            if v > best_v:
                best, best_v = a, v
        return best

    def virtual_counts(self) -> "VirtualCounts":
        """The virtual observations of the pending expansions — each one reaches the places its real score
        will reach at commit (§3 step 4): its parent's GEN; the child posterior of every node on the path
        from the parent up to the root's child; the CONT of every strict ancestor of the parent; its
        agent's arm. Recomputed from the pending list at each selection (k·depth steps), so nothing has to
        be undone at commit."""
        vc = VirtualCounts(agent=[0] * self.n_agents)
        nodes = self.tree.nodes
        for e in self._pending.values():
            vc.gen[e.parent_id] = vc.gen.get(e.parent_id, 0) + 1
            vc.agent[e.agent_id] += 1
            u = nodes[e.parent_id]
            while u.id != ROOT_ID:
                assert u.parent_id is not None
                vc.child[u.id] = vc.child.get(u.id, 0) + 1
                vc.cont[u.parent_id] = vc.cont.get(u.parent_id, 0) + 1
                u = nodes[u.parent_id]
        return vc

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
            "gen_discount": None if self.gen_discount is None else self.gen_discount.to_dict(),
            "parallel_rule": self.parallel_rule,
            "gen_counts": {str(k): v for k, v in self.gen_counts.items()},
            # derived from the tree (rebuilt by replay on load); stored for inspection and plotting
            "agent_arms": [p.to_dict() for p in self.agent_arms],
            "thompson_states": {str(k): st.to_dict() for k, st in self.states.items()},
        })
        return d

