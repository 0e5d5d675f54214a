"""Countdown's exact solver: every value the numbers can make (each used once, integer intermediates, none
negative) and a canonical expression for each, so every problem has a demonstration in either format."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Literal, Mapping, Sequence

from selfimprove.tasks.arith import BinOp, Node, Num, apply_op, format_expr, needs_parens

CountdownFormat = Literal["expression", "steps"]

MAX_VALUE = 10**6  # the solver's intermediate values stay below this (at most 6 digits)

__all__ = ["MAX_VALUE", "CountdownFormat", "demonstration", "reachable_targets", "solution_steps", "solve"]




@dataclass(frozen=True, slots=True)
class _Entry:
    cost: tuple[int, int]  # (pointless operations like *1 or +0, parentheses when printed)
    node: Node


def _moves(hi: int, lo: int) -> list[tuple[str, int, bool]]:
    """(op, result, pointless) for combining hi >= lo, in a fixed order; results are integers >= 0."""
    moves = [("+", hi + lo, lo == 0), ("-", hi - lo, lo == 0), ("*", hi * lo, lo <= 1)]
    if lo and hi % lo == 0:
        moves.append(("/", hi // lo, lo == 1))
    return moves


def _combine(left: Mapping[int, _Entry], right: Mapping[int, _Entry], best: dict[int, _Entry]) -> None:
    """Offer every way of joining a value of `left` with one of `right`; keep the cheapest per value."""
    for va, ea in left.items():
        for vb, eb in right.items():
            (hi, ehi), (lo, elo) = ((va, ea), (vb, eb)) if va >= vb else ((vb, eb), (va, ea))
            base_pointless = ehi.cost[0] + elo.cost[0]
            base_parens = ehi.cost[1] + elo.cost[1]
            for op, value, pointless in _moves(hi, lo):
                if value >= MAX_VALUE:
                    continue
                parens = (
                    base_parens
                    + needs_parens(op, ehi.node, "left")
                    + needs_parens(op, elo.node, "right")
                )
                cost = (base_pointless + pointless, parens)
                current = best.get(value)
                if current is None or cost < current.cost:
                    best[value] = _Entry(cost, BinOp(op, ehi.node, elo.node))


@lru_cache(maxsize=1024)  # bounds memory: a 6-number table holds ~10^4 entries
def _table(numbers: tuple[int, ...]) -> Mapping[int, _Entry]:
    """Every value reachable using each of the (sorted) numbers exactly once, with its best expression.

    Dynamic programming over splits of the multiset into two parts: any sequence of pairwise
    combinations (the steps format) is a binary expression tree, and vice versa. Pure and memoised
    on the sorted multiset, so a problem's demonstration never depends on the order it was drawn in.
    """
    if len(numbers) == 1:
        return MappingProxyType({numbers[0]: _Entry((0, 0), Num(numbers[0]))})
    best: dict[int, _Entry] = {}
    seen: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
    last = len(numbers) - 1  # the last number always goes right, so each split is seen once
    for mask in range(1, 1 << last):
        part_a = tuple(n for i, n in enumerate(numbers) if mask >> i & 1)
        part_b = tuple(n for i, n in enumerate(numbers) if not mask >> i & 1)
        pair = (part_a, part_b) if part_a <= part_b else (part_b, part_a)
        if pair in seen:
            continue
        seen.add(pair)
        _combine(_table(pair[0]), _table(pair[1]), best)
    return MappingProxyType(best)


def _canonical(numbers: Sequence[int]) -> tuple[int, ...]:
    if not numbers:
        raise ValueError("need at least one number")
    if any(n < 0 or n >= MAX_VALUE for n in numbers):
        raise ValueError(f"numbers must be in [0, {MAX_VALUE}), got {list(numbers)}")
    return tuple(sorted(int(n) for n in numbers))


def reachable_targets(numbers: Sequence[int]) -> frozenset[int]:
    """All values that use every number exactly once (integer intermediates, none negative)."""
    return frozenset(_table(_canonical(numbers)))


def solve(numbers: Sequence[int], target: int) -> Node | None:
    """The canonical solution (fewest pointless operations, then fewest parentheses), or None."""
    entry = _table(_canonical(numbers)).get(target)
    return None if entry is None else entry.node


def solution_steps(node: Node) -> tuple[str, ...]:
    """The solution as one `a op b=c` line per operation, children first (the steps format)."""
    lines: list[str] = []

    def walk(n: Node) -> int:
        if isinstance(n, Num):
            return n.value
        a, b = walk(n.left), walk(n.right)
        value = apply_op(n.op, a, b)
        if value.denominator != 1 or value < 0:
            raise ValueError(f"{a}{n.op}{b} is not a non-negative integer")
        lines.append(f"{a}{n.op}{b}={value.numerator}")
        return value.numerator

    walk(node)
    return tuple(lines)


def demonstration(node: Node, fmt: CountdownFormat) -> tuple[str, ...]:
    """The lines a perfect answer consists of, in the given format."""
    return (format_expr(node),) if fmt == "expression" else solution_steps(node)
