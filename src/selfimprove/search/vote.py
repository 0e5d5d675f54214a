"""Majority vote (self-consistency) and critic-weighted vote over sampled answers (SPECS §6), as
searches. Answers vote through `Task.answer_key`; the vote itself (`majority_vote`, `weighted_vote`,
their tie rules) is `eval/voting.py`, shared with evaluation's maj@k.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from selfimprove.critics.base import Critic
from selfimprove.eval.voting import Vote, majority_vote, weighted_vote
from selfimprove.search.best_of_n import BestOfNConfig, scored_candidates
from selfimprove.rollout.budget import Budget
from selfimprove.policy.base import Sampler
from selfimprove.search.result import SearchResult, answer_key, make_results
from selfimprove.rollout.state import State
from selfimprove.tasks.base import Problem, Task
from selfimprove.search.registry import register_search

if TYPE_CHECKING:
    from selfimprove.rollout.conversation import EnvRun

__all__ = ["Vote", "VoteConfig", "majority_vote", "majority_vote_search", "weighted_vote", "weighted_vote_search"]


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
    env: EnvRun | None = None,
) -> list[SearchResult]:
    """Sample, key, vote (weighted by the critic's scores when a critic is given)."""
    budgets, candidates, grouped_scores = scored_candidates(policy, problems, config, critic, budgets, env)
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
        keys = [answer_key(task, problem, s) for s in group]
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
    env: EnvRun | None = None,
) -> list[SearchResult]:
    """Self-consistency: the most frequent answer of `config.n` samples (or conversations, with `env`).
    A critic is not used."""
    return _vote_search("majority_vote", policy, task, problems, config, None, budgets, env)


@register_search("weighted_vote", VoteConfig)
def weighted_vote_search(
    policy: Sampler,
    task: Task,
    problems: Sequence[Problem],
    config: VoteConfig,
    critic: Critic | None = None,
    budgets: Sequence[Budget] | None = None,
    env: EnvRun | None = None,
) -> list[SearchResult]:
    """The answer whose samples' critic scores sum highest (needs a critic; one critic call)."""
    if critic is None:
        raise ValueError("weighted_vote needs a critic (majority_vote needs none)")
    return _vote_search("weighted_vote", policy, task, problems, config, critic, budgets, env)
