"""Countdown: reach a target by combining the given numbers with + - * /, each number used once.

Problems are generated deterministically with random access, solved exactly (so every problem has a
demonstration), and answers are checked by our own safe evaluator (`selfimprove.tasks.arith`).
Two answer formats: one expression (`(20-9)*2`) or one operation per line (`20-9=11`, `11*2=22`).
"""

from __future__ import annotations

import random
import re
from collections import Counter
from fractions import Fraction
from typing import Sequence

from pydantic import Field, model_validator

from selfimprove.tasks.arith import (
    ArithError,
    Node,
    Num,
    apply_op,
    evaluate,
    literals,
    parse,
)
from selfimprove.tasks.base import UNDECIDED, GeneratedTask, Problem, Split, TaskConfig, Verdict, register_task
from selfimprove.tasks.answers import cut_at_end_marker
from selfimprove.tasks.countdown_solver import (  # noqa: F401  (re-exported: the task's solver)
    MAX_VALUE,
    CountdownFormat,
    demonstration,
    reachable_targets,
    solution_steps,
    solve,
)

MAX_ANSWER_CHARS = 2000  # longer texts are rejected before any other work
STEP_SLACK = 2  # extra lines tolerated (and then judged) in the steps format

_INT = r"(0|[1-9][0-9]{0,12})"  # ASCII digits only, no leading zeros, bounded length
_STEP_RE = re.compile(rf"{_INT}[ \t]*([-+*/])[ \t]*{_INT}[ \t]*=[ \t]*{_INT}")
_CLAIM_RE = re.compile(_INT)


class CountdownConfig(TaskConfig):
    """Countdown settings (SPECS §7 defaults: 3 numbers in 1..20, targets 10..50)."""

    num_numbers: int = Field(3, ge=2, le=6)
    """How many numbers each problem gives."""
    min_number: int = Field(1, ge=1, le=9999)
    """Smallest number drawn."""
    max_number: int = Field(20, ge=1, le=9999)
    """Largest number drawn."""
    min_target: int = Field(10, ge=0, lt=MAX_VALUE)
    """Smallest target."""
    max_target: int = Field(50, ge=0, lt=MAX_VALUE)
    """Largest target."""
    format: CountdownFormat = "expression"
    """Answer format: one expression `(20-9)*2`, or `steps`, one `a op b=c` per line."""

    @model_validator(mode="after")
    def _check_ranges(self) -> "CountdownConfig":
        if self.min_number > self.max_number:
            raise ValueError(f"min_number ({self.min_number}) > max_number ({self.max_number})")
        if self.min_target > self.max_target:
            raise ValueError(f"min_target ({self.min_target}) > max_target ({self.max_target})")
        if not 0.0 <= self.test_fraction <= 1.0:
            raise ValueError(f"test_fraction must be in [0, 1], got {self.test_fraction}")
        return self


# ---------------------------------------------------------------------------------------------
# Verification.


def _answer_lines(text: str) -> list[str]:
    """The answer part: text before any end marker, stripped, up to the first blank line."""
    lines: list[str] = []
    for line in cut_at_end_marker(text).strip().splitlines():
        line = line.strip()
        if not line:
            break
        lines.append(line)
    return lines


def _usage_problem(used: Sequence[int], numbers: Sequence[int]) -> str | None:
    """Why the literals used are not exactly the available numbers, or None if they are."""
    have, got = Counter(numbers), Counter(used)
    for value in dict.fromkeys(used):
        if got[value] > have[value]:
            if have[value] == 0:
                return f"uses {value} which is not available"
            if have[value] == 1 and got[value] == 2:
                return f"number {value} used twice"
            return f"number {value} used {got[value]} times (available {have[value]})"
    for value in dict.fromkeys(numbers):
        if got[value] < have[value]:
            if got[value] == 0:
                return f"number {value} not used"
            return f"number {value} used {got[value]} of {have[value]} times"
    return None


def _arith_reason(error: ArithError) -> str:
    return f"unparsable: {error}" if error.kind == "syntax" else str(error)


def _operations(node: Node) -> tuple[list[tuple[str, Fraction, Fraction, Fraction]], Fraction]:
    """Every operation of an expression tree as (op, a, b, result), children first and left to right,
    and the tree's value. Raises ZeroDivisionError on a division by zero."""
    ops: list[tuple[str, Fraction, Fraction, Fraction]] = []

    def walk(n: Node) -> Fraction:
        if isinstance(n, Num):
            return Fraction(n.value)
        a, b = walk(n.left), walk(n.right)
        value = apply_op(n.op, a, b)
        ops.append((n.op, a, b, value))
        return value

    return ops, walk(node)


def _intermediate_problem(node: Node) -> str | None:
    """The first operation (children first, left to right) whose result is negative or not whole, or
    None. One rule for both formats: every intermediate result is a whole number >= 0, as a step line
    (`a op b=c`, c a whole number) must be, so `7-13+20` and `12/19*19` are refused in both."""
    for op, a, b, value in _operations(node)[0]:
        if value < 0 or value.denominator != 1:
            shown = f"{a}{op}{b} = {value} is negative" if value < 0 else f"{a}{op}{b} = {value} is not a whole number"
            return f"intermediate result {shown} (every step must give a whole number >= 0)"
    return None


def _judge_expression(line: str, numbers: Sequence[int], target: int) -> Verdict:
    expr, has_claim, claim = line.partition("=")
    if has_claim and not _CLAIM_RE.fullmatch(claim.strip()):
        return Verdict.wrong("unparsable: the result after '=' is not a whole number")
    try:
        node = parse(expr)
        value = evaluate(node)
    except ArithError as error:
        return Verdict.wrong(_arith_reason(error))
    usage = _usage_problem(literals(node), numbers)
    if usage is not None:
        return Verdict.wrong(usage)
    intermediate = _intermediate_problem(node)
    if intermediate is not None:
        return Verdict.wrong(intermediate)
    if has_claim and value != int(claim.strip()):
        return Verdict.wrong(f"claims {claim.strip()} but the expression gives {value}")
    if value != target:
        return Verdict.wrong(f"value {value} != target {target}")
    return Verdict.right()


def _walk_steps(lines: list[str], numbers: Sequence[int]) -> tuple[Counter[int], str | None]:
    """Apply the step lines to the numbers: (the numbers left, the first problem or None). Every line must
    be `a op b=c` with right arithmetic on numbers still available."""
    max_lines = len(numbers) - 1 + STEP_SLACK
    pool = Counter(numbers)
    if len(lines) > max_lines:
        return pool, f"too many lines ({len(lines)} > {max_lines})"
    for k, line in enumerate(lines, start=1):
        match = _STEP_RE.fullmatch(line)
        if match is None:
            return pool, f"line {k} unparsable: expected 'a op b=c'"
        a, op, b, c = int(match[1]), match[2], int(match[3]), int(match[4])
        for operand in (a, b):
            if pool[operand] <= 0:
                return pool, f"line {k}: {operand} is not available"
            pool[operand] -= 1
        if op == "/" and b == 0:
            return pool, f"line {k}: division by zero"
        value = apply_op(op, a, b)
        if value != c:
            return pool, f"line {k}: {a}{op}{b} is {value}, not {c}"
        pool[c] += 1
    return pool, None


def _judge_steps(lines: list[str], numbers: Sequence[int], target: int) -> Verdict:
    pool, problem = _walk_steps(lines, numbers)
    if problem is not None:
        return Verdict.wrong(problem)
    left = sorted(pool.elements())
    if left == [target]:
        return Verdict.right()
    if target in left:
        left.remove(target)
        return Verdict.wrong(f"number{'s' if len(left) > 1 else ''} {', '.join(map(str, left))} not used")
    if len(left) == 1:
        return Verdict.wrong(f"value {left[0]} != target {target}")
    return Verdict.wrong(f"target {target} not reached (left: {', '.join(map(str, left))})")


def judge_answer(text: object, numbers: Sequence[int], target: int, fmt: CountdownFormat) -> Verdict:
    """Check an answer; every kind of garbage becomes `Verdict.wrong` with a short specific reason."""
    if not isinstance(text, str):
        return Verdict.wrong("not text")
    if len(text) > MAX_ANSWER_CHARS:
        return Verdict.wrong(f"too long ({len(text)} > {MAX_ANSWER_CHARS} characters)")
    lines = _answer_lines(text)
    if not lines:
        return Verdict.wrong("empty answer")
    if fmt == "steps":
        return _judge_steps(lines, numbers, target)
    return _judge_expression(lines[0], numbers, target)


# ---------------------------------------------------------------------------------------------
# Answer keys for votes: answers that reach the target all end at the same value, so they are told
# apart by the computation they write down.


def _operation(op: str, a: Fraction, b: Fraction, value: Fraction) -> str:
    """`a op b=c`, operands of the commutative + and * in ascending order."""
    if op in "+*" and b < a:
        a, b = b, a
    return f"{a}{op}{b}={value}"


def _expression_operations(line: str) -> list[str] | None:
    """The operations of one expression (a claimed `= result` dropped), one per inner node; None when
    it does not parse or evaluate. A lone number is its own single 'operation'."""
    try:
        ops, value = _operations(parse(line.partition("=")[0]))
    except (ArithError, ZeroDivisionError):
        return None
    return [_operation(*op) for op in ops] or [str(value)]


def answer_operations(text: str, fmt: CountdownFormat) -> list[str]:
    """The normalised operations an answer writes, sorted (see `CountdownTask.answer_key`)."""
    lines = _answer_lines(text[:MAX_ANSWER_CHARS])
    if fmt == "expression":
        parsed = _expression_operations(lines[0]) if lines else None
        return sorted(parsed) if parsed is not None else ["".join(line.split()) for line in lines[:1]]
    ops: list[str] = []
    for line in lines:
        step = _STEP_RE.fullmatch(line)
        if step is None:
            ops.append("".join(line.split()))
        else:
            a, op, b, c = Fraction(int(step[1])), step[2], Fraction(int(step[3])), Fraction(int(step[4]))
            ops.append(_operation(op, a, b, c))
    return sorted(ops)


def operations_in_order(text: str, fmt: CountdownFormat) -> list[str]:
    """The operations an answer computes, `a op b` in the order it computes them (children first for
    an expression, line by line for steps): what a calculator would be asked (tool demonstrations)."""
    lines = _answer_lines(text[:MAX_ANSWER_CHARS])
    if fmt == "expression":
        try:
            ops, _ = _operations(parse(lines[0].partition("=")[0])) if lines else ([], None)
        except (ArithError, ZeroDivisionError):
            return []
        return [f"{a}{op}{b}" for op, a, b, _ in ops]
    return [f"{m[1]}{m[2]}{m[3]}" for line in lines if (m := _STEP_RE.fullmatch(line))]


# ---------------------------------------------------------------------------------------------
# The task.


_PROMPT_RE = re.compile(r"([0-9]+(?: [0-9]+)*) -> ([0-9]+):\n?")


def parse_prompt(prompt: str) -> tuple[list[int], int] | None:
    """(numbers, target) of a Countdown prompt (`9 7 20 -> 22:`), or None when it is not one."""
    match = _PROMPT_RE.fullmatch(prompt) if isinstance(prompt, str) and len(prompt) <= 200 else None
    if match is None:
        return None
    return [int(n) for n in match[1].split()], int(match[2])


def problem_key(numbers: Sequence[int], target: int) -> str:
    """What makes two problems the same: the multiset of numbers and the target."""
    return ",".join(map(str, sorted(numbers))) + f"->{target}"


@register_task("countdown")
class CountdownTask(GeneratedTask):
    """Countdown: combine the given numbers with + - * / (each exactly once) to reach the target."""

    Config = CountdownConfig
    config: CountdownConfig

    def draw(self, rng: random.Random, split: Split, index: int) -> Problem | None:
        """Draw numbers, then a target among the reachable ones in range whose key belongs to `split`.

        Filtering targets by split (instead of drawing one and retrying) keeps train and test disjoint
        by key while solving only once per problem in the usual case.
        """
        cfg = self.config
        numbers = [rng.randint(cfg.min_number, cfg.max_number) for _ in range(cfg.num_numbers)]
        targets = [
            t
            for t in sorted(reachable_targets(numbers))
            if cfg.min_target <= t <= cfg.max_target and self.in_split(problem_key(numbers, t), split)
        ]
        return self._make(split, index, numbers, rng.choice(targets)) if targets else None

    def hint(self) -> str:
        return f"check the number and target ranges and test_fraction ({self.config.test_fraction})"

    def _make(self, split: Split | str, index: int | str, numbers: list[int], target: int) -> Problem:
        cfg = self.config
        node = solve(numbers, target)
        assert node is not None, "targets are drawn from the reachable set"
        prompt = f"{' '.join(map(str, numbers))} -> {target}:"
        if cfg.format == "steps":
            prompt += "\n"
        return Problem(
            id=f"countdown-{split}-{index}" if split else str(index),
            prompt=prompt,
            answer=str(target),
            demonstration=demonstration(node, cfg.format),
            metadata={"numbers": list(numbers), "target": target, "format": cfg.format},
        )

    def judge(self, problem: Problem, text: str) -> Verdict:
        """Judge the model's answer exactly; never evaluates it as code."""
        numbers = [int(n) for n in problem.metadata["numbers"]]
        fmt: CountdownFormat = problem.metadata.get("format", "expression")
        return judge_answer(text, numbers, int(problem.metadata["target"]), fmt)

    # ------------------------------------------------------------------ imagination
    def key(self, problem: Problem) -> str:
        return problem_key(problem.metadata["numbers"], int(problem.metadata["target"]))

    def _valid(self, numbers: Sequence[int], target: int) -> bool:
        cfg = self.config
        return (len(numbers) == cfg.num_numbers and all(cfg.min_number <= n <= cfg.max_number for n in numbers)
                and cfg.min_target <= target <= cfg.max_target and target in reachable_targets(numbers))

    def rewrite(self, problem: Problem, rng: random.Random, name: str) -> Problem | None:
        """Change one number of the seed (in range), then pick a reachable target in range: always valid."""
        cfg = self.config
        numbers = list(problem.metadata["numbers"])
        numbers[rng.randrange(len(numbers))] = rng.randint(cfg.min_number, cfg.max_number)
        targets = sorted(t for t in reachable_targets(numbers) if cfg.min_target <= t <= cfg.max_target)
        return self._make("", name, numbers, rng.choice(targets)) if targets else None

    def problem_from_prompt(self, prompt: str, name: str) -> Problem | None:
        """`a b c -> T:` with the configured count of numbers in range, the target in range and
        reachable (checked by the exact solver); None otherwise."""
        parsed = parse_prompt(prompt.strip() + ":" if prompt.strip() and not prompt.strip().endswith(":") else prompt.strip())
        if parsed is None or not self._valid(*parsed):
            return None
        return self._make("", name, *parsed)

    def tool_score(self, prompt: str, text: str, finished: bool) -> float | None:
        """The prompt holds the numbers and the target, so a calculator decides a finished answer (1 or
        0) and refutes a partial one whose lines are wrong or use numbers it does not have (0); a
        consistent partial answer is undecided. Reads the prompt, never the gold answer."""
        parsed = parse_prompt(prompt)
        if parsed is None:
            return UNDECIDED
        numbers, target = parsed
        fmt = self.config.format
        if finished:
            return 1.0 if judge_answer(text, numbers, target, fmt).correct else 0.0
        if fmt != "steps" or len(text) > MAX_ANSWER_CHARS:
            return UNDECIDED
        lines = [line for line in _answer_lines(text) if line.strip()]
        return 0.0 if _walk_steps(lines, numbers)[1] is not None else UNDECIDED

    def answer_key(self, problem: Problem, text: str) -> str | None:
        """Countdown answers vote by their computation, not their final value (every plausible answer
        ends at the target): the set of operations written, each `a op b=c` with the operands of + and
        * in ascending order, sorted, so the same operations in another order (`1+2=3`, `4+5=9` or the
        other way round) are one answer, and an expression (`(20-9)*2`) keys like its steps format
        (`20-9=11`, `11*2=22`). `(a+b)+c` and `a+(b+c)` stay different answers. A line that does not
        parse keys by its text without whitespace, so identical garbage still votes together. An
        expression answer is read from its first line only, as the verifier does. No lines -> None.
        """
        if not isinstance(text, str):
            return None
        ops = answer_operations(text, problem.metadata.get("format", "expression"))
        return " ; ".join(ops) if ops else None

    def describe(self) -> str:
        cfg = self.config
        shape = "one expression" if cfg.format == "expression" else "one operation per line (a op b=c)"
        return (
            f"Countdown: combine {cfg.num_numbers} numbers drawn from {cfg.min_number}..{cfg.max_number} "
            f"with + - * / (each number exactly once; every intermediate result a whole number >= 0, in both "
            f"formats) to reach a "
            f"target in {cfg.min_target}..{cfg.max_target}. The answer is {shape}, checked exactly by a "
            f"safe evaluator; every problem has a demonstration from an exact solver."
        )
