"""The task contract: problems with a checker.

A `Task` makes `Problem`s deterministically from a seed (train and test never share one) and checks a
model's text with `verify`, which returns a `Verdict` and never raises on model output. What every
task needs is written once here:
- `problem(split, index)` checks the split and the index, then calls the task's `make_problem`;
- `verify(problem, text)` refuses non-text, then calls the task's `judge` behind a guard that turns a
  verifier bug into a logged `Verdict.wrong("verifier error")` (a bug must not stop a training run);
- `GeneratedTask` draws candidates from a seeded generator until one falls in the split (rejection
  sampling by a hash of the problem's key), and says clearly when a configuration yields none;
- `SplitPositions` serves a finite dataset's rows per split, wrapping around, with a clear error for
  an empty split;
- `register_task(name)` registers a class and sets its `name` (written once).
A task may still override `problem` or `verify` itself (a user's own task, a test's toy task).
"""

from __future__ import annotations

import logging
import random
from abc import ABC
from typing import Callable, ClassVar, Mapping, Sequence, TypeVar

from selfimprove.registry import Registry
from selfimprove.tasks.arith import check_equations
from selfimprove.tasks.answers import MAX_TEXT_CHARS, cut_at_end_marker, extract_answer, format_number, parse_number
from selfimprove.tasks.problem import (
    SPLITS,
    Problem,
    Split,
    TaskConfig,
    Verdict,
    check_index,
    check_split,
    seeded_rng,
    split_of,
)

__all__ = [
    "SPLITS",
    "TASKS",
    "UNDECIDED",
    "GeneratedTask",
    "Problem",
    "Split",
    "SplitPositions",
    "Task",
    "TaskConfig",
    "Verdict",
    "register_task",
    "seeded_rng",
    "split_of",
]

logger = logging.getLogger(__name__)

UNDECIDED = 0.5  # a gold-free check that can neither confirm nor refute an answer


class Task(ABC):
    """Makes problems and verifies answers. Subclasses set `Config` and implement `make_problem` and
    `judge` (or override `problem` and `verify` themselves)."""

    name: ClassVar[str]
    Config: ClassVar[type[TaskConfig]] = TaskConfig
    # Judged by a number read leniently from free text (`#### N`, `\boxed{}`, "the answer is", the last
    # number): evaluation then also reports strict extraction (`strict_verify`).
    numeric_answers: ClassVar[bool] = False

    def __init__(self, config: TaskConfig | None = None) -> None:
        cls = type(self)
        if cls.problem is Task.problem and cls.make_problem is Task.make_problem:
            raise TypeError(f"{cls.__name__} must implement make_problem (or problem)")
        if cls.verify is Task.verify and cls.judge is Task.judge:
            raise TypeError(f"{cls.__name__} must implement judge (or verify)")
        self.config = config if config is not None else self.Config()
        if not isinstance(self.config, self.Config):
            raise TypeError(f"{self.name} needs a {self.Config.__name__}, got {type(self.config).__name__}")

    # ------------------------------------------------------------------ problems
    def problem(self, split: Split, index: int) -> Problem:
        """The `index`-th problem of a split: deterministic, random access, and never in the other split."""
        check_split(split)
        check_index(index)
        return self.make_problem(split, index)

    def make_problem(self, split: Split, index: int) -> Problem:
        """`problem` after its checks (a known split, a non-negative index)."""
        raise NotImplementedError

    def problems(self, split: Split, n: int, start: int = 0) -> list[Problem]:
        return [self.problem(split, i) for i in range(start, start + n)]

    def size(self, split: Split) -> int | None:
        """How many distinct problems a split holds (finite data), or None for an unbounded generator."""
        return None

    def distinct_problems(self, split: Split, n: int, start: int = 0) -> list[Problem]:
        """The first `n` problems of a split from index `start` with distinct prompts: held-out sets should
        not repeat. Generated tasks draw with replacement, so plain `problems()` may repeat one on small spaces.
        """
        seen: set[str] = set()
        out: list[Problem] = []
        size = self.size(split)
        stop = start + 50 * n + 100 if size is None else min(size, start + 50 * n + 100)
        for index in range(start, stop):
            if len(out) == n:
                break
            p = self.problem(split, index)
            if p.prompt not in seen:
                seen.add(p.prompt)
                out.append(p)
        if len(out) < n:
            where = f" from index {start}" if start else ""
            raise ValueError(f"{self.name}: only {len(out)} distinct {split} problems found{where}, {n} asked for")
        return out

    # ------------------------------------------------------------------ verdicts
    def verify(self, problem: Problem, text: str) -> Verdict:
        """Judge the model's text for this problem. Never raises, never evaluates model text as code."""
        if not isinstance(text, str):
            return Verdict.wrong("not text")
        try:
            return self.judge(problem, text)
        except Exception:  # a verifier bug must not stop a training run; make it loud instead
            logger.exception("%s verifier failed on %r", self.name, text[:200])
            return Verdict.wrong("verifier error")

    def judge(self, problem: Problem, text: str) -> Verdict:
        """`verify` for a text (the guard around it catches what this raises)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ imagination (AlphaLLM)
    def key(self, problem: Problem) -> str:
        """What makes two problems the same problem (dedup, and the split: `split_of(key)`)."""
        return problem.prompt

    def rewrite(self, problem: Problem, rng: random.Random, name: str) -> Problem | None:
        """A new problem made from a seed (keep it valid and solvable), named `name`; None when this draw
        gave none. Tasks that cannot rewrite raise `NotImplementedError`."""
        raise NotImplementedError(f"task {self.name!r} has no rewrite of seed problems (imagine.kind: rewrite)")

    def problem_from_prompt(self, prompt: str, name: str) -> Problem | None:
        """A model-written prompt as a problem, validated (well-formed, in range, solvable), or None when
        it is not valid. Tasks that cannot validate a prompt raise `NotImplementedError`."""
        raise NotImplementedError(f"task {self.name!r} cannot validate model-written problems (imagine.kind: policy)")

    def in_test_split(self, problem: Problem) -> bool:
        """Whether a problem (an imagined one too) would belong to the test split."""
        return split_of(self.key(problem), self.config.seed, self.config.test_fraction) == "test"

    def tool_score(self, prompt: str, text: str, finished: bool) -> float | None:
        """A gold-free check of an answer (the paper's tool-using ORM): what the prompt and the text alone
        decide, as a probability that the answer is (or will end) right: 1 or 0 where the prompt decides
        it, 0 for a step the tools prove wrong, `UNDECIDED` (0.5) where they cannot tell. It receives the
        prompt text only, never the problem, so it cannot read a gold answer. None: this task has none.
        """
        return None

    def has_numeric_answers(self) -> bool:
        return self.numeric_answers

    def strict_verify(self, problem: Problem, text: str) -> Verdict | None:
        """The verdict when only an explicitly marked final answer counts (`#### N` or `\\boxed{N}`), for
        tasks judged by a number read from free text; None for other tasks. The marked answer is judged
        by the task's own verifier, so strict correct implies (lenient) correct."""
        if not self.has_numeric_answers():
            return None
        phrase = extract_answer(text, strict=True) if isinstance(text, str) else None
        if phrase is None:
            return Verdict.wrong("no marked final answer (#### N or \\boxed{N})")
        return self.verify(problem, f"#### {phrase}")

    def answer_key(self, problem: Problem, text: str) -> str | None:
        """What makes two answers the same answer for a vote (`search.vote`); None: nothing to vote for.

        Default: the final answer the text gives (`answers.extract_answer`: `#### N`, `\\boxed{}`,
        "the answer is ...", else the last number); a phrase that is a number (`1,000`, `1000.0 dollars`,
        `$1000`, or one ending in `= 1000`) in one canonical form, any other phrase (`x+1`) with its
        whitespace collapsed. Text with no such answer is keyed by itself, whitespace collapsed. Tasks
        whose answers are not a final phrase (Countdown: every plausible answer ends at the target)
        override this.
        """
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


class GeneratedTask(Task):
    """A task whose problems are drawn from a seeded generator: draw `attempt` 0, 1, ... of (split,
    index) until `draw` returns a problem of the split (usually: its key hashes into it), or give up
    after `max_attempts` with `hint()` in the message."""

    max_attempts: ClassVar[int] = 1000

    def make_problem(self, split: Split, index: int) -> Problem:
        cfg = self.config
        if (split == "test" and cfg.test_fraction == 0.0) or (split == "train" and cfg.test_fraction == 1.0):
            raise ValueError(f"the {split} split is empty with test_fraction={cfg.test_fraction}")
        for attempt in range(self.max_attempts):
            problem = self.draw(seeded_rng(self.name, cfg.seed, split, index, attempt), split, index)
            if problem is not None:
                return problem
        raise ValueError(f"no {self.name} problem for split {split!r} after {self.max_attempts} draws: {self.hint()}")

    def draw(self, rng: random.Random, split: Split, index: int) -> Problem | None:
        """One candidate from `rng`: the problem, or None when it is not of `split` (or unusable)."""
        raise NotImplementedError

    def in_split(self, key: str, split: Split) -> bool:
        """Whether a problem with this canonical key belongs to `split` (a hash of the key)."""
        return split_of(key, self.config.seed, self.config.test_fraction) == split

    def hint(self) -> str:
        return f"check the settings and test_fraction ({self.config.test_fraction})"


class SplitPositions:
    """Which rows of a finite dataset each split holds; `index` wraps around the split's rows, so an
    RL stream never runs out. `source` names the data in errors."""

    def __init__(self, task: str, source: str, positions: Mapping[Split, Sequence[int]], split_by: str) -> None:
        self.task, self.source, self.split_by = task, source, split_by
        self.positions: dict[Split, list[int]] = {s: list(positions.get(s, [])) for s in SPLITS}

    @classmethod
    def by_hash(cls, task: str, source: str, keys: Sequence[str], seed: int, test_fraction: float, *,
                key_name: str = "problem") -> "SplitPositions":
        """Rows split by a hash of each row's key (the usual case); `key_name` says what the key is."""
        positions: dict[Split, list[int]] = {s: [] for s in SPLITS}
        for position, key in enumerate(keys):
            positions[split_of(key, seed, test_fraction)].append(position)
        return cls(task, source, positions, f"a hash of the {key_name} (test fraction {test_fraction})")

    def size(self, split: Split) -> int:
        return len(self.positions[split])

    def locate(self, split: Split, index: int) -> tuple[int, int]:
        """(row position, offset within the split) of problem `index` of `split`."""
        rows = self.positions[split]
        if not rows:
            raise ValueError(f"{self.task}: no {split} problems in {self.source} (split by {self.split_by})")
        offset = index % len(rows)
        return rows[offset], offset


TASKS: Registry[type[Task]] = Registry("task")
T = TypeVar("T", bound=type[Task])


def calculator_score(text: str) -> float:
    """The calculator check shared by tasks whose answers write equations: 0 if any written equation is
    wrong, else `UNDECIDED` (right arithmetic says nothing about the right reasoning)."""
    _, wrong = check_equations(text)
    return 0.0 if wrong else UNDECIDED


def register_task(name: str) -> Callable[[T], T]:
    """Class decorator: register a task under `name` and set its `name` (so it is written once)."""

    def wrap(cls: T) -> T:
        cls.name = name
        return TASKS.register(name)(cls)

    return wrap
