"""Best-of-N (SPECS §6): N complete answers per problem, the one the critic scores highest wins.

Greedy decoding is the N = 1, temperature 0 case and needs no critic. All N answers of all problems
are sampled in one policy call (or in rounds of `samples_per_call` under a token budget) and scored in
one critic call. Ties go to the earliest sample, so the choice is deterministic for a given seed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from pydantic import Field

from selfimprove.critics.base import Critic
from selfimprove.eval.voting import best_index
from selfimprove.rollout.budget import Budget
from selfimprove.search.config import SampledSearchConfig, SearchConfig
from selfimprove.policy.base import Sampler
from selfimprove.rollout.expand import root_states
from selfimprove.search.result import SearchResult, make_results
from selfimprove.search.conversations import conversation_candidates
from selfimprove.search.sample import sample_candidates
from selfimprove.critics.base import score_states
from selfimprove.rollout.state import State
from selfimprove.tasks.base import Problem, Task
from selfimprove.search.registry import register_search

if TYPE_CHECKING:
    from selfimprove.rollout.conversation import EnvRun


class GreedyConfig(SearchConfig):
    """Greedy decoding: one answer per problem at temperature 0 (the baseline every search beats)."""


class BestOfNConfig(SampledSearchConfig):
    """`n` answers per problem; `samples_per_call` (None: all n at once) splits them into rounds."""

    n: int = Field(8, ge=1)
    samples_per_call: int | None = Field(None, ge=1)


def scored_candidates(
    policy: Sampler,
    problems: Sequence[Problem],
    config: "BestOfNConfig",
    critic: Critic | None,
    budgets: Sequence[Budget] | None,
    env: EnvRun | None = None,
) -> tuple[list[Budget], list[list[State]], list[list[float]]]:
    """What best-of-N and the votes share: `config.n` answers per problem (lockstep rounds) and, with
    a critic, their scores from one critic call, grouped per problem (empty lists without a critic).
    With an environment (`env`), each answer is a whole conversation."""
    budgets = config.budgets(len(problems), budgets)
    if env is not None:
        candidates = conversation_candidates(policy, env, problems, config.n, config.sampling(), budgets,
                                             config.max_answer_tokens, samples_per_call=config.samples_per_call,
                                             generator=config.generator(policy))
    else:
        candidates = sample_candidates(
            policy,
            root_states(policy, problems),
            config.n,
            config.rule(),
            config.sampling(),
            budgets,
            config.max_answer_tokens,
            samples_per_call=config.samples_per_call,
            generator=config.generator(policy),
        )
    flat = [s for group in candidates for s in group]
    flat_scores = score_states(critic, problems, flat, budgets) if critic is not None else []
    grouped: list[list[float]] = []
    start = 0
    for group in candidates:
        grouped.append(flat_scores[start : start + len(group)] if flat_scores else [])
        start += len(group)
    return budgets, candidates, grouped


@register_search("best_of_n", BestOfNConfig)
def best_of_n_search(
    policy: Sampler,
    task: Task,
    problems: Sequence[Problem],
    config: BestOfNConfig,
    critic: Critic | None = None,
    budgets: Sequence[Budget] | None = None,
    env: EnvRun | None = None,
) -> list[SearchResult]:
    """The critic's favourite of `config.n` sampled answers (or conversations, with `env`) per problem
    (a critic is required for n > 1: without one there is nothing to choose by; use a vote instead)."""
    if critic is None and config.n > 1:
        raise ValueError("best_of_n with n > 1 needs a critic (majority_vote needs none)")
    budgets, candidates, grouped_scores = scored_candidates(policy, problems, config, critic, budgets, env)
    chosen: list[State | None] = []
    scores: list[float | None] = []
    stats = []
    for group, group_scores in zip(candidates, grouped_scores):
        if not group:
            chosen.append(None)
            scores.append(None)
            stats.append({"chosen_index": None})
            continue
        i = best_index(group_scores) if group_scores else 0
        chosen.append(group[i])
        scores.append(group_scores[i] if group_scores else None)
        stats.append({"chosen_index": i})
    return make_results(
        "best_of_n", task, problems, chosen, budgets, [len(g) for g in candidates], scores=scores, stats=stats
    )


@register_search("greedy", GreedyConfig)
def greedy_search(
    policy: Sampler,
    task: Task,
    problems: Sequence[Problem],
    config: GreedyConfig,
    critic: Critic | None = None,
    budgets: Sequence[Budget] | None = None,
    env: EnvRun | None = None,
) -> list[SearchResult]:
    """One greedy answer (or conversation) per problem. A critic, if given, only scores it for the record."""
    as_best_of_1 = BestOfNConfig(
        n=1, temperature=0.0, **config.model_dump(include={"max_answer_tokens", "max_tokens", "step", "seed"})
    )
    results = best_of_n_search(policy, task, problems, as_best_of_1, critic, budgets, env)
    for r in results:
        r.search = "greedy"
    return results
