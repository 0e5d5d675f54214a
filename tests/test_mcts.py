"""MCTS on a hand-built toy world (statistics computed by hand), eta-MCTS switches, and one run on
the small policy; training data from trees."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import pytest

from selfimprove.rollout.episode import collate
from selfimprove.rollout.budget import Budget
from selfimprove.search.mcts import (
    MCTSConfig,
    Node,
    Tree,
    adaptive_width,
    best_finished,
    mix_value,
    puct_score,
    run_mcts,
    select_child,
    uct_score,
)
from selfimprove.rollout.state import State
from selfimprove.search.training_data import best_path_episode, dpo_pairs, sft_episodes, sibling_pairs
from selfimprove.tasks.base import Problem


# ------------------------------------------------------------------------------------ the toy world
@dataclass(frozen=True)
class Toy:
    tree: int
    path: tuple[str, ...]
    finished: bool = False


@dataclass
class ToyWorld:
    """Children are drawn in a fixed order from `spec[path]` (a queue per node and tree, so repeated
    samples and resamples are scripted); `values[path]` is the critic, `rollouts[path]` the mean
    outcome of fast rollouts. Each child costs one token; `calls` logs every environment call."""

    spec: dict[tuple[str, ...], list[tuple[str, float]]]
    values: dict[tuple[str, ...], float]
    terminal: set[tuple[str, ...]] = field(default_factory=set)
    rollouts: dict[tuple[str, ...], float] = field(default_factory=dict)
    budgets: list[Budget] = field(default_factory=list)
    calls: list[tuple] = field(default_factory=list)
    queues: dict[tuple[int, tuple[str, ...]], list[tuple[str, float]]] = field(default_factory=dict)

    def tree_of(self, state: Toy) -> int:
        return state.tree

    def is_terminal(self, state: Toy) -> bool:
        return state.finished

    def step_text(self, state: Toy) -> str:
        return state.path[-1] if state.path else ""

    def exhausted(self, tree: int) -> bool:
        return bool(self.budgets) and self.budgets[tree].exhausted

    def expand(self, states: Sequence[Toy], widths: Sequence[int]) -> list[list[tuple[Toy, float]]]:
        self.calls.append(("expand", [s.path for s in states], list(widths)))
        out = []
        for s, w in zip(states, widths):
            if self.exhausted(s.tree):
                out.append([])
                continue
            queue = self.queues.setdefault((s.tree, s.path), list(self.spec.get(s.path, [])))
            drawn, self.queues[(s.tree, s.path)] = queue[:w], queue[w:]
            if self.budgets:
                self.budgets[s.tree].charge_policy(len(drawn))
            paths = [(s.path + (step,), mass) for step, mass in drawn]
            out.append([(Toy(s.tree, path, path in self.terminal), mass) for path, mass in paths])
        return out

    def evaluate(self, states: Sequence[Toy]) -> list[float]:
        self.calls.append(("evaluate", [s.path for s in states]))
        # a completed answer ("end") is worth 0 unless the test says otherwise
        return [self.values.get(s.path, 0.0) if s.path[-1:] == ("end",) else self.values[s.path] for s in states]

    def rollout(self, states: Sequence[Toy], m: int) -> list[float]:
        self.calls.append(("rollout", [s.path for s in states], m))
        return [self.rollouts[s.path] for s in states]

    def finish(self, states: Sequence[Toy]) -> list[Toy]:
        self.calls.append(("finish", [s.path for s in states]))
        return [s if s.finished else Toy(s.tree, s.path + ("end",), True) for s in states]

    def kinds(self) -> list[str]:
        return [c[0] for c in self.calls]


def basic_world(terminal: set | None = None, **kw) -> ToyWorld:
    """root(0.5) -> a(0.8) [a1 finished (1.0), a2 (0.6) -> a2x finished (0.9)], b(0.2) [b1, b2]."""
    spec = {(): [("a", 1.0), ("b", 1.0)], ("a",): [("a1", 1.0), ("a2", 1.0)], ("b",): [("b1", 1.0), ("b2", 1.0)],
            ("a", "a2"): [("a2x", 1.0)]}
    values = {(): 0.5, ("a",): 0.8, ("b",): 0.2, ("a", "a1"): 1.0, ("a", "a2"): 0.6, ("b", "b1"): 0.4,
              ("b", "b2"): 0.0, ("a", "a2", "a2x"): 0.9}
    finished = {("a", "a1"), ("a", "a2", "a2x")} if terminal is None else terminal
    return ToyWorld(spec, values, terminal=finished, **kw)


def by_path(tree: Tree) -> dict[tuple[str, ...], Node]:
    return {n.state.path: n for n in tree.nodes}


# ------------------------------------------------------------------------------------ selection rules
def test_uct_and_puct_scores_by_hand():
    assert uct_score(0.5, 2, 8, 1.0) == pytest.approx(0.5 + math.sqrt(math.log(8) / 2))
    assert uct_score(0.0, 0, 8, 1.0) == math.inf
    assert puct_score(0.5, 0.25, 3, 16, 2.0) == pytest.approx(0.5 + 2.0 * 0.25 * 4 / 4)

    parent = Node(Toy(0, ()), visits=5, total=2.5)
    a = parent.add_child(Toy(0, ("a",)), 1.0, False)
    b = parent.add_child(Toy(0, ("b",)), 3.0, False)
    parent.normalise_priors()
    assert (a.prior, b.prior) == (0.25, 0.75)
    a.visits, a.total = 3, 2.1  # q 0.7
    b.visits, b.total = 1, 0.2  # q 0.2
    # UCT c=1: a 0.7 + sqrt(ln5/3) = 1.4325, b 0.2 + sqrt(ln5) = 1.4686 -> b; c=0.5: 1.0662 vs 0.8343 -> a
    assert select_child(parent, MCTSConfig(c=1.0)) is b
    assert select_child(parent, MCTSConfig(c=0.5)) is a
    # PUCT c=1: a 0.7 + 0.25 sqrt5/4 = 0.8398, b 0.2 + 0.75 sqrt5/2 = 1.0385 -> b; c=0.2: 0.728 vs 0.368 -> a
    assert select_child(parent, MCTSConfig(selection="puct", c=1.0)) is b
    assert select_child(parent, MCTSConfig(selection="puct", c=0.2)) is a
    # PUCT: an unvisited child counts as good as its parent (Q 0.5): 0.5 + 0.75 sqrt5 = 2.177 > a's 0.8398
    b.visits, b.total = 0, 0.0
    assert select_child(parent, MCTSConfig(selection="puct", c=1.0)) is b


# ------------------------------------------------------------------------------------ statistics
def test_visit_counts_and_backed_up_means_by_hand():
    """Six UCT (c=1) simulations, traced by hand:
    1 root (0.5) expanded; 2 a (0.8); 3 b (0.2); 4 root: a 0.8+sqrt(ln3)=1.848 > b 1.248 -> a -> a1 (1.0,
    finished); 5 a 0.9+sqrt(ln4/2)=1.733 > b 1.377 -> a -> a2 (0.6); 6 a 0.8+sqrt(ln5/3)=1.533 >
    b 0.2+sqrt(ln5)=1.469 -> a: a1 1+sqrt(ln3)=2.048 > a2 1.648 -> a1 again (cached, no call)."""
    world = basic_world()
    (tree,) = run_mcts(world, [Toy(0, ())], MCTSConfig(simulations=6, branching=2, c=1.0))
    nodes = by_path(tree)
    visits = {p: n.visits for p, n in nodes.items()}
    assert visits == {(): 6, ("a",): 4, ("b",): 1, ("a", "a1"): 2, ("a", "a2"): 1, ("b", "b1"): 0, ("b", "b2"): 0,
                      ("a", "a2", "a2x"): 0}
    assert nodes[()].q == pytest.approx((0.5 + 0.8 + 0.2 + 1.0 + 0.6 + 1.0) / 6)
    assert nodes[("a",)].q == pytest.approx((0.8 + 1.0 + 0.6 + 1.0) / 4)
    assert nodes[("a", "a1")].q == pytest.approx(1.0)
    # every node is evaluated once; finished a1 is never expanded; the unvisited finished a2x is scored at the end
    assert world.kinds() == ["evaluate", "expand"] * 3 + ["evaluate", "evaluate", "expand", "evaluate"]
    assert world.calls[-1] == ("evaluate", [("a", "a2", "a2x")])
    # answer: the best finished node by value is a1 (1.0 > a2x's 0.9)
    assert tree.answer == Toy(0, ("a", "a1"), True) and tree.answer_value == 1.0 and not tree.completed
    assert tree.rounds == 6 and tree.stopped == "simulations"


def test_final_answer_by_value_or_by_visits():
    root = Node(Toy(0, ()))
    t1 = root.add_child(Toy(0, ("t1",), True), 1.0, True)
    t2 = root.add_child(Toy(0, ("t2",), True), 1.0, True)
    t1.value, t1.visits = 0.9, 1
    t2.value, t2.visits = 0.7, 3
    tree = Tree(0, root, nodes=[root, t1, t2])
    assert best_finished(tree, "value") is t1
    assert best_finished(tree, "visits") is t2


def test_no_finished_node_completes_the_most_visited_path():
    world = basic_world(terminal=set())
    world.values[("a", "end")] = 0.25
    (tree,) = run_mcts(world, [Toy(0, ())], MCTSConfig(simulations=3, branching=2))
    # visits: root 3, a 1, b 1 -> tie on visits, a has the higher Q (0.8) -> a is completed
    assert world.calls[-2] == ("finish", [("a",)])
    assert tree.completed and tree.answer == Toy(0, ("a", "end"), True) and tree.answer_value == 0.25
    assert tree.answer_node is by_path(tree)[("a",)]


def test_lockstep_one_call_per_round_for_all_trees():
    world = basic_world()
    trees = run_mcts(world, [Toy(0, ()), Toy(1, ())], MCTSConfig(simulations=3, branching=2))
    # three rounds (root, a, b), then the sampled finished a1 of both trees is scored in one call
    assert world.kinds() == ["evaluate", "expand"] * 3 + ["evaluate"]
    assert all(len(c[1]) == 2 for c in world.calls)  # both trees in every call
    assert [t.root.visits for t in trees] == [3, 3]


# ------------------------------------------------------------------------------------ eta-MCTS switches
def test_adaptive_width_rule_by_hand():
    cfg = MCTSConfig(adaptive_branching=True, c_min=2, c_max=4, c_max_root=6, alpha=10.0)
    assert adaptive_width(0.0, cfg, root=False) == 2  # max(2, min(0 + 1, 4))
    assert adaptive_width(0.25, cfg, root=False) == 3  # floor(2.5) + 1
    assert adaptive_width(0.65, cfg, root=False) == 4  # floor(6.5) + 1 = 7, capped at c_max
    assert adaptive_width(0.65, cfg, root=True) == 6  # capped at c_max_root
    assert adaptive_width(0.35, cfg, root=True) == 4


def test_adaptive_branching_widens_by_importance():
    """Root v=0.5; probe children a (0.85), b (0.3): I = 0.35 -> floor(3.5) + 1 = 4 children (root cap 6).
    Round 2: a (already valued by its probe: no new value call) gets probe children a1 (0.9), a2 (0.5):
    I = 0.35 -> 4, capped at c_max = 3 -> one more child a3."""
    spec = {(): [("a", 1.0), ("b", 1.0), ("c", 1.0), ("d", 1.0), ("e", 1.0)],
            ("a",): [("a1", 1.0), ("a2", 1.0), ("a3", 1.0), ("a4", 1.0)]}
    values = {(): 0.5, ("a",): 0.85, ("b",): 0.3, ("a", "a1"): 0.9, ("a", "a2"): 0.5}
    world = ToyWorld(spec, values)
    cfg = MCTSConfig(simulations=2, adaptive_branching=True, c_min=2, c_max=3, c_max_root=6, alpha=10.0)
    (tree,) = run_mcts(world, [Toy(0, ())], cfg)
    assert [c.state.path[-1] for c in tree.root.children] == ["a", "b", "c", "d"]
    assert [c.state.path[-1] for c in by_path(tree)[("a",)].children] == ["a1", "a2", "a3"]
    assert world.calls[:4] == [
        ("evaluate", [()]), ("expand", [()], [2]), ("evaluate", [("a",), ("b",)]), ("expand", [()], [2]),
    ]
    # round 2: the leaf a was valued when probed, so the next call is its expansion; c, d were never valued
    assert world.calls[4:] == [
        ("expand", [("a",)], [2]), ("evaluate", [("a", "a1"), ("a", "a2")]), ("expand", [("a",)], [1]),
        ("finish", [("a",)]), ("evaluate", [("a", "end")]),
    ]
    assert by_path(tree)[("a",)].visits == 1 and by_path(tree)[("a",)].value == 0.85


def test_state_merge_folds_near_duplicates_and_resamples():
    spec = {(): [("x+1", 1.0), ("x+1 ", 1.0), ("y*2", 1.0), ("x+2", 1.0)]}
    values = {(): 0.5}
    merged = ToyWorld(spec, values)
    (tree,) = run_mcts(merged, [Toy(0, ())], MCTSConfig(simulations=1, branching=2, merge=True, merge_distance=1))
    # "x+1 " is one edit from "x+1": folded into it (mass 2) and its slot resampled -> "y*2"
    assert [(c.state.path[-1], c.prior) for c in tree.root.children] == [("x+1", 2 / 3), ("y*2", 1 / 3)]
    assert [c for c in merged.calls if c[0] == "expand"] == [("expand", [()], [2]), ("expand", [()], [1])]

    plain = ToyWorld(spec, values)
    (tree,) = run_mcts(plain, [Toy(0, ())], MCTSConfig(simulations=1, branching=2))
    assert [(c.state.path[-1], c.prior) for c in tree.root.children] == [("x+1", 0.5), ("x+1 ", 0.5)]

    exact = ToyWorld(spec, values)  # distance 0 merges only identical steps: "x+1 " stays
    (tree,) = run_mcts(exact, [Toy(0, ())], MCTSConfig(simulations=1, branching=2, merge=True, merge_distance=0))
    assert len(tree.root.children) == 2


def test_state_merge_gives_up_after_merge_tries():
    world = ToyWorld({(): [("a", 1.0)] * 4 + [("b", 1.0)]}, {(): 0.5})
    cfg = MCTSConfig(simulations=1, branching=2, merge=True, merge_distance=0, merge_tries=1)
    (tree,) = run_mcts(world, [Toy(0, ())], cfg)
    # call 1: a, a (one merged); retry 1: a (merged again); no more tries -> one child of mass 3
    assert [c for c in world.calls if c[0] == "expand"] == [("expand", [()], [2]), ("expand", [()], [1])]
    assert [(c.state.path[-1], c.mass) for c in tree.root.children] == [("a", 3.0)]


def test_fast_rollouts_mix_with_the_value():
    cfg = MCTSConfig(fast_rollouts=4, value_weight=1.0, rollout_weight=3.0)
    assert mix_value(0.6, 0.2, cfg) == pytest.approx((0.6 + 3 * 0.2) / 4)
    assert mix_value(None, 0.2, MCTSConfig(fast_rollouts=4, value_weight=0.0)) == pytest.approx(0.2)
    assert mix_value(0.6, None, MCTSConfig()) == pytest.approx(0.6)
    with pytest.raises(ValueError):
        MCTSConfig(value_weight=0.0)  # nothing would value an unfinished state

    world = basic_world(rollouts={(): 0.2, ("a",): 0.4, ("b",): 0.0})
    (tree,) = run_mcts(world, [Toy(0, ())], MCTSConfig(simulations=4, branching=2, fast_rollouts=4))
    nodes = by_path(tree)
    assert nodes[()].value == pytest.approx((0.5 + 0.2) / 2)
    assert nodes[("a",)].value == pytest.approx((0.8 + 0.4) / 2)
    assert nodes[("b",)].value == pytest.approx((0.2 + 0.0) / 2)
    assert nodes[("a", "a1")].value == pytest.approx(1.0)  # finished: the outcome score, no rollout
    rollouts = [c for c in world.calls if c[0] == "rollout"]
    assert rollouts == [("rollout", [()], 4), ("rollout", [("a",)], 4), ("rollout", [("b",)], 4)]


def test_budget_stops_a_tree_and_the_others_go_on():
    world = basic_world(budgets=[Budget(max_tokens=3), Budget()])
    trees = run_mcts(world, [Toy(0, ()), Toy(1, ())], MCTSConfig(simulations=4, branching=2))
    # tree 0: round 1 expands root (2 tokens), round 2 expands a (4 tokens >= 3): exhausted from round 3
    assert (trees[0].rounds, trees[0].stopped) == (2, "budget")
    assert (trees[1].rounds, trees[1].stopped) == (4, "simulations")
    assert world.budgets[0].tokens == 4
    expands = [c for c in world.calls if c[0] == "expand"]
    assert [len(c[1]) for c in expands] == [2, 2, 1]  # round 4: tree 1 picks finished a1 -> no expand
    assert trees[0].answer == Toy(0, ("a", "a1"), True)  # sampled finished child, scored at the end


# ------------------------------------------------------------------------------------ training data
def state_tree() -> tuple[Tree[State], dict[str, Node[State]]]:
    """root -> A (Q .8), B (Q .1), C (Q .7); A -> A1 finished by eos (Q 1.0), A2 (Q 0.0)."""
    eos = 99
    root_state = State(0, (1, 2))
    a = root_state.extend("3+4=7\n", (5, 6, 7))
    b = root_state.extend("3*4=12\n", (8, 9))
    c = root_state.extend("4-3=1\n", (12,))
    a1 = a.extend("7*2=14", (10, 11, eos), finished=True, finish_reason="eos")
    a2 = a.extend("7-2=5\n", (13,))
    root = Node(root_state, visits=7, total=4.0)
    nodes = {"root": root}
    stats = (("A", "root", a, 3, 2.4), ("B", "root", b, 2, 0.2), ("C", "root", c, 1, 0.7),
             ("A1", "A", a1, 1, 1.0), ("A2", "A", a2, 1, 0.0))
    for name, parent, state, visits, total in stats:
        node = nodes[parent].add_child(state, 1.0, state.finished)
        node.visits, node.total = visits, total
        nodes[name] = node
    tree = Tree(0, root, nodes=list(nodes.values()), answer=a1, answer_value=1.0, answer_node=nodes["A1"])
    return tree, nodes


def test_best_path_becomes_an_sft_episode():
    tree, _ = state_tree()
    problem = Problem("p0", "3 4 2 -> 14:\n", "14")
    episode = best_path_episode(tree, problem, min_score=0.5, group=7)
    assert episode is not None
    assert episode.token_ids == [1, 2, 5, 6, 7, 10, 11, 99]
    assert episode.trainable_mask() == [0, 0, 1, 1, 1, 1, 1, 1]
    assert episode.segment("completion").text == "3+4=7\n7*2=14"
    assert (episode.group, episode.reward, episode.problem_id) == (7, 1.0, "p0")
    assert best_path_episode(tree, problem, min_score=1.0) is None  # kept only when the score is above
    assert len(sft_episodes([tree], [problem], min_score=0.5)) == 1


def test_sibling_pairs_become_dpo_pairs():
    tree, nodes = state_tree()
    problem = Problem("p0", "3 4 2 -> 14:\n", "14")
    pairs = sibling_pairs(tree, problem, margin=0.2)
    # root: A (.8) vs B (.1) -> pair; A vs C (.7) differ by only .1 -> no pair. A: A1 (1.0) vs A2 (0.0) -> pair
    texts = [(c.segments[-1].text, r.segments[-1].text) for c, r in pairs]
    assert texts == [("3+4=7\n", "3*4=12\n"), ("7*2=14", "7-2=5\n")]
    chosen, rejected = pairs[1]
    assert [s.kind for s in chosen.segments] == ["prompt", "prefix", "step"]
    assert chosen.token_ids == [1, 2, 5, 6, 7, 10, 11, 99] and rejected.token_ids == [1, 2, 5, 6, 7, 13]
    assert chosen.num_trainable == 3 and rejected.num_trainable == 1
    assert (chosen.reward, rejected.reward) == (1.0, 0.0)
    # what DPOObjective consumes: rows chosen, rejected; the mask covers exactly the two steps
    batch = collate([e for pair in pairs for e in pair], pad_id=0)
    assert batch.mask.sum(dim=1).tolist() == [3.0, 2.0, 3.0, 1.0]
    assert len(sibling_pairs(tree, problem, margin=0.05)) == 3  # now A vs C counts too
    nodes["B"].visits = 0
    assert len(dpo_pairs([tree], [problem], margin=0.2, min_visits=1)) == 1  # unvisited B has no Q


# ------------------------------------------------------------------------------------ on the policy
class LengthCritic:
    """A stand-in value function: longer prefixes look a little better (deterministic, in [0, 1])."""

    name = "length"

    def score(self, problems, states):
        return [min(1.0, 0.1 * s.depth) for s in states]


def test_mcts_search_on_the_small_policy_counts_every_token(small_policy):
    from selfimprove.critics.verifier import VerifierCritic
    from selfimprove.search.mcts import mcts_search, mcts_trees
    from selfimprove.tasks.plugins import make_task

    generated = []
    original = small_policy.generate_ids

    def counting(prompt_ids, params, **kw):
        out = original(prompt_ids, params, **kw)
        generated.append(sum(c.num_tokens for c in out))
        return out

    small_policy.generate_ids = counting
    task = make_task("countdown", {"format": "steps"})
    problems = task.problems("train", 2)
    config = MCTSConfig(simulations=3, branching=2, fast_rollouts=1, merge=True, merge_distance=0, max_answer_tokens=24,
                        adaptive_branching=True, c_min=2, c_max=3, c_max_root=3)
    verifier = VerifierCritic(task, unfinished="zero")
    results = mcts_search(small_policy, task, problems, config, critic=LengthCritic(), outcome=verifier)
    assert len(results) == 2
    assert sum(r.budget.tokens for r in results) == sum(generated) > 0
    assert sum(r.budget.policy_calls for r in results) >= len(generated)  # each call charges each problem in it
    for r in results:
        assert r.search == "mcts" and r.budget.critic_calls > 0
        assert r.state is not None and r.state.finished and r.score in (0.0, 1.0)
        assert r.stats["root_visits"] == 3

    generated.clear()
    trees, budgets = mcts_trees(small_policy, problems, config.model_copy(update={"max_tokens": 10}),
                                critic=LengthCritic(), outcome=verifier)
    assert sum(b.tokens for b in budgets) == sum(generated)
    assert all(t.stopped == "budget" and t.rounds < 3 for t in trees)
    assert all(t.answer is not None and t.answer.finished for t in trees)  # answered despite the spent budget
