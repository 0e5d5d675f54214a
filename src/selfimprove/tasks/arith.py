"""A small, safe evaluator for integer arithmetic written by a model.

Model output is untrusted, so it is never given to `eval` or `ast`: a hand-written tokenizer and a
recursive-descent parser accept only non-negative integer literals, binary ``+ - * /``, parentheses and
spaces. Every size (text length, nesting depth, number of literals and operators, digits per literal,
magnitude of intermediate values) is bounded while parsing or evaluating, so no input can make the
evaluator slow, recurse deeply or build huge numbers. Values are exact `Fraction`s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, Union

MAX_CHARS = 256
MAX_DEPTH = 16
MAX_LITERALS = 32
MAX_OPERATORS = 32
MAX_DIGITS = 6
MAX_ABS = 10**12  # numerators and denominators of every intermediate value stay below this

OPERATORS = "+-*/"
PRECEDENCE: dict[str, int] = {"+": 1, "-": 1, "*": 2, "/": 2}
_ATOM_PRECEDENCE = 3
_DIGITS = frozenset("0123456789")  # ASCII only: str.isdigit() also accepts '²' and other scripts
_SPACES = frozenset(" \t")

ErrorKind = Literal["syntax", "limit", "math"]


class ArithError(ValueError):
    """Why a text is not an acceptable expression; `kind` tells syntax errors from limits and maths."""

    def __init__(self, message: str, kind: ErrorKind = "syntax") -> None:
        super().__init__(message)
        self.kind: ErrorKind = kind


@dataclass(frozen=True, slots=True)
class Num:
    """An integer literal."""

    value: int


@dataclass(frozen=True, slots=True)
class BinOp:
    """A binary operation `left op right`."""

    op: str
    left: "Node"
    right: "Node"


Node = Union[Num, BinOp]


@dataclass(frozen=True, slots=True)
class _Token:
    kind: Literal["num", "op", "(", ")"]
    text: str
    pos: int


def _tokenize(text: str) -> list[_Token]:
    """Split into tokens, enforcing the length, depth, digit and count limits as early as possible."""
    if len(text) > MAX_CHARS:
        raise ArithError(f"too long ({len(text)} > {MAX_CHARS} characters)", "limit")
    tokens: list[_Token] = []
    depth = literals = operators = 0
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _SPACES:
            i += 1
        elif ch in _DIGITS:
            j = i
            while j < n and text[j] in _DIGITS:
                j += 1
                if j - i > MAX_DIGITS:
                    raise ArithError(f"number too long (more than {MAX_DIGITS} digits)", "limit")
            if ch == "0" and j - i > 1:
                raise ArithError(f"number with a leading zero at position {i}")
            literals += 1
            if literals > MAX_LITERALS:
                raise ArithError(f"too many numbers (more than {MAX_LITERALS})", "limit")
            tokens.append(_Token("num", text[i:j], i))
            i = j
        elif ch in OPERATORS:
            operators += 1
            if operators > MAX_OPERATORS:
                raise ArithError(f"too many operators (more than {MAX_OPERATORS})", "limit")
            tokens.append(_Token("op", ch, i))
            i += 1
        elif ch == "(":
            depth += 1
            if depth > MAX_DEPTH:
                raise ArithError(f"nesting too deep (more than {MAX_DEPTH} levels)", "limit")
            tokens.append(_Token("(", ch, i))
            i += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ArithError(f"unmatched ')' at position {i}")
            tokens.append(_Token(")", ch, i))
            i += 1
        else:
            raise ArithError(f"unexpected character {ch!r} at position {i}")
    if depth > 0:
        raise ArithError("missing ')'")
    return tokens


class _Parser:
    """Recursive descent over the token list; recursion depth is bounded by MAX_DEPTH."""

    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> _Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def expression(self) -> Node:
        node = self.term()
        while (tok := self.peek()) is not None and tok.kind == "op" and tok.text in "+-":
            self.i += 1
            node = BinOp(tok.text, node, self.term())
        return node

    def term(self) -> Node:
        node = self.atom()
        while (tok := self.peek()) is not None and tok.kind == "op" and tok.text in "*/":
            self.i += 1
            node = BinOp(tok.text, node, self.atom())
        return node

    def atom(self) -> Node:
        tok = self.peek()
        if tok is None:
            raise ArithError("expression ends where a number was expected")
        self.i += 1
        if tok.kind == "num":
            return Num(int(tok.text))
        if tok.kind == "(":
            node = self.expression()
            close = self.peek()
            if close is None or close.kind != ")":
                where = "at the end" if close is None else f"at position {close.pos}"
                raise ArithError(f"expected ')' {where}")
            self.i += 1
            return node
        if tok.kind == "op" and tok.text in "+-":
            raise ArithError(f"unary {tok.text!r} at position {tok.pos} is not allowed")
        raise ArithError(f"unexpected {tok.text!r} at position {tok.pos}")


def parse(text: str) -> Node:
    """Parse an expression; raises `ArithError` on anything that is not a complete, bounded expression."""
    tokens = _tokenize(text)
    if not tokens:
        raise ArithError("empty expression")
    parser = _Parser(tokens)
    node = parser.expression()
    rest = parser.peek()
    if rest is not None:
        raise ArithError(f"unexpected {rest.text!r} at position {rest.pos}")
    return node


def apply_op(op: str, a: Fraction | int, b: Fraction | int) -> Fraction:
    """One exact operation; raises `ArithError` on division by zero."""
    a, b = Fraction(a), Fraction(b)
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if b == 0:
        raise ArithError("division by zero", "math")
    return a / b


def evaluate(node: Node) -> Fraction:
    """The exact value; raises `ArithError` on division by zero or when a value grows absurdly large."""
    if isinstance(node, Num):
        value = Fraction(node.value)
    else:
        value = apply_op(node.op, evaluate(node.left), evaluate(node.right))
    if abs(value.numerator) >= MAX_ABS or value.denominator >= MAX_ABS:
        raise ArithError("value too large", "math")
    return value


def evaluate_text(text: str) -> Fraction:
    """Parse and evaluate in one step."""
    return evaluate(parse(text))


def literals(node: Node) -> list[int]:
    """The integer literals in left-to-right order (for the "each number exactly once" rule)."""
    if isinstance(node, Num):
        return [node.value]
    return literals(node.left) + literals(node.right)


def precedence(node: Node) -> int:
    """Binding strength of a node's top operator; literals bind tightest."""
    return _ATOM_PRECEDENCE if isinstance(node, Num) else PRECEDENCE[node.op]


def needs_parens(op: str, child: Node, side: Literal["left", "right"]) -> bool:
    """Whether `child` must be parenthesised as the `side` operand of `op` to keep its value.

    Only looser children need them, plus equal-precedence right operands of the non-associative
    `-` and `/` (a-(b-c), a/(b/c)). Right operands of `+` and `*` never do: a+(b-c) = a+b-c and
    a*(b/c) = a*b/c exactly, since values are exact fractions.
    """
    child_prec, prec = precedence(child), PRECEDENCE[op]
    if child_prec < prec:
        return True
    return side == "right" and child_prec == prec and op in "-/"


def format_expr(node: Node) -> str:
    """Render with the fewest parentheses that keep the value, and no spaces."""
    if isinstance(node, Num):
        return str(node.value)
    left, right = format_expr(node.left), format_expr(node.right)
    if needs_parens(node.op, node.left, "left"):
        left = f"({left})"
    if needs_parens(node.op, node.right, "right"):
        right = f"({right})"
    return f"{left}{node.op}{right}"


# ---------------------------------------------------------------------------------------------
# A calculator for written equations: the tool a gold-free critic uses (it checks the arithmetic a
# text writes down, never whether the reasoning is the right one).

_EQUATION_LHS = re.compile(r"[0-9][0-9+\-*/() \t]*$")  # the arithmetic right before an '='
_EQUATION_RHS = re.compile(r"^[ \t]*([-+]?[0-9]+(?:\.[0-9]+)?)")  # the number right after it


def check_equations(text: str, *, max_lines: int = 200) -> tuple[int, int]:
    """(equations checked, equations wrong) over the text's `expression = number` claims, one per `=`
    whose left side ends in an arithmetic expression our safe parser accepts (`48/2 = 24`, `7+5=12`;
    `x = 3` and prose are skipped). Exact arithmetic (`Fraction`); a claimed decimal must equal the
    value exactly. Never raises, never evaluates text as code."""
    checked = wrong = 0
    for line in text.splitlines()[:max_lines]:
        parts = line[:MAX_CHARS * 4].split("=")
        for left, right in zip(parts, parts[1:]):
            lhs = _EQUATION_LHS.search(left.rstrip())
            rhs = _EQUATION_RHS.match(right)
            if lhs is None or rhs is None:
                continue
            try:
                value = evaluate(parse(lhs.group(0)))
                claim = Fraction(rhs.group(1))
            except (ArithError, ValueError, ZeroDivisionError):
                continue
            checked += 1
            wrong += value != claim
    return checked, wrong
