"""The core types of a task: problems, verdicts, settings and the deterministic split of problems.

Kept apart from `base.py` (the `Task` class) so that helpers every task uses (`answers.py`) can use
these types without importing the task machinery.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")


@dataclass(frozen=True)
class Problem:
    """One problem: the prompt shown to the model, the gold answer, and optionally a worked solution."""

    id: str
    prompt: str
    answer: str
    demonstration: tuple[str, ...] | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def demonstration_text(self) -> str:
        """The demonstration as the model should write it: one step per line."""
        if not self.demonstration:
            raise ValueError(f"problem {self.id} has no demonstration")
        return "\n".join(self.demonstration)


@dataclass(frozen=True)
class Verdict:
    """A verifier's judgement: a score in [0, 1], whether it counts as correct, and why; `info` carries
    what a step may log about it (a reward function's parts: `rewards`, `reward_failed`)."""

    score: float
    correct: bool
    reason: str
    info: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def wrong(cls, reason: str, score: float = 0.0) -> "Verdict":
        return cls(score=score, correct=False, reason=reason)

    @classmethod
    def right(cls, reason: str = "correct") -> "Verdict":
        return cls(score=1.0, correct=True, reason=reason)


class TaskConfig(BaseModel):
    """Settings every task has; each task extends this with its own fields."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    seed: int = 0
    """Seed of the problem generator and of the train/test split."""
    test_fraction: float = Field(0.1, ge=0.0, le=1.0)
    """Share of problems held out for the test split (by a hash of each problem)."""


def seeded_rng(*parts: object) -> random.Random:
    """A generator for one draw, derived by SHA-256 of its parts (Python's `hash` is salted per
    process), so problem `index` of a split is the same in every process and on every machine."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def split_of(key: str, seed: int, test_fraction: float) -> Split:
    """Assign a problem to a split by a hash of its canonical key, so the splits can never overlap."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") / 2**64
    return "test" if bucket < test_fraction else "train"


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")


def check_index(index: int) -> None:
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
