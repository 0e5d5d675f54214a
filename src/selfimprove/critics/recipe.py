"""The `selfimprove critic train` recipe: which policy labels its own rollouts, how, and what to train.

Sections: `step_rule` (how answers split into steps, as the search will split them), `labels` (the
Monte-Carlo labelling of `critics/labels.py`), `critics` (which of value, prm, orm to train) and
`training` (the loop of `critics/train.py` and the held-out report).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from selfimprove.config import OptimConfig, Recipe, Strict
from selfimprove.rollout.state import StepRuleConfig  # the search's own section: labels split steps as it does

Kind = Literal["value", "prm", "orm"]
KINDS: tuple[Kind, ...] = ("value", "prm", "orm")  # the learned critics (critics/model.py)


class LabelsConfig(Strict):
    """Monte-Carlo labels from the policy's own samples (see `critics/labels.py` for the definitions)."""

    num_problems: int = Field(64, ge=2)  # train problems first_problem .. first_problem + num_problems - 1
    first_problem: int = Field(0, ge=0)
    samples_per_problem: int = Field(4, ge=1)  # full answers sampled per problem (their prefixes get labels)
    rollouts_per_prefix: int = Field(4, ge=1)  # m completions per unfinished prefix
    temperature: float = Field(1.0, gt=0.0)  # > 0: Monte-Carlo estimates need sampling
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(32, ge=1)  # per sample, and per rollout from a prefix
    problems_per_batch: int = Field(16, ge=1)  # problems sampled together in one generate call
    max_rollout_rows: int = Field(512, ge=1)  # sequences per rollout generate call (bounds memory)
    prm_label: Literal["hard", "soft"] = "hard"  # hard: 1 if any rollout is right; soft: the fraction
    rollout_outcomes: bool = True  # rollouts' finished answers also become ORM examples
    path: str | None = None  # read this labels.jsonl instead of building labels (same policy, same task)


class CriticTraining(Strict):
    """How each critic is trained and judged.

    `objective`: `pointwise` (each example against its label: MSE for the value function, BCE for PRM
    and ORM), `pairwise` (Bradley-Terry over the examples of one problem: for every pair whose labels
    differ, -log sigmoid(z_better - z_worse), so the critic learns to *rank* one problem's answers,
    which is what best-of-N and a search need), `mixed` (pointwise + `ranking_weight` x pairwise) or
    `listwise` (per problem, -log of the softmax mass on its right examples: best-of-N's top-1 criterion).
    With a ranking term, batches hold whole problems (`batch_size` examples, rounded to problems).
    """

    epochs: int = Field(3, ge=1)
    objective: Literal["pointwise", "pairwise", "mixed", "listwise"] = "pointwise"
    ranking_weight: float = Field(1.0, gt=0.0)
    batch_size: int = Field(32, ge=1)  # examples per optimizer step (micro-batched by optim.micro_batch_size)
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-4, micro_batch_size=32))
    # Beta(a, a) pseudo-count that shrinks Monte-Carlo training labels toward 1/2 by their rollout count
    # (`critics.labels.smooth_labels`); 0: the labels as estimated. Held-out labels stay raw.
    label_smoothing: float = Field(0.0, ge=0.0)
    # Draw each kind's rarer class (label >= 0.5 or below) again until the classes are even
    # (`critics.labels.balance_labels`, before smoothing); held-out examples stay as they are.
    balance: bool = False
    eval_fraction: float = Field(0.2, gt=0.0, lt=1.0)  # share of problems held out (all their examples)
    threshold: float = Field(0.5, gt=0.0, lt=1.0)  # score >= threshold predicts "right"
    ece_bins: int = Field(10, ge=1)
    score_batch_size: int = Field(64, ge=1)  # sequences per no-grad scoring pass


class CriticRecipe(Recipe):
    critics: list[Kind] = Field(default_factory=lambda: list(KINDS))
    step_rule: StepRuleConfig = Field(default_factory=StepRuleConfig)
    labels: LabelsConfig = Field(default_factory=LabelsConfig)
    training: CriticTraining = Field(default_factory=CriticTraining)

    @field_validator("critics")
    @classmethod
    def _some_distinct(cls, v: list[Kind]) -> list[Kind]:
        if not v:
            raise ValueError("name at least one critic to train (value, prm, orm)")
        if len(set(v)) != len(v):
            raise ValueError(f"critics are listed twice: {v}")
        return v
