"""The `selfimprove search` recipe: which policy, which task split, which search and which critics.

A recipe names one registered search (`search.registry.SEARCHES`) and its settings; the settings are
validated by that search's own config class while the recipe loads, so a typo fails with its full path
(`search.params.nn: unknown field`) before any model is built. `search.sweep` repeats the search at
several values of one setting (best-of-N at n = 1, 4, 16, 64; MCTS at 4, 16, 64 simulations; or the
token budget itself), so one run yields several (accuracy, tokens) points for `selfimprove report`.

Critics: the learned value, PRM and ORM folders written by `selfimprove critic train` (any subset),
combined by a weighted mean (`critics.combined`; AlphaLLM uses all weights 1). A search that also takes
a separate outcome critic (MCTS: finished states and fast rollouts) gets `critics.outcome`. The task's
verifier reads the gold answers, so it is a critic only with `critics.uses_gold_answers: true`, for
making training data; a test accuracy measured with it is not a test accuracy, and the summary says so.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from selfimprove.config import ModelConfig, Recipe, Strict
from selfimprove.search.config import SearchConfig
from selfimprove.registry import full_checks
from selfimprove.search.registry import SEARCHES

VERIFIER = "verifier"  # the word that names the task verifier where a critic folder could go
TOOL = "tool"  # the word that names the task's gold-free tool check


def _bad(reason: str) -> PydanticCustomError:
    """A recipe error whose message is exactly `reason` (a plain ValueError gets a "Value error, " prefix)."""
    return PydanticCustomError("search_recipe", "{reason}", {"reason": reason})


class SweepConfig(Strict):
    """Run the search once per value of one of its settings (e.g. `n`, `simulations`, `max_tokens`)."""

    param: str
    values: list[Any] = Field(min_length=1)


class SearchSection(Strict):
    """One registered search by name, its settings, and an optional sweep over one setting."""

    name: str = "greedy"
    params: dict[str, Any] = Field(default_factory=dict)
    sweep: SweepConfig | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        if not full_checks():
            return v
        try:
            return SEARCHES.require(v)
        except ValueError as err:
            raise _bad(str(err)) from None

    @field_validator("params")
    @classmethod
    def _valid_for_the_search(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        if "max_tokens" in v:
            raise _bad("set the per-problem token budget with the recipe's top-level max_tokens")
        name = info.data.get("name")
        if name is not None and full_checks():  # an unknown name is reported by its own validator
            SEARCHES.get(name).config.model_validate(v)  # errors keep their path: search.params.<field>
        return v

    @field_validator("sweep")
    @classmethod
    def _sweepable(cls, v: SweepConfig | None, info: ValidationInfo) -> SweepConfig | None:
        name, params = info.data.get("name"), info.data.get("params")
        if v is None or name is None or params is None or not full_checks():
            return v
        config = SEARCHES.get(name).config
        if v.param not in config.model_fields:
            raise _bad(f"{v.param!r} is not a setting of {name} (settings: {', '.join(sorted(config.model_fields))})")
        if len({repr(x) for x in v.values}) != len(v.values):
            raise _bad(f"sweep values repeat: {v.values}")
        for value in v.values:
            config.model_validate({**params, v.param: value})
        return v


class CriticWeights(Strict):
    """Weights of the combined critic's members (members that are not configured are ignored)."""

    value: float = Field(1.0, ge=0.0)
    prm: float = Field(1.0, ge=0.0)
    orm: float = Field(1.0, ge=0.0)
    verifier: float = Field(1.0, ge=0.0)
    tool: float = Field(1.0, ge=0.0)


class CriticsSection(Strict):
    """Critic folders (from `selfimprove critic train`), the verifier switch, and the outcome critic."""

    value: str | None = None
    prm: str | None = None
    orm: str | None = None
    verifier: bool = False  # the task's verifier as a member (reads gold answers; 0 for unfinished states)
    tool: bool = False  # the task's gold-free tool check as a member (critics/tool.py; allowed at test time)
    outcome: str | None = None  # an ORM folder, "verifier" or "tool", for searches that take an outcome critic (MCTS)
    outcome_tool: bool = False  # the outcome critic is the ORM and the tool check, weighted (weights.orm, weights.tool)
    weights: CriticWeights = Field(default_factory=CriticWeights)
    uses_gold_answers: bool = False  # must be true to use the verifier: data generation, never test accuracy
    batch_size: int = Field(64, ge=1)  # sequences per critic forward pass

    def members(self) -> dict[str, str | None]:
        """Configured members of the combined critic: kind -> folder (None for the verifier)."""
        out: dict[str, str | None] = {k: p for k, p in (("value", self.value), ("prm", self.prm), ("orm", self.orm)) if p}
        if self.tool:
            out[TOOL] = None
        if self.verifier:
            out[VERIFIER] = None
        return out

    @property
    def reads_gold(self) -> bool:
        return self.verifier or self.outcome == VERIFIER

    @model_validator(mode="after")
    def _check(self) -> "CriticsSection":
        if self.reads_gold and not self.uses_gold_answers:
            raise _bad(
                "the verifier reads the gold answers: set critics.uses_gold_answers=true to use it "
                "(for making training data; never for measuring test accuracy)"
            )
        if self.uses_gold_answers and not self.reads_gold:
            raise _bad("critics.uses_gold_answers is set but no verifier is used (verifier: true or outcome: verifier)")
        if self.outcome_tool and (self.outcome is None or self.outcome in (VERIFIER, TOOL)):
            raise _bad("outcome_tool combines an ORM folder in `outcome` with the tool check: set outcome to an ORM folder")
        members = self.members()
        if members and sum(getattr(self.weights, k) for k in members) <= 0:
            raise _bad(f"the weights of the configured critics ({', '.join(members)}) are all 0")
        return self


class SearchRecipe(Recipe):
    """`selfimprove search RECIPE`: evaluate one search (or a sweep) on a task's held-out problems."""

    split: Literal["train", "test"] = "test"
    num_problems: int = Field(100, ge=1)  # distinct problems of the split
    first_problem: int = Field(0, ge=0)  # index they start from (validation: train problems past the training data)
    problems_per_batch: int = Field(16, ge=1)  # problems searched together in lockstep (one batch of calls)
    max_tokens: int | None = Field(None, ge=1)  # per-problem token budget (None: the search's own limits)
    search: SearchSection = Field(default_factory=SearchSection)
    # validate_default: no critics at all must still suit the search (the default validates from {})
    critics: CriticsSection = Field(default_factory=dict, validate_default=True)  # type: ignore[arg-type]
    rollout_model: ModelConfig | None = None  # a cheaper fast-rollout policy, for searches that take one (MCTS)

    # Cross-field checks are field validators of the later field, so an error names that field.
    @field_validator("critics")
    @classmethod
    def _critics_fit_the_search(cls, v: CriticsSection, info: ValidationInfo) -> CriticsSection:
        search = info.data.get("search")
        if search is None or not full_checks():  # the search section itself failed; that error is reported
            return v
        if v.outcome is not None and not takes(search.name, "outcome"):
            raise _bad(f"outcome: search {search.name!r} takes no separate outcome critic (only the combined one)")
        for setting, config in search_points(search, info.data.get("seed", 0), info.data.get("max_tokens")):
            reason = missing_critic(search.name, config, bool(v.members()), v.outcome is not None)
            if reason:
                raise _bad(f"search {search.name!r}{f' at {setting}' if setting else ''} {reason}")
        return v

    @field_validator("rollout_model")
    @classmethod
    def _search_has_rollouts(cls, v: ModelConfig | None, info: ValidationInfo) -> ModelConfig | None:
        search = info.data.get("search")
        if v is not None and search is not None and full_checks() and not takes(search.name, "rollout_policy"):
            raise _bad(f"search {search.name!r} has no fast rollouts")
        return v

    @model_validator(mode="after")
    def _search_runs_conversations(self) -> "SearchRecipe":
        if self.env is not None and full_checks() and not takes(self.search.name, "env"):
            with_env = ", ".join(n for n in SEARCHES.names() if takes(n, "env"))
            raise ValueError(f"env: search {self.search.name!r} does not run conversations (searches that do: {with_env})")
        return self

    def points(self) -> list[tuple[dict[str, Any], SearchConfig]]:
        """One (setting, config) per point of the run: each sweep value, or the one configuration."""
        return search_points(self.search, self.seed, self.max_tokens)


def search_points(search: SearchSection, seed: int, max_tokens: int | None) -> list[tuple[dict[str, Any], SearchConfig]]:
    """(setting, config) pairs; the search's seed defaults to the recipe's, and the per-problem token
    budget is the recipe's `max_tokens` unless the sweep varies it."""
    base = {"seed": seed, **search.params, "max_tokens": max_tokens}
    spec = SEARCHES.get(search.name)
    sweep = search.sweep
    settings: list[dict[str, Any]] = [{}] if sweep is None else [{sweep.param: v} for v in sweep.values]
    return [(s, spec.config.model_validate({**base, **s})) for s in settings]


def takes(search: str, argument: str) -> bool:
    """Whether the registered search's function accepts a keyword (MCTS: outcome, rollout_policy)."""
    return argument in inspect.signature(SEARCHES.get(search).run).parameters


def missing_critic(name: str, config: SearchConfig, has_critic: bool, has_outcome: bool) -> str | None:
    """Why the configured critics cannot run this search (checked at load, not after the model loads)."""
    if name == "mcts":
        if not (has_critic or has_outcome):
            return "needs a critic (value/PRM/ORM) or an outcome critic"
        if not has_critic and (getattr(config, "uses_value", False) or getattr(config, "adaptive_branching", False)):
            return "values unfinished states (value_weight > 0 or adaptive_branching): configure a value critic, or set value_weight=0 and fast_rollouts > 0"
        return None
    if has_critic:
        return None
    if name in ("weighted_vote", "beam"):
        return "needs a critic"
    if name == "best_of_n" and getattr(config, "n", 1) > 1:
        return "with n > 1 needs a critic to choose by (or use majority_vote)"
    return None
