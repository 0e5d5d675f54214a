"""Monte Carlo tree search over reasoning steps, with AlphaLLM's eta-MCTS additions (SPECS §5).

The algorithm is generic over a batched environment (`TreeEnv`), so the same code runs on a hand-built
toy world in the tests and on a policy with critics (`policy_env.PolicyEnv`). One tree per problem;
all trees advance in lockstep, one simulation per tree per round, so every environment call of a
round (evaluate, fast rollouts, expand) is one batch over all problems. There is no virtual loss:
the batch comes from the many problems, and each tree's statistics are exactly those of sequential
MCTS, which keeps them computable by hand.

One round, for every tree that still has budget:
1. **Select**: from the root, follow the child with the best UCT or PUCT score while the node has
   children; the node reached is the leaf.
2. **Evaluate** (only the first time a node is a leaf): a finished state is scored by the
   environment's outcome critic (an ORM, or the verifier when making training data); an unfinished
   one by the value function and/or the mean ORM of `fast_rollouts` rollouts to the end, mixed as
   (b_v v + b_r r) / (b_v + b_r): AlphaLLM's s = b_v v + b_PRM PRM + b_ORM ORM with the weights
   normalised so values stay in [0, 1] (a PRM enters through the value critic, e.g. a combined one).
3. **Back up** the leaf's value to the root: every node on the path gets one more visit and adds the
   value to its total; its value Q is the mean.
4. **Expand** the leaf (unless finished or at `max_depth`): sample children from the environment.
A tree stops after `simulations` rounds or when its problem's budget is spent (checked before each
round, so a round in flight finishes).

The answer: the best finished node, by its outcome score (`final="value"`, AlphaLLM's "path whose
leaf has the best critic score") or by visits (`final="visits"`). Finished children sampled but never
visited are scored first (a critic call, no policy tokens). A tree with no finished node completes its
most-visited path with one rollout, even past its token budget (the spend says so).

The three switches of eta-MCTS:
- **adaptive branching**: a leaf first gets `c_min` children; their values v(s, o) give the importance
  I(s) = max_o |v(s, o) - v(s)|, and the leaf is widened to n(s) = max(c_min, min(floor(alpha I) + 1,
  c_max)) children (`c_max_root` at the root), in one more batched expand call.
- **state merge**: a sampled child whose step text is within `merge_distance` (Levenshtein) of a
  sibling is merged into it (its prior mass is added to the sibling) and its slot is resampled, up to
  `merge_tries` extra batched calls, so siblings differ.
- **fast rollouts**: as in step 2.

Priors for PUCT are the sample counts of each distinct child (merge adds up the counts), normalised
over siblings: an empirical estimate of the policy's probability of that step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Generic, Literal, Protocol, Sequence, TypeVar

from pydantic import Field, model_validator

from selfimprove.eval.metrics import edit_distance
from selfimprove.search.config import SampledSearchConfig

if TYPE_CHECKING:
    from selfimprove.critics.base import Critic
    from selfimprove.rollout.budget import Budget
    from selfimprove.policy.base import Sampler
    from selfimprove.search.result import SearchResult
    from selfimprove.rollout.state import State
    from selfimprove.tasks.base import Problem, Task

S = TypeVar("S")


class MCTSConfig(SampledSearchConfig):
    """Settings of one MCTS search; sampling, step rule, answer cap, token budget and seed come from
    `SampledSearchConfig`. Defaults suit the tiny Countdown model (SPECS §5 gives the paper's)."""

    simulations: int = Field(16, ge=1)  # simulations (rounds) per problem
    selection: Literal["uct", "puct"] = "uct"
    c: float = Field(1.0, ge=0.0)  # exploration constant (SPECS §5: 1.0-1.5 for UCT)
    branching: int = Field(4, ge=1)  # children per expansion without adaptive branching
    max_depth: int = Field(8, ge=1)  # steps; a node this deep is valued, never expanded
    final: Literal["value", "visits"] = "value"  # how the answer is picked among finished nodes
    # adaptive branching (AlphaLLM): n(s) = max(c_min, min(floor(alpha I(s)) + 1, c_max))
    adaptive_branching: bool = False
    c_min: int = Field(2, ge=1)
    c_max: int = Field(10, ge=1)
    c_max_root: int = Field(60, ge=1)
    alpha: float = Field(10.0, ge=0.0)
    # state merge: siblings within merge_distance edits are one node; the slot is resampled
    merge: bool = False
    merge_distance: int = Field(20, ge=0)  # the paper's 20 characters; use 0-2 for short steps
    merge_tries: int = Field(5, ge=0)
    # leaf value = (value_weight * v + rollout_weight * mean ORM of fast rollouts) / (sum of weights)
    fast_rollouts: int = Field(0, ge=0)
    value_weight: float = Field(1.0, ge=0.0)
    rollout_weight: float = Field(1.0, ge=0.0)
    rollout_temperature: float = Field(1.0, ge=0.0)

    @model_validator(mode="after")
    def _check(self) -> "MCTSConfig":
        if not self.c_min <= self.c_max <= self.c_max_root:
            raise ValueError(f"need c_min <= c_max <= c_max_root, got {self.c_min}, {self.c_max}, {self.c_max_root}")
        if not (self.uses_value or self.uses_rollouts):
            raise ValueError(
                "unfinished states need a value: set value_weight > 0, or fast_rollouts > 0 with rollout_weight > 0"
            )
        return self

    @property
    def uses_value(self) -> bool:
        return self.value_weight > 0

    @property
    def uses_rollouts(self) -> bool:
        return self.fast_rollouts > 0 and self.rollout_weight > 0


class TreeEnv(Protocol[S]):
    """What MCTS needs from the world. Every method takes a batch (states of many trees) and is one
    batched policy or critic call; `tree_of(state)` says which tree (problem) a state belongs to."""

    def tree_of(self, state: S) -> int: ...

    def expand(self, states: Sequence[S], widths: Sequence[int]) -> list[list[tuple[S, float]]]:
        """`widths[i]` sampled children of `states[i]`, each with an unnormalised prior mass (1.0 per
        sample); [] for a tree whose budget is spent."""
        ...

    def evaluate(self, states: Sequence[S]) -> list[float]:
        """Values in [0, 1]: the outcome critic for finished states, the value function otherwise."""
        ...

    def rollout(self, states: Sequence[S], m: int) -> list[float]:
        """Mean outcome score of `m` fast rollouts from each (unfinished) state to the end."""
        ...

    def finish(self, states: Sequence[S]) -> list[S]:
        """Each state completed to the end by one rollout (the answer when no finished node exists)."""
        ...

    def is_terminal(self, state: S) -> bool: ...

    def step_text(self, state: S) -> str:
        """The state's last step (what state merge compares)."""
        ...

    def exhausted(self, tree: int) -> bool: ...


@dataclass(eq=False)
class Node(Generic[S]):
    """One state in a tree with its statistics. `value` is the node's own evaluation (set when it is
    first a leaf), `probe` its value-function score when adaptive branching measured it early,
    `visits`/`total` the backed-up statistics (Q = total / visits)."""

    state: S
    parent: "Node[S] | None" = None
    depth: int = 0
    terminal: bool = False
    mass: float = 1.0  # unnormalised prior: samples merged into this node
    prior: float = 1.0
    value: float | None = None
    probe: float | None = None
    visits: int = 0
    total: float = 0.0
    children: list["Node[S]"] = field(default_factory=list)
    expanded: bool = False

    @property
    def q(self) -> float:
        return self.total / self.visits if self.visits else 0.0

    def path(self) -> list["Node[S]"]:
        """Nodes from the root to this one."""
        out: list[Node[S]] = []
        node: Node[S] | None = self
        while node is not None:
            out.append(node)
            node = node.parent
        return out[::-1]

    def add_child(self, state: S, mass: float, terminal: bool) -> "Node[S]":
        child = Node(state, parent=self, depth=self.depth + 1, terminal=terminal, mass=mass)
        self.children.append(child)
        return child

    def normalise_priors(self) -> None:
        total = sum(c.mass for c in self.children)
        for c in self.children:
            c.prior = c.mass / total if total > 0 else 1.0 / len(self.children)


@dataclass(eq=False)
class Tree(Generic[S]):
    """One problem's search: the root, every node made, and the chosen answer.

    `answer` is the chosen finished state, `answer_value` its outcome score, `answer_node` the tree
    node it is (or, when no finished node existed, the node the answer was completed from, with
    `completed` True). `stopped` is "simulations" or "budget"."""

    index: int
    root: Node[S]
    nodes: list[Node[S]] = field(default_factory=list)
    rounds: int = 0
    stopped: str = "simulations"
    answer: S | None = None
    answer_value: float | None = None
    answer_node: Node[S] | None = None
    completed: bool = False


# ---------------------------------------------------------------------------------- selection
def uct_score(q: float, visits: int, parent_visits: int, c: float) -> float:
    """UCT: q + c sqrt(ln N / n); an unvisited child scores +inf (each child is tried once first)."""
    if visits == 0:
        return math.inf
    return q + c * math.sqrt(math.log(parent_visits) / visits)


def puct_score(q: float, prior: float, visits: int, parent_visits: int, c: float) -> float:
    """PUCT (AlphaZero): q + c P sqrt(N) / (1 + n)."""
    return q + c * prior * math.sqrt(parent_visits) / (1 + visits)


def select_child(node: Node[S], config: MCTSConfig) -> Node[S]:
    """The child with the best score (first in sampling order on ties). Under PUCT an unvisited child
    is assumed as good as its parent (q = parent's Q), a first-play value that needs no scale."""
    n = node.visits
    if config.selection == "uct":
        scores = [uct_score(ch.q, ch.visits, n, config.c) for ch in node.children]
    else:
        scores = [puct_score(ch.q if ch.visits else node.q, ch.prior, ch.visits, n, config.c) for ch in node.children]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return node.children[best]


def select_leaf(root: Node[S], config: MCTSConfig) -> Node[S]:
    node = root
    while node.children:
        node = select_child(node, config)
    return node


def backup(leaf: Node[S], value: float) -> None:
    node: Node[S] | None = leaf
    while node is not None:
        node.visits += 1
        node.total += value
        node = node.parent


def adaptive_width(importance: float, config: MCTSConfig, *, root: bool) -> int:
    """AlphaLLM's children count n(s) = max(c_min, min(floor(alpha I) + 1, c_max)), wider at the root."""
    c_max = config.c_max_root if root else config.c_max
    return max(config.c_min, min(math.floor(config.alpha * importance) + 1, c_max))


def mix_value(value: float | None, rollout: float | None, config: MCTSConfig) -> float:
    """(b_v v + b_r r) / (b_v + b_r) over the parts in use: AlphaLLM's critic sum kept in [0, 1]."""
    parts = []
    if config.uses_value:
        assert value is not None
        parts.append((config.value_weight, value))
    if config.uses_rollouts:
        assert rollout is not None
        parts.append((config.rollout_weight, rollout))
    return sum(w * v for w, v in parts) / sum(w for w, _ in parts)


# ---------------------------------------------------------------------------------- the search
class MCTS(Generic[S]):
    """Runs many trees in lockstep on one environment. `run(roots)` returns one `Tree` per root."""

    def __init__(self, env: TreeEnv[S], config: MCTSConfig) -> None:
        self.env = env
        self.config = config

    def run(self, roots: Sequence[S]) -> list[Tree[S]]:
        trees = []
        for state in roots:
            root = Node(state, terminal=self.env.is_terminal(state))
            trees.append(Tree(self.env.tree_of(state), root, nodes=[root]))
        for _ in range(self.config.simulations):
            active = []
            for t in trees:
                if self.env.exhausted(t.index):
                    t.stopped = "budget"
                else:
                    active.append(t)
            if not active:
                break
            leaves = [select_leaf(t.root, self.config) for t in active]
            self._evaluate([leaf for leaf in leaves if leaf.value is None])
            for t, leaf in zip(active, leaves):
                assert leaf.value is not None
                backup(leaf, leaf.value)
                t.rounds += 1
            growing = [(t, leaf) for t, leaf in zip(active, leaves) if self._expandable(leaf)]
            self._expand(growing)
        self._choose_answers(trees)
        return trees

    # ---- evaluation
    def _evaluate(self, nodes: Sequence[Node[S]]) -> None:
        """Give each node its value: one outcome/value call and at most one rollout call for all."""
        if not nodes:
            return
        finished = [n for n in nodes if n.terminal]
        open_ = [n for n in nodes if not n.terminal]
        valued = self.config.uses_value or self.config.adaptive_branching  # adaptive branching needs v(s)
        need_value = [n for n in open_ if n.probe is None and valued]
        scored = [n for n in finished if n.probe is None] + need_value
        if scored:
            for n, v in zip(scored, self._call(self.env.evaluate, [n.state for n in scored])):
                n.probe = v
        rollouts: list[float | None] = [None] * len(open_)
        if self.config.uses_rollouts and open_:
            m = self.config.fast_rollouts
            rollouts = list(self._call(lambda states: self.env.rollout(states, m), [n.state for n in open_]))
        for n in finished:
            n.value = n.probe
        for n, r in zip(open_, rollouts):
            n.value = mix_value(n.probe, r, self.config)

    def _call(self, fn: Callable[[list[S]], list[float]], states: list[S]) -> list[float]:
        values = list(fn(states))
        if len(values) != len(states):
            raise ValueError(f"environment returned {len(values)} values for {len(states)} states")
        for v in values:
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"environment value {v} is outside [0, 1]")
        return values

    # ---- expansion
    def _expandable(self, leaf: Node[S]) -> bool:
        return not leaf.expanded and not leaf.terminal and leaf.depth < self.config.max_depth

    def _expand(self, growing: Sequence[tuple[Tree[S], Node[S]]]) -> None:
        if not growing:
            return
        cfg = self.config
        first = cfg.c_min if cfg.adaptive_branching else cfg.branching
        self._grow(growing, [first] * len(growing))
        if cfg.adaptive_branching:
            probed = [(t, leaf) for t, leaf in growing if leaf.children]
            kids = [ch for _, leaf in probed for ch in leaf.children if ch.probe is None]
            if kids:
                for ch, v in zip(kids, self._call(self.env.evaluate, [ch.state for ch in kids])):
                    ch.probe = v
            wider, extra = [], []
            for t, leaf in probed:
                assert leaf.probe is not None
                importance = max(abs(ch.probe - leaf.probe) for ch in leaf.children if ch.probe is not None)
                more = adaptive_width(importance, cfg, root=leaf.parent is None) - len(leaf.children)
                if more > 0:
                    wider.append((t, leaf))
                    extra.append(more)
            self._grow(wider, extra)
        for _, leaf in growing:
            leaf.expanded = True  # no children (budget spent, nothing sampled): a leaf from now on
            if leaf.children:
                leaf.normalise_priors()

    def _grow(self, growing: Sequence[tuple[Tree[S], Node[S]]], widths: Sequence[int]) -> None:
        """Add `widths[i]` children to each leaf in one expand call; with state merge, children too
        close to a sibling are folded into it and their slots resampled (up to `merge_tries` calls)."""
        pending = [(t, leaf, w) for (t, leaf), w in zip(growing, widths) if w > 0]
        tries = 0
        while pending:
            sampled = self.env.expand([leaf.state for _, leaf, _ in pending], [w for _, _, w in pending])
            if len(sampled) != len(pending):
                raise ValueError(f"environment expanded {len(sampled)} states, {len(pending)} asked")
            again = []
            for (t, leaf, want), children in zip(pending, sampled):
                added = 0
                for state, mass in children:
                    twin = self._twin(leaf, state) if self.config.merge else None
                    if twin is not None:
                        twin.mass += mass
                        continue
                    t.nodes.append(leaf.add_child(state, mass, self.env.is_terminal(state)))
                    added += 1
                if children and added < want and self.config.merge and tries < self.config.merge_tries:
                    again.append((t, leaf, want - added))
            pending, tries = again, tries + 1

    def _twin(self, leaf: Node[S], state: S) -> Node[S] | None:
        text = self.env.step_text(state)
        for sibling in leaf.children:
            if edit_distance(text, self.env.step_text(sibling.state)) <= self.config.merge_distance:
                return sibling
        return None

    # ---- the answer
    def _choose_answers(self, trees: Sequence[Tree[S]]) -> None:
        """Per tree, the best finished node (`final`: by value, ties by visits; or by visits, ties by
        value). Finished children that were sampled but never visited are scored first (one outcome
        call for all trees, no policy tokens): they are answers the search paid for. Trees without any
        finished node get their most-visited path completed by one rollout (one batched call) and
        scored by the outcome critic."""
        unscored = [n for t in trees for n in t.nodes if n.terminal and n.value is None and n.probe is None]
        if unscored:
            for n, v in zip(unscored, self._call(self.env.evaluate, [n.state for n in unscored])):
                n.probe = v
        missing: list[tuple[Tree[S], Node[S]]] = []
        for t in trees:
            best = best_finished(t, self.config.final)
            if best is not None:
                t.answer, t.answer_node = best.state, best
                t.answer_value = best.value if best.value is not None else best.probe
            else:
                missing.append((t, most_visited_leaf(t.root)))
        if not missing:
            return
        done = self.env.finish([leaf.state for _, leaf in missing])
        values = self._call(self.env.evaluate, list(done))
        for (t, leaf), state, v in zip(missing, done, values):
            t.answer, t.answer_value, t.answer_node, t.completed = state, v, leaf, True


def best_finished(tree: Tree[S], how: Literal["value", "visits"]) -> Node[S] | None:
    """The finished node with the best outcome score (`value`, ties: more visits) or the most visits
    (`visits`, ties: better score); finished nodes without a score do not count. Further ties go to
    the node made first."""
    scored = [(n, n.value if n.value is not None else n.probe) for n in tree.nodes if n.terminal]
    ranked = [(n, v) for n, v in scored if v is not None]
    if not ranked:
        return None
    if how == "value":
        return max(ranked, key=lambda nv: (nv[1], nv[0].visits))[0]
    return max(ranked, key=lambda nv: (nv[0].visits, nv[1]))[0]


def most_visited_leaf(root: Node[S]) -> Node[S]:
    """The end of the most-visited path: follow the most visited child (ties: higher Q, then the
    first sampled) while some child has been visited."""
    node = root
    while any(ch.visits for ch in node.children):
        node = max(node.children, key=lambda ch: (ch.visits, ch.q))
    return node


def run_mcts(env: TreeEnv[S], roots: Sequence[S], config: MCTSConfig) -> list[Tree[S]]:
    """Search one tree per root in lockstep; see the module docstring."""
    return MCTS(env, config).run(roots)


# ---------------------------------------------------------------------------------- on a policy
def mcts_trees(
    policy: "Sampler",
    problems: Sequence["Problem"],
    config: MCTSConfig,
    critic: "Critic | None" = None,
    budgets: Sequence["Budget"] | None = None,
    *,
    outcome: "Critic | None" = None,
    rollout_policy: "Sampler | None" = None,
) -> tuple[list[Tree["State"]], list["Budget"]]:
    """Search every problem with MCTS on `policy`; the trees (for training data) and the budgets.

    `critic` values unfinished states (a value function, PRM or combination) and, unless `outcome` is
    given, finished ones too; `outcome` scores finished states and fast rollouts (an ORM, or
    `VerifierCritic(task)` when the search makes training data). Without a value critic, set
    `value_weight=0` and `fast_rollouts > 0` (classic MCTS: leaves valued by rollouts only).
    `rollout_policy` is AlphaLLM's cheaper fast-rollout policy (default: `policy`).
    """
    from selfimprove.policy.base import SamplingParams
    from selfimprove.rollout.expand import root_states
    from selfimprove.search.policy_env import PolicyEnv

    scorer = outcome if outcome is not None else critic
    if scorer is None:
        raise ValueError("MCTS needs a critic (value/ORM), or outcome=VerifierCritic(task) when making training data")
    if critic is None and (config.uses_value or config.adaptive_branching):
        raise ValueError(
            "valuing unfinished states (value_weight > 0 or adaptive_branching) needs a value critic; "
            "without one set value_weight=0 and fast_rollouts > 0"
        )
    spent = config.budgets(len(problems), budgets)
    sampling = config.sampling()
    env = PolicyEnv(
        policy, problems, spent,
        rule=config.rule(),
        params=sampling,
        max_answer_tokens=config.max_answer_tokens,
        outcome=scorer,
        value=critic,
        rollout_policy=rollout_policy,
        rollout_params=SamplingParams(temperature=config.rollout_temperature, top_p=config.top_p),
        generator=config.generator(policy),
    )
    return run_mcts(env, root_states(policy, problems), config), spent


def mcts_search(
    policy: "Sampler",
    task: "Task",
    problems: Sequence["Problem"],
    config: MCTSConfig,
    critic: "Critic | None" = None,
    budgets: Sequence["Budget"] | None = None,
    *,
    outcome: "Critic | None" = None,
    rollout_policy: "Sampler | None" = None,
) -> list["SearchResult"]:
    """eta-MCTS on `policy` (see `mcts_trees` for the critics); one `SearchResult` per problem, whose
    `score` is the outcome critic's score of the answer and `candidates` the number of tree nodes."""
    trees, spent = mcts_trees(policy, problems, config, critic, budgets, outcome=outcome, rollout_policy=rollout_policy)
    return tree_results(task, problems, trees, spent)


def tree_results(
    task: "Task", problems: Sequence["Problem"], trees: Sequence[Tree["State"]], budgets: Sequence["Budget"]
) -> list["SearchResult"]:
    """Bundle MCTS trees as search results (the verdict is for reporting only)."""
    from selfimprove.search.result import make_results

    return make_results(
        "mcts",
        task,
        problems,
        [t.answer for t in trees],
        budgets,
        [len(t.nodes) for t in trees],
        scores=[t.answer_value for t in trees],
        stats=[tree_stats(t) for t in trees],
    )


def tree_stats(tree: Tree[S]) -> dict[str, float | int | str | bool]:
    """Numbers that describe one search (JSON-friendly)."""
    return {
        "rounds": tree.rounds,
        "nodes": len(tree.nodes),
        "finished_nodes": sum(1 for n in tree.nodes if n.terminal),
        "depth": max(n.depth for n in tree.nodes),
        "root_visits": tree.root.visits,
        "root_children": len(tree.root.children),
        "root_q": tree.root.q,
        "stopped": tree.stopped,
        "completed": tree.completed,
    }
