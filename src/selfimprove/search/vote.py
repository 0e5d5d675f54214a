"""Majority vote (self-consistency) and critic-weighted vote over sampled answers (SPECS §6).

Answers vote through `Task.answer_key`: two answers count as the same when their keys are equal
(numbers normalised, Countdown by its set of operations, ...). An answer with no key (nothing that
looks like an answer) casts no vote.

Ties are broken deterministically, always the same way:
- majority: most votes, then the key whose first answer was sampled earliest;
- weighted: highest summed critic score (`math.fsum`, so the sum does not depend on the order of the
  answers), then most votes, then the key sampled earliest.
The chosen answer of a key is its first sample (majority) or its highest-scored sample, ties to the
earliest (weighted). When no answer has a key, the first sample is chosen and the winning key is None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

from selfimprove.critics.base import Critic
from selfimprove.search.best_of_n import BestOfNConfig, best_index, scored_candidates
from selfimprove.rollout.budget import Budget
from selfimprove.policy.base import Sampler
from selfimprove.search.result import SearchResult, make_results
from selfimprove.rollout.state import State
from selfimprove.tasks.base import Problem, Task
from selfimprove.search.registry import register_search


@dataclass(frozen=True)
class Vote:
    """The winning key, the index of the answer chosen for it, and the tally per key."""

    key: str | None
    index: int
    tally: dict[str, float]
    votes: dict[str, int]


def _groups(keys: Sequence[str | None]) -> dict[str, list[int]]:
    """Answer indices per key, keys in order of first appearance (dicts keep insertion order)."""
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        if key is not None:
            groups.setdefault(key, []).append(i)
    return groups


def majority_vote(keys: Sequence[str | None]) -> Vote:
    """The most frequent key (ties: sampled earliest) and its first answer."""
    if not keys:
        raise ValueError("a vote needs at least one answer")
    groups = _groups(keys)
    votes = {k: len(v) for k, v in groups.items()}
    if not groups:
        return Vote(None, 0, {}, {})
    # max() keeps the first of equal maxima, and groups are in order of first appearance.
    key = max(groups, key=lambda k: votes[k])
    return Vote(key, groups[key][0], {k: float(n) for k, n in votes.items()}, votes)


def weighted_vote(keys: Sequence[str | None], weights: Sequence[float]) -> Vote:
    """The key with the highest summed weight (ties: more votes, then sampled earliest) and its
    highest-weighted answer (ties: the earliest)."""
    if len(keys) != len(weights):
        raise ValueError(f"{len(keys)} answers but {len(weights)} weights")
    if not keys:
        raise ValueError("a vote needs at least one answer")
    groups = _groups(keys)
    votes = {k: len(v) for k, v in groups.items()}
    if not groups:
        return Vote(None, 0, {}, {})
    tally = {k: math.fsum(weights[i] for i in v) for k, v in groups.items()}
    key = max(groups, key=lambda k: (tally[k], votes[k]))
    members = groups[key]
    return Vote(key, members[best_index([weights[i] for i in members])], tally, votes)


class VoteConfig(BestOfNConfig):
    """`n` sampled answers per problem to vote over (`samples_per_call` splits them into rounds)."""


def _vote_search(
    name: str,
    policy: Sampler,
    task: Task,
    problems: Sequence[Problem],
    config: VoteConfig,
    critic: Critic | None,
    budgets: Sequence[Budget] | None,
) -> list[SearchResult]:
    """Sample, key, vote (weighted by the critic's scores when a critic is given)."""
    budgets, candidates, grouped_scores = scored_candidates(policy, problems, config, critic, budgets)
    weighted = critic is not None
    chosen: list[State | None] = []
    scores: list[float | None] = []
    stats = []
    for problem, group, group_scores in zip(problems, candidates, grouped_scores):
        if not group:
            chosen.append(None)
            scores.append(None)
            stats.append({"key": None, "votes": 0, "distinct_answers": 0})
            continue
        keys = [task.answer_key(problem, s.answer) for s in group]
        vote = weighted_vote(keys, group_scores) if weighted else majority_vote(keys)
        chosen.append(group[vote.index])
        scores.append(group_scores[vote.index] if weighted else None)
        stats.append({
            "key": vote.key,
            "votes": vote.votes.get(vote.key, 0) if vote.key is not None else 0,
            "weight": vote.tally.get(vote.key) if vote.key is not None and weighted else None,
            "distinct_answers": len(vote.votes),
            "no_key": sum(k is None for k in keys),
        })
    return make_results(name, task, problems, chosen, budgets, [len(g) for g in candidates], scores=scores, stats=stats)


@register_search("majority_vote", VoteConfig)
def majority_vote_search(
    policy: Sampler,
    task: Task,
    problems: Sequence[Problem],
    config: VoteConfig,
    critic: Critic | None = None,
    budgets: Sequence[Budget] | None = None,
) -> list[SearchResult]:
    """Self-consistency: the most frequent answer of `config.n` samples. A critic is not used."""
    return _vote_search("majority_vote", policy, task, problems, config, None, budgets)


@register_search("weighted_vote", VoteConfig)
def weighted_vote_search(
    policy: Sampler,
    task: Task,
    problems: Sequence[Problem],
    config: VoteConfig,
    critic: Critic | None = None,
    budgets: Sequence[Budget] | None = None,
) -> list[SearchResult]:
    """The answer whose samples' critic scores sum highest (needs a critic; one critic call)."""
    if critic is None:
        raise ValueError("weighted_vote needs a critic (majority_vote needs none)")
    return _vote_search("weighted_vote", policy, task, problems, config, critic, budgets)
