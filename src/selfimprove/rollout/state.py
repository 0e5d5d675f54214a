"""Reasoning states and option-level steps (AlphaLLM, SPECS §5): what every search moves through.

A state is a prompt plus the steps written so far. A step (an *option*) is a run of tokens that ends
when a termination rule fires: a newline (one operation per line in Countdown's step format), a custom
regular expression, or "a line that contains an equation". Steps keep their exact token ids, so a
search never re-tokenises text it has already scored, and the final answer of a state is simply the
text of its steps joined.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

StepRuleKind = Literal["newline", "pattern", "equation"]
_EQUATION = re.compile(r"[^=\n]=[^=\n]")


@dataclass(frozen=True)
class StepRule:
    """When a step ends. `newline`: at the first newline. `pattern`: at the end of the first match of
    `pattern` (a regular expression). `equation`: at the first newline after a line that contains an
    equation (`a op b = c`); lines without one are folded into the step."""

    kind: StepRuleKind = "newline"
    pattern: str = ""
    max_step_tokens: int = 32  # a step that never ends is cut here (a search's per-call budget)

    def __post_init__(self) -> None:
        if self.kind == "pattern":
            if not self.pattern:
                raise ValueError("a 'pattern' step rule needs a non-empty pattern")
            try:
                re.compile(self.pattern)
            except re.error as err:  # a ValueError, so recipe validation names the field
                raise ValueError(f"pattern {self.pattern!r} is not a regular expression: {err}") from None
        if self.max_step_tokens < 1:
            raise ValueError(f"max_step_tokens must be >= 1, got {self.max_step_tokens}")

    @property
    def stop(self) -> tuple[str, ...]:
        """Stop strings for the decoder: a cheap over-approximation; `step_end` decides."""
        return ("\n",) if self.kind in ("newline", "equation") else ()

    def step_end(self, text: str) -> int | None:
        """Length of the first complete step at the start of `text`, or None if no step ends in it."""
        if self.kind == "newline":
            i = text.find("\n")
            return None if i < 0 else i + 1
        if self.kind == "pattern":
            m = re.search(self.pattern, text)
            return None if m is None or m.end() == 0 else m.end()
        start = 0
        while True:
            i = text.find("\n", start)
            if i < 0:
                return None
            if _EQUATION.search(text[start:i]):
                return i + 1
            start = i + 1

    def split(self, text: str) -> list[str]:
        """Split a whole completion into steps (the last one may be unterminated)."""
        steps = []
        while text:
            end = self.step_end(text)
            if end is None:
                steps.append(text)
                break
            steps.append(text[:end])
            text = text[end:]
        return steps


class StepRuleConfig(BaseModel):
    """When a step ends (see `StepRule`): newline, a regular expression, or an equation line."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["newline", "pattern", "equation"] = "newline"
    pattern: str = ""
    max_step_tokens: int = Field(32, ge=1)

    @model_validator(mode="after")
    def _check(self) -> "StepRuleConfig":
        self.rule()  # the rule's own checks (a pattern rule needs a valid, non-empty pattern)
        return self

    def rule(self) -> StepRule:
        return StepRule(self.kind, self.pattern, self.max_step_tokens)


@dataclass(frozen=True)
class State:
    """A node of a search: prompt + steps so far. Immutable and cheap to extend (tuples share nothing
    mutable), so trees, beams and votes can hold many of them.

    `finished` is True once the policy ended the answer (end token) or a length limit was reached; a
    finished state is a leaf whose `answer` a verifier or outcome critic can judge.
    """

    problem_index: int
    prompt_ids: tuple[int, ...]
    steps: tuple[str, ...] = ()
    step_ids: tuple[tuple[int, ...], ...] = ()
    finished: bool = False
    finish_reason: str = ""
    info: dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def depth(self) -> int:
        return len(self.steps)

    @property
    def answer(self) -> str:
        """The completion so far as text (steps joined)."""
        return "".join(self.steps)

    @property
    def completion_ids(self) -> list[int]:
        return [t for ids in self.step_ids for t in ids]

    @property
    def token_ids(self) -> list[int]:
        """Prompt and completion token ids: what a policy continues and a critic scores."""
        return list(self.prompt_ids) + self.completion_ids

    @property
    def num_completion_tokens(self) -> int:
        return sum(len(ids) for ids in self.step_ids)

    def extend(self, step: str, ids: tuple[int, ...] | list[int], *, finished: bool = False, finish_reason: str = "") -> "State":
        return State(self.problem_index, self.prompt_ids, self.steps + (step,), self.step_ids + (tuple(ids),),
                     finished, finish_reason)
