"""MCTS trees: nodes with their statistics, selection (UCT, PUCT), back-up, and how an answer is read
off a finished tree. Generic over the state type; see `engine.py` for the search."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Generic, Literal, Protocol, TypeVar

S = TypeVar("S")


class Selection(Protocol):
    """What selection reads from a search's settings (`engine.MCTSConfig` has these)."""

    selection: Literal["uct", "puct"]
    c: float


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


def select_child(node: Node[S], config: Selection) -> Node[S]:
    """The child with the best score (first in sampling order on ties). Under PUCT an unvisited child
    is assumed as good as its parent (q = parent's Q), a first-play value that needs no scale."""
    n = node.visits
    if config.selection == "uct":
        scores = [uct_score(ch.q, ch.visits, n, config.c) for ch in node.children]
    else:
        scores = [puct_score(ch.q if ch.visits else node.q, ch.prior, ch.visits, n, config.c) for ch in node.children]
    best = max(range(len(scores)), key=lambda i: (scores[i], -i))
    return node.children[best]


def select_leaf(root: Node[S], config: Selection) -> Node[S]:
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
