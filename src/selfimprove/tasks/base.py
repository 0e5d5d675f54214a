"""The task contract: problems with a checker.

A `Task` makes `Problem`s deterministically from a seed (train and test never share one) and checks a
model's text with `verify`, which returns a `Verdict` and never raises on model output.
"""

from __future__ import annotations

import hashlib
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field

from selfimprove.registry import Registry

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
    """A verifier's judgement: a score in [0, 1], whether it counts as correct, and why."""

    score: float
    correct: bool
    reason: str

    @classmethod
    def wrong(cls, reason: str, score: float = 0.0) -> "Verdict":
        return cls(score=score, correct=False, reason=reason)

    @classmethod
    def right(cls, reason: str = "correct") -> "Verdict":
        return cls(score=1.0, correct=True, reason=reason)


class TaskConfig(BaseModel):
    """Settings every task has; each task extends this with its own fields."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 0
    test_fraction: float = Field(0.1, ge=0.0, le=1.0)


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


class Task(ABC):
    """Makes problems and verifies answers. Subclasses set `name`, `Config` and implement two methods."""

    name: ClassVar[str]
    Config: ClassVar[type[TaskConfig]] = TaskConfig

    def __init__(self, config: TaskConfig | None = None) -> None:
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, self.Config):
            raise TypeError(f"{self.name} needs a {self.Config.__name__}, got {type(self.config).__name__}")

    @abstractmethod
    def problem(self, split: Split, index: int) -> Problem:
        """The `index`-th problem of a split: deterministic, random access, and never in the other split."""

    @abstractmethod
    def verify(self, problem: Problem, text: str) -> Verdict:
        """Judge the model's text for this problem. Never raises, never evaluates model text as code."""

    def problems(self, split: Split, n: int, start: int = 0) -> list[Problem]:
        return [self.problem(split, i) for i in range(start, start + n)]

    def distinct_problems(self, split: Split, n: int) -> list[Problem]:
        """The first `n` problems of a split with distinct prompts: held-out sets should not repeat.

        Generated tasks draw with replacement, so plain `problems()` may repeat one on small spaces.
        """
        seen: set[str] = set()
        out: list[Problem] = []
        for index in range(50 * n + 100):
            if len(out) == n:
                break
            p = self.problem(split, index)
            if p.prompt not in seen:
                seen.add(p.prompt)
                out.append(p)
        if len(out) < n:
            raise ValueError(f"{self.name}: only {len(out)} distinct {split} problems found, {n} asked for")
        return out

    def answer_key(self, problem: Problem, text: str) -> str | None:
        """What makes two answers the same answer for a vote (`search.vote`); None: nothing to vote for.

        Default: the final answer the text gives (`answers.extract_answer`: `#### N`, `\\boxed{}`,
        "the answer is ...", else the last number); a phrase that is a number (`1,000`, `1000.0 dollars`,
        `$1000`, or one ending in `= 1000`) in one canonical form, any other phrase (`x+1`) with its
        whitespace collapsed. Text with no such answer is keyed by itself, whitespace collapsed. Tasks
        whose answers are not a final phrase (Countdown: every plausible answer ends at the target)
        override this.
        """
        from selfimprove.tasks.answers import MAX_TEXT_CHARS, cut_at_end_marker, extract_answer, format_number, parse_number

        if not isinstance(text, str):
            return None
        phrase = extract_answer(text)
        if phrase is None:
            return " ".join(cut_at_end_marker(text[:MAX_TEXT_CHARS]).split()) or None
        value = parse_number(phrase)
        if value is None and "=" in phrase:
            value = parse_number(phrase.rpartition("=")[2])
        return format_number(value) if value is not None else " ".join(phrase.split()) or None

    def target_text(self, problem: Problem) -> str:
        """What a perfect answer looks like (used for SFT): the demonstration, one step per line."""
        return problem.demonstration_text()

    def describe(self) -> str:
        """A one-paragraph description for `selfimprove tasks`."""
        return (self.__doc__ or self.name).strip().splitlines()[0]


TASKS: Registry[type[Task]] = Registry("task")


def make_task(name: str, params: Mapping[str, Any] | None = None) -> Task:
    """Build a registered task from plain settings, validated by the task's own `Config`."""
    import selfimprove.tasks  # noqa: F401  (registers the built-in tasks)

    cls = TASKS.get(name)
    return cls(cls.Config.model_validate(dict(params or {})))
