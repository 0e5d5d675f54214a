"""Chain: multi-step arithmetic applied left to right, one step per line (the long-horizon task).

A problem is a start value and a list of operations, e.g. the prompt `7; +5 *3 -4:` means
((7+5)*3)-4 (strictly left to right, no precedence). Its demonstration is one line per step
(`7+5=12`, `12*3=36`, `36-4=32`), so prefixes of it are R^3's start states; the last line's result
is the answer. Only that final number is judged (R^3 rewards the outcome), exactly by default, with
the optional partial reward of `NumericConfig` for a wrong but readable number.
"""

from __future__ import annotations

import random
import re
from typing import Sequence

from pydantic import Field, field_validator, model_validator

from selfimprove.tasks.answers import NumericConfig, cut_at_end_marker, judge_numeric
from selfimprove.tasks.base import GeneratedTask, Problem, Split, Verdict, calculator_score, register_task

OPS = "+-*/"
MAX_ANSWER_CHARS = 10_000  # longer texts are rejected before any other work
STEP_TRIES = 50  # (op, operand) draws per step before the whole draw is restarted


class ChainConfig(NumericConfig):
    """Chain settings: steps, operand range, allowed operations and the bound on intermediate values."""

    num_steps: int = Field(4, ge=3, le=12)
    """Operations per problem (the chain's length)."""
    min_number: int = Field(1, ge=1, le=999)
    """Smallest operand."""
    max_number: int = Field(9, ge=1, le=999)
    """Largest operand."""
    max_value: int = Field(999, ge=10, le=10**6)
    """Bound on every intermediate value (problems that exceed it are redrawn)."""
    ops: str = "+-*"
    """Allowed operations, as characters."""
    allow_negative: bool = False
    """Whether intermediate values may be negative."""

    @field_validator("ops")
    @classmethod
    def _check_ops(cls, ops: str) -> str:
        if not ops or any(op not in OPS for op in ops) or len(set(ops)) != len(ops):
            raise ValueError(f"ops must be distinct characters from {OPS!r}, got {ops!r}")
        return ops

    @model_validator(mode="after")
    def _check_ranges(self) -> "ChainConfig":
        if self.min_number > self.max_number:
            raise ValueError(f"min_number ({self.min_number}) > max_number ({self.max_number})")
        if self.max_number > self.max_value:
            raise ValueError(f"max_number ({self.max_number}) > max_value ({self.max_value})")
        return self


def apply(op: str, value: int, operand: int) -> int:
    """One step; division only where it is exact (the generator guarantees that)."""
    if op == "+":
        return value + operand
    if op == "-":
        return value - operand
    if op == "*":
        return value * operand
    if op == "/":
        if operand == 0 or value % operand:
            raise ValueError(f"{value}/{operand} is not exact")
        return value // operand
    raise ValueError(f"unknown op {op!r}")


def step_lines(start: int, steps: Sequence[tuple[str, int]]) -> tuple[str, ...]:
    """The demonstration: one `a op b=c` line per step, each starting from the previous result."""
    lines: list[str] = []
    value = start
    for op, operand in steps:
        result = apply(op, value, operand)
        lines.append(f"{value}{op}{operand}={result}")
        value = result
    return tuple(lines)


def chain_prompt(start: int, steps: Sequence[tuple[str, int]]) -> str:
    """`7; +5 *3 -4:` and a newline: the `;` marks that the ops apply to the running value in order."""
    return f"{start}; {' '.join(f'{op}{operand}' for op, operand in steps)}:\n"


_PROMPT_RE = re.compile(r"([0-9]+); ((?:[-+*/][0-9]+ )*[-+*/][0-9]+):")


def _last_line(text: str) -> str | None:
    """The last line of the answer: text before any end marker, up to the first blank line."""
    last = None
    for line in cut_at_end_marker(text).strip().splitlines():
        if not line.strip():
            break
        last = line.strip()
    return last


@register_task("chain")
class ChainTask(GeneratedTask):
    """Chain: apply a list of + - * (/) operations left to right from a start value, one line per step."""

    Config = ChainConfig
    config: ChainConfig
    max_attempts = 10_000

    def _draw_step(self, rng: random.Random, value: int) -> tuple[str, int, int] | None:
        """One (op, operand, result) keeping results in bounds; *1 and /1 only when nothing else fits."""
        cfg = self.config
        for _ in range(STEP_TRIES):
            op = rng.choice(cfg.ops)
            if op == "/":
                low = max(cfg.min_number, 2)
                divisors = [d for d in range(low, cfg.max_number + 1) if value % d == 0]
                if not divisors:
                    continue
                operand = rng.choice(divisors)
            else:
                operand = rng.randint(cfg.min_number, cfg.max_number)
                if op == "*" and operand == 1 and cfg.max_number > 1:
                    continue
            result = apply(op, value, operand)
            if abs(result) <= cfg.max_value and (cfg.allow_negative or result >= 0):
                return op, operand, result
        return None

    def _draw(self, rng: random.Random) -> tuple[int, list[tuple[str, int]]] | None:
        cfg = self.config
        start = rng.randint(cfg.min_number, cfg.max_number)
        value, steps = start, []
        for _ in range(cfg.num_steps):
            step = self._draw_step(rng, value)
            if step is None:
                return None
            op, operand, value = step
            steps.append((op, operand))
        return start, steps

    def draw(self, rng: random.Random, split: Split, index: int) -> Problem | None:
        """A chain whose prompt (the canonical key) hashes into `split`."""
        drawn = self._draw(rng)
        if drawn is None:
            return None
        start, steps = drawn
        prompt = chain_prompt(start, steps)
        return self._make(split, index, start, steps, prompt) if self.in_split(prompt, split) else None

    def hint(self) -> str:
        cfg = self.config
        return (f"check ops {cfg.ops!r}, the number range {cfg.min_number}..{cfg.max_number}, max_value "
                f"({cfg.max_value}) and test_fraction ({cfg.test_fraction})")

    def _make(self, split: Split | str, index: int | str, start: int, steps: list[tuple[str, int]], prompt: str) -> Problem:
        lines = step_lines(start, steps)
        answer = lines[-1].rpartition("=")[2]
        return Problem(
            id=f"chain-{split}-{index}" if split else str(index),
            prompt=prompt,
            answer=answer,
            demonstration=lines,
            metadata={"start": start, "steps": [[op, n] for op, n in steps], "target": int(answer)},
        )

    def judge(self, problem: Problem, text: str) -> Verdict:
        """Judge the final number only: the result of the last line (after its last `=`)."""
        if len(text) > MAX_ANSWER_CHARS:
            return Verdict.wrong(f"too long ({len(text)} > {MAX_ANSWER_CHARS} characters)")
        last = _last_line(text)
        if last is None:
            return Verdict.wrong("empty answer")
        final = last.rpartition("=")[2] if "=" in last else last
        cfg = self.config
        return judge_numeric(final, float(problem.answer), abs_tol=cfg.abs_tol, rel_tol=cfg.rel_tol, partial=cfg.partial_reward)

    def rewrite(self, problem: Problem, rng: random.Random, name: str) -> Problem | None:
        """Redraw the seed's operands (same operations, same length), keeping every value in bounds."""
        start = rng.randint(self.config.min_number, self.config.max_number)
        value, steps = start, []
        for op, _ in problem.metadata["steps"]:
            drawn = None
            for _ in range(50):
                step = self._draw_step(rng, value)
                if step is not None and step[0] == op:
                    drawn = step
                    break
            if drawn is None:
                return None
            steps.append((op, drawn[1]))
            value = drawn[2]
        prompt = chain_prompt(start, steps)
        return self._make("", name, start, steps, prompt)

    def problem_from_prompt(self, prompt: str, name: str) -> Problem | None:
        """`start; +a *b -c:` with the configured number of steps, operations, operand range and value
        bounds; None otherwise."""
        match = _PROMPT_RE.fullmatch(prompt.strip())
        if match is None:
            return None
        cfg = self.config
        start = int(match[1])
        steps = [(m[0], int(m[1:])) for m in match[2].split()]
        if len(steps) != cfg.num_steps or not cfg.min_number <= start <= cfg.max_number:
            return None
        value = start
        for op, operand in steps:
            if op not in cfg.ops or not cfg.min_number <= operand <= cfg.max_number:
                return None
            try:
                value = apply(op, value, operand)
            except ValueError:
                return None
            if abs(value) > cfg.max_value or (value < 0 and not cfg.allow_negative):
                return None
        return self._make("", name, start, steps, chain_prompt(start, steps))

    def tool_score(self, prompt: str, text: str, finished: bool) -> float | None:
        """A calculator on the equations the text writes (0 if one is wrong, else undecided): it checks
        the arithmetic, not the reasoning (a partial gold-free check)."""
        return calculator_score(text)

    def describe(self) -> str:
        cfg = self.config
        ops = " ".join(cfg.ops)
        sign = "any sign" if cfg.allow_negative else "never negative"
        return (
            f"Chain: apply {cfg.num_steps} operations ({ops}) with operands in "
            f"{cfg.min_number}..{cfg.max_number} left to right from a start value, written one step per "
            f"line (a op b=c); intermediate values stay within {cfg.max_value} in size ({sign}), "
            f"division is exact. Only the last line's result is judged"
            + (f", with partial reward {cfg.partial_reward} for a wrong number." if cfg.partial_reward else ".")
        )
