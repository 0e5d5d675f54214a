"""Settings every search shares, validated like any recipe section (unknown fields fail at load).

Each search extends `SearchConfig` (or `SampledSearchConfig` when it samples) with its own fields, so a
recipe's `search:` block names one search and its settings, and `registry.SEARCHES` builds it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:  # loaded when a run starts, not when a recipe is validated
    import torch
from pydantic import BaseModel, ConfigDict, Field

from selfimprove.policy.base import Sampler, SamplingParams
from selfimprove.rollout.budget import Budget
from selfimprove.rollout.state import StepRule, StepRuleConfig


class SearchConfig(BaseModel):
    """`max_answer_tokens` caps one answer's length; `max_tokens` is the per-problem token budget
    (None: unlimited) a search stops at; `seed` seeds the search's own sampling stream, so a search is
    reproducible and never shifts the policy's training stream."""

    model_config = ConfigDict(extra="forbid")

    max_answer_tokens: int = Field(64, ge=1)
    max_tokens: int | None = Field(None, ge=1)
    step: StepRuleConfig = StepRuleConfig()
    seed: int = 0

    def rule(self) -> StepRule:
        return self.step.rule()

    def sampling(self) -> SamplingParams:
        """Greedy by default; `SampledSearchConfig` samples."""
        return SamplingParams(temperature=0.0)

    def budgets(self, num_problems: int, given: Sequence[Budget] | None = None) -> list[Budget]:
        """The caller's budgets (they keep counting across searches), else fresh ones with `max_tokens`."""
        if given is None:
            return [Budget(max_tokens=self.max_tokens) for _ in range(num_problems)]
        if len(given) != num_problems:
            raise ValueError(f"{len(given)} budgets for {num_problems} problems")
        return list(given)

    def generator(self, policy: Sampler) -> torch.Generator:
        """The search's own sampling stream on the engine, seeded with `seed` (never the training stream)."""
        return policy.make_generator(self.seed)


class SampledSearchConfig(SearchConfig):
    """A search that samples: temperature (0 = greedy) and nucleus top-p."""

    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)

    def sampling(self) -> SamplingParams:
        return SamplingParams(temperature=self.temperature, top_p=self.top_p)
