"""Every search by name, with its config class, so a recipe (`selfimprove search RECIPE`) can build any.

All searches share one signature: `fn(policy, task, problems, config, critic=None, budgets=None) ->
list[SearchResult]`. A new search is one `SEARCHES.register(name)(SearchSpec(Config, fn))` line here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from selfimprove.critics.base import Critic
from selfimprove.registry import Registry
from selfimprove.search.beam import BeamConfig, beam_search
from selfimprove.search.best_of_n import BestOfNConfig, GreedyConfig, best_of_n_search, greedy_search
from selfimprove.rollout.budget import Budget
from selfimprove.search.config import SearchConfig
from selfimprove.policy.base import Sampler
from selfimprove.search.mcts import MCTSConfig, mcts_search
from selfimprove.search.result import SearchResult
from selfimprove.search.revision import RevisionConfig, revision_search
from selfimprove.search.vote import VoteConfig, majority_vote_search, weighted_vote_search
from selfimprove.tasks.base import Problem, Task

SearchFn = Callable[..., list[SearchResult]]


@dataclass(frozen=True)
class SearchSpec:
    """A search's config class (validates the recipe's settings) and its function."""

    config: type[SearchConfig]
    run: SearchFn


SEARCHES: Registry[SearchSpec] = Registry("search")
SEARCHES.register("greedy")(SearchSpec(GreedyConfig, greedy_search))
SEARCHES.register("best_of_n")(SearchSpec(BestOfNConfig, best_of_n_search))
SEARCHES.register("majority_vote")(SearchSpec(VoteConfig, majority_vote_search))
SEARCHES.register("weighted_vote")(SearchSpec(VoteConfig, weighted_vote_search))
SEARCHES.register("beam")(SearchSpec(BeamConfig, beam_search))
SEARCHES.register("revision")(SearchSpec(RevisionConfig, revision_search))
SEARCHES.register("mcts")(SearchSpec(MCTSConfig, mcts_search))  # eta-MCTS (SPECS §5); takes outcome= and rollout_policy=


def make_search_config(name: str, params: Mapping[str, Any] | None = None) -> SearchConfig:
    """Validate a recipe's settings for the named search (unknown names and fields fail here)."""
    return SEARCHES.get(name).config.model_validate(dict(params or {}))


def run_search(
    name: str,
    policy: Sampler,
    task: Task,
    problems: Sequence[Problem],
    params: Mapping[str, Any] | SearchConfig | None = None,
    critic: Critic | None = None,
    budgets: Sequence[Budget] | None = None,
) -> list[SearchResult]:
    """Run the named search with settings given as a config or as plain recipe values."""
    spec = SEARCHES.get(name)
    config = params if isinstance(params, SearchConfig) else make_search_config(name, params)
    if not isinstance(config, spec.config):
        raise TypeError(f"search {name!r} needs a {spec.config.__name__}, got {type(config).__name__}")
    return spec.run(policy, task, problems, config, critic, budgets)
