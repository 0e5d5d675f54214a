"""The safe arithmetic evaluator: grammar, exactness, limits, and minimal-parenthesis printing."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from selfimprove.tasks.arith import (
    MAX_CHARS,
    MAX_DEPTH,
    MAX_LITERALS,
    ArithError,
    BinOp,
    Node,
    Num,
    evaluate,
    evaluate_text,
    format_expr,
    literals,
    parse,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("8-3-2", 3),
        ("2*3+4", 10),
        ("2+3*4", 14),
        ("8/4/2", 1),
        ("(1+2)*3", 9),
        ("20-(9-2)", 13),
        ("8/(4/2)", 4),
        ("  ( 20 - 9 ) *\t2 ", 22),
        ("0", 0),
        ("999999", 999999),
    ],
)
def test_precedence_and_left_associativity(text: str, value: int) -> None:
    assert evaluate_text(text) == value


def test_values_are_exact_fractions() -> None:
    assert evaluate_text("7/2*2") == 7
    assert evaluate_text("7/2") == Fraction(7, 2)
    assert evaluate_text("1/3+1/3+1/3") == 1
    assert evaluate_text("2-7") == -5  # negative values are fine inside the evaluator


@pytest.mark.parametrize("text", ["1/0", "5/(3-3)", "1/(2-2)*3", "(4/2-2)/(1-1)"])
def test_division_by_zero_is_an_arith_error(text: str) -> None:
    with pytest.raises(ArithError, match="division by zero") as info:
        evaluate_text(text)
    assert info.value.kind == "math"


def test_nesting_limit() -> None:
    ok = "(" * MAX_DEPTH + "1" + ")" * MAX_DEPTH
    assert evaluate_text(ok) == 1
    too_deep = "(" * (MAX_DEPTH + 1) + "1" + ")" * (MAX_DEPTH + 1)
    with pytest.raises(ArithError, match="nesting too deep") as info:
        parse(too_deep)
    assert info.value.kind == "limit"


def test_absurd_nesting_fails_fast_on_length() -> None:
    with pytest.raises(ArithError, match="too long"):
        parse("(" * 10000)


def test_length_limit() -> None:
    assert evaluate_text("1" + " " * (MAX_CHARS - 1)) == 1
    with pytest.raises(ArithError, match="too long"):
        parse("1" + " " * MAX_CHARS)


def test_literal_limit() -> None:
    assert evaluate_text("+".join(["1"] * MAX_LITERALS)) == MAX_LITERALS
    with pytest.raises(ArithError, match="too many numbers"):
        parse("+".join(["1"] * (MAX_LITERALS + 1)))


def test_operator_limit() -> None:
    with pytest.raises(ArithError, match="too many operators"):
        parse("1" + "*" * 40 + "1")


@pytest.mark.parametrize("text", ["-3", "2*-3", "+3", "(-1)", "2--1", "1+(-2)"])
def test_unary_operators_are_rejected(text: str) -> None:
    with pytest.raises(ArithError, match="unary|unexpected"):
        parse(text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "1+2)",
        "(1+2",
        "()",
        "1 2",
        "1+",
        "*2",
        "3x",
        "1+2;",
        "2**3",
        "2.5",
        "1e3",
        "0x10",
        "07",
        "\u0663+1",  # ARABIC-INDIC DIGIT THREE: isdigit() is true but it is not ASCII
        "2\u00b2",  # SUPERSCRIPT TWO
        "__import__('os').system('x')",
        "abs(3)",
        "1=1",
    ],
)
def test_junk_is_rejected_as_syntax_error(text: str) -> None:
    with pytest.raises(ArithError) as info:
        parse(text)
    assert info.value.kind == "syntax"


def test_huge_literals_are_rejected() -> None:
    with pytest.raises(ArithError, match="number too long"):
        parse("1234567")
    with pytest.raises(ArithError, match="number too long"):
        parse("9" * 200)


def test_huge_values_are_rejected() -> None:
    assert evaluate_text("999999*999999") == 999999**2
    with pytest.raises(ArithError, match="value too large"):
        evaluate_text("999999*999999*999999")
    with pytest.raises(ArithError, match="value too large"):
        evaluate_text("1/999999/999999/2")


def test_parse_builds_the_expected_tree() -> None:
    assert parse("8-3-2") == BinOp("-", BinOp("-", Num(8), Num(3)), Num(2))
    assert parse("2+3*4") == BinOp("+", Num(2), BinOp("*", Num(3), Num(4)))


def test_literals_in_left_to_right_order() -> None:
    assert literals(parse("(20-9)*2+20")) == [20, 9, 2, 20]
    assert literals(parse("7")) == [7]


@pytest.mark.parametrize(
    ("text", "printed"),
    [
        ("(20-9)*2", "(20-9)*2"),
        ("20-(9-2)", "20-(9-2)"),
        ("20-9-2", "20-9-2"),
        ("(20-9)-2", "20-9-2"),
        ("8/(4/2)", "8/(4/2)"),
        ("(8/4)/2", "8/4/2"),
        ("((1+2))*3", "(1+2)*3"),
        ("2*(3*4)", "2*3*4"),
        ("2+(3-1)", "2+3-1"),
        ("2*(6/3)", "2*6/3"),
        ("(2*3)+4", "2*3+4"),
        ("2*(3+4)", "2*(3+4)"),
        ("(2+3)/(4-1)", "(2+3)/(4-1)"),
        ("( 5 )", "5"),
    ],
)
def test_format_expr_uses_minimal_parentheses(text: str, printed: str) -> None:
    node = parse(text)
    assert format_expr(node) == printed
    assert evaluate_text(printed) == evaluate(node)


def _trees(max_leaves: int = 6) -> st.SearchStrategy[Node]:
    leaf = st.integers(min_value=0, max_value=30).map(Num)
    return st.recursive(
        leaf,
        lambda children: st.builds(BinOp, st.sampled_from("+-*/"), children, children),
        max_leaves=max_leaves,
    )


@settings(max_examples=300, deadline=None)
@given(_trees())
def test_format_expr_round_trips_to_the_same_value(node: Node) -> None:
    text = format_expr(node)
    assert " " not in text
    reparsed = parse(text)
    assert literals(reparsed) == literals(node)
    try:
        value = evaluate(node)
    except ArithError:
        return  # division by zero somewhere: re-association may move it but not remove it
    assert evaluate(reparsed) == value


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet="0123456789+-*/() \t=.x")))
def test_parse_raises_only_arith_errors(text: str) -> None:
    try:
        value = evaluate_text(text)
    except ArithError as error:
        assert error.kind in ("syntax", "limit", "math")
        assert str(error)
    else:
        assert isinstance(value, Fraction)
