"""Training data from MCTS trees: the best path as an SFT episode, sibling steps as DPO pairs.

AlphaLLM's loop keeps the path whose leaf has the best critic score when that score clears a
threshold and fine-tunes on it (SPECS §5). The same tree also says, at every node, which next step
turned out better: two visited siblings whose values Q (mean backed-up value) differ by more than a
margin make a step-level preference pair. Both come out as the project's `Episode`s, so the SFT
learner and `DPOObjective` (rows chosen, rejected, ...) consume them unchanged:
- SFT episode: `prompt` (not trained) + `completion` (the path's tokens, trained, ending with the end
  token the policy emitted, so the model also learns to stop);
- DPO pair: `prompt` + `prefix` (the parent's steps, not trained) + `step` (the child's step, trained),
  so the pair's log-probability difference is exactly that of the two competing steps.
"""

from __future__ import annotations

from typing import Sequence

from selfimprove.rollout.episode import Episode, Segment
from selfimprove.search.mcts import Node, Tree
from selfimprove.rollout.state import State
from selfimprove.tasks.base import Problem


def best_path_episode(tree: Tree[State], problem: Problem, *, min_score: float = 0.5, group: int = 0) -> Episode | None:
    """The tree's answer as a trainable completion, or None when it is unfinished or its outcome
    score is not above `min_score` (SPECS §5: keep the path if ORM > threshold)."""
    state = tree.answer
    if state is None or not state.finished or tree.answer_value is None or tree.answer_value <= min_score:
        return None
    reward = float(tree.answer_value)
    return Episode(
        segments=[
            Segment("prompt", list(state.prompt_ids)),
            Segment("completion", state.completion_ids, trainable=True, reward=reward, text=state.answer),
        ],
        group=group,
        problem_id=problem.id,
        reward=reward,
        info={"source": "mcts", "completed": tree.completed, "steps": state.depth},
    )


def sft_episodes(
    trees: Sequence[Tree[State]], problems: Sequence[Problem], *, min_score: float = 0.5, group_offset: int = 0
) -> list[Episode]:
    """One SFT episode per tree whose answer clears `min_score` (group = offset + tree index)."""
    out = []
    for tree in trees:
        episode = best_path_episode(tree, problems[tree.index], min_score=min_score, group=group_offset + tree.index)
        if episode is not None:
            out.append(episode)
    return out


def step_episode(node: Node[State], problem: Problem, group: int) -> Episode:
    """A node's last step as the trainable part, after the prompt and its parent's steps."""
    state = node.state
    if not state.steps:
        raise ValueError("the root has no step to train")
    prefix = [t for ids in state.step_ids[:-1] for t in ids]
    segments = [Segment("prompt", list(state.prompt_ids))]
    if prefix:
        segments.append(Segment("prefix", prefix, text="".join(state.steps[:-1])))
    segments.append(Segment("step", list(state.step_ids[-1]), trainable=True, reward=node.q, text=state.steps[-1]))
    return Episode(
        segments=segments,
        group=group,
        problem_id=problem.id,
        reward=node.q,
        info={"source": "mcts", "q": node.q, "visits": node.visits, "depth": node.depth, "finished": state.finished},
    )


def sibling_pairs(
    tree: Tree[State], problem: Problem, *, margin: float = 0.2, min_visits: int = 1, group: int = 0
) -> list[tuple[Episode, Episode]]:
    """(chosen, rejected) step pairs: at every node, its best visited child (by Q, first sampled on
    ties) against each visited sibling whose Q is more than `margin` lower. Children with fewer than
    `min_visits` visits have no reliable Q and are left out. Nodes in creation order."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    pairs = []
    for node in tree.nodes:
        visited = [ch for ch in node.children if ch.visits >= max(1, min_visits)]
        if len(visited) < 2:
            continue
        best = max(visited, key=lambda ch: ch.q)
        chosen = step_episode(best, problem, group)
        for other in visited:
            if best.q - other.q > margin:
                pairs.append((chosen, step_episode(other, problem, group)))
    return pairs


def dpo_pairs(
    trees: Sequence[Tree[State]],
    problems: Sequence[Problem],
    *,
    margin: float = 0.2,
    min_visits: int = 1,
    group_offset: int = 0,
) -> list[tuple[Episode, Episode]]:
    """Sibling pairs of every tree (group = offset + tree index), in the format `train.dpo` uses."""
    out = []
    for tree in trees:
        problem = problems[tree.index]
        out.extend(sibling_pairs(tree, problem, margin=margin, min_visits=min_visits, group=group_offset + tree.index))
    return out
