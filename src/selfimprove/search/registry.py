"""Every search by name, with its config class, so a recipe (`selfimprove search RECIPE`) can build any.

All searches share one signature: `fn(policy, task, problems, config, critic=None, budgets=None) ->
list[SearchResult]`. A search registers itself where it is defined, `@register_search(name, Config)`;
`builtin.py` imports the built-in ones on the registry's first lookup.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, TypeVar

from selfimprove.critics.base import Critic
from selfimprove.policy.base import Sampler
from selfimprove.registry import Registry
from selfimprove.rollout.budget import Budget
from selfimprove.search.config import SearchConfig
from selfimprove.search.result import SearchResult
from selfimprove.tasks.base import Problem, Task

SearchFn = Callable[..., list[SearchResult]]


@dataclass(frozen=True)
class SearchSpec:
    """A search's config class (validates the recipe's settings) and its function."""

    config: type[SearchConfig]
    run: SearchFn


SEARCHES: Registry[SearchSpec] = Registry("search", load="selfimprove.search.builtin")
F = TypeVar("F", bound=SearchFn)


def register_search(name: str, config: type[SearchConfig]) -> Callable[[F], F]:
    """Decorator: register a search function under `name` with the config class that validates its settings."""

    def wrap(fn: F) -> F:
        SEARCHES.register(name)(SearchSpec(config, fn))
        return fn

    return wrap


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
