"""Monte Carlo tree search over reasoning steps, with AlphaLLM's eta-MCTS additions (SPECS §5): the
generic engine.

The algorithm is generic over a batched environment (`TreeEnv`), so the same code runs on a hand-built
toy world in the tests and on a policy with critics (`search/mcts/policy.py`). One tree per problem;
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
from typing import Callable, Generic, Literal, Protocol, Sequence, TypeVar

from pydantic import Field, model_validator

from selfimprove.search.config import SampledSearchConfig
from selfimprove.search.mcts.tree import Node, Tree, backup, best_finished, most_visited_leaf, select_leaf
from selfimprove.text import edit_distance

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


def run_mcts(env: TreeEnv[S], roots: Sequence[S], config: MCTSConfig) -> list[Tree[S]]:
    """Search one tree per root in lockstep; see the module docstring."""
    return MCTS(env, config).run(roots)
