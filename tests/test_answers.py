"""Answer extraction and numeric judging: every format, hostile text, bounded work, partial reward."""

from __future__ import annotations

import builtins
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from selfimprove.tasks.answers import (
    NumericConfig,
    answer_value,
    cut_at_end_marker,
    extract_answer,
    format_number,
    judge_numeric,
    numbers_match,
    numeric_tolerance,
    parse_number,
)
from selfimprove.tasks.base import TaskConfig, Verdict

# --- extract_answer --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # GSM8K's #### wins over everything else, and the last one counts.
        ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"),
        ("#### 1,234\n", "1,234"),
        ("work...\n####   -5  \nthen some rambling 99", "-5"),
        ("#### 3\n#### 4", "4"),
        ("##### 8", "8"),
        ("so \\boxed{7} but #### 9", "9"),
        ("#### \n\\boxed{6}", "6"),  # an empty #### falls through
        # \boxed: last one, balanced braces, any depth.
        ("first \\boxed{1} then \\boxed{2}", "2"),
        ("\\boxed{\\frac{3}{4}}", "\\frac{3}{4}"),
        ("$\\boxed{ 12 }$", "12"),
        ("\\boxed{{{{{5}}}}}", "{{{{5}}}}"),
        ("\\boxed{\\text{5 apples}}", "\\text{5 apples}"),
        ("\\boxed 42 is it", "42"),
        ("\\fbox{8}", "8"),
        ("\\boxed{9} and a broken \\boxed{10", "9"),
        ("\\boxed{} and the answer is 3", "3"),
        # "the answer is" / "answer:" (case-insensitive), the last one.
        ("The answer is 42.", "42."),
        ("So the final ANSWER IS: $1,000", "$1,000"),
        ("Answer: -3", "-3"),
        ("answer = 7 apples", "7 apples"),
        ("The answer is 3. No wait, the answer is 5.", "5."),
        ("**Answer:** 12", "** 12"),
        ("The answer is:\n\n 17", "17"),
        ("I answered 5 times, 6", "6"),  # "answered" is not "answer"
        # Otherwise the last number.
        ("She has 3 apples and 4 pears, 7 fruits", "7"),
        ("It costs $5.50 in total.", "$5.50"),
        ("x = 10 - 4 = 6", "6"),
        ("10-4", "4"),  # a minus after a digit is subtraction
        ("it drops to -4 degrees", "-4"),
        ("(-4)", "-4"),
        ("about 50% of them", "50%"),
        ("ratio 3/4", "3/4"),
        ("the value \\frac{1}{2} here", "\\frac{1}{2}"),
        ("1,234,567 people", "1,234,567"),
        ("3.5 hours", "3.5"),
        ("12<eos>99", "12"),  # end markers cut the text
        ("no numbers here", None),
        ("", None),
        ("   \n\t", None),
        ("٣ arabic-indic digits are not ASCII", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_extract_answer_is_bounded_on_huge_text() -> None:
    huge = "word " * 200_000 + "#### 5"  # 1 MB; the marker lies beyond the bound
    assert extract_answer(huge) is None
    assert extract_answer("7 " + "x" * 1_000_000) == "7"
    assert extract_answer("1" * 1_000_000) == "1" * 10_000  # a number cut at the bound


@pytest.mark.parametrize(
    "text",
    [
        "\\boxed{" * 5000,
        "\\boxed{" + "{" * 9000 + "1" + "}" * 9000 + "}",
        "{" * 10_000,
        "answer is " * 1000,
        "#### " * 2000,
        "-" * 10_000,
        "1," * 5000,
        "1." * 5000,
        "\\frac{" * 3000,
        "$" * 10_000,
        "1e" * 5000,
    ],
)
def test_extract_answer_survives_pathological_text(text: str) -> None:
    result = extract_answer(text)
    assert result is None or isinstance(result, str)


def test_deeply_nested_boxed_is_extracted() -> None:
    text = "\\boxed{" + "{" * 400 + "7" + "}" * 400 + "}"
    answer = extract_answer(text)
    assert answer is not None and answer.strip("{}") == "7"
    assert parse_number(answer) == 7.0


def test_extract_answer_on_non_text() -> None:
    assert extract_answer(None) is None  # type: ignore[arg-type]
    assert extract_answer(42) is None  # type: ignore[arg-type]


def test_cut_at_end_marker() -> None:
    assert cut_at_end_marker("12<|im_end|>junk</s>") == "12"
    assert cut_at_end_marker("no marker") == "no marker"


# --- parse_number ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("72", 72.0),
        ("1,234", 1234.0),
        ("1,234,567.5", 1234567.5),
        ("$5", 5.0),
        ("$1,000.", 1000.0),
        ("-$5", -5.0),
        ("$-5", -5.0),
        ("3.5", 3.5),
        (".5", 0.5),
        ("-2", -2.0),
        ("+2", 2.0),
        ("- 2", -2.0),
        ("\u22127", -7.0),  # unicode minus
        ("50%", 50.0),
        ("50 %", 50.0),
        ("12\\%", 12.0),
        ("3/4", 0.75),
        ("3 / 4", 0.75),
        ("-3/4", -0.75),
        ("\\frac{3}{4}", 0.75),
        ("\\dfrac{1}{8}", 0.125),
        ("-\\frac{1}{2}", -0.5),
        ("\\frac34", 0.75),
        ("$\\frac{3}{4}$", 0.75),
        ("72 clips.", 72.0),
        ("72 clips", 72.0),
        ("5 apples!", 5.0),
        ("42)", 42.0),
        ("** 12", 12.0),
        ("= 9", 9.0),
        ("{5}", 5.0),
        ("\\text{5 apples}", 5.0),
        ("1\\,234", 1234.0),
        ("1{,}234", 1234.0),
        ("1e3", 1000.0),
        ("2.5E-1", 0.25),
        ("007", 7.0),
        ("0", 0.0),
        ("  8  ", 8.0),
    ],
)
def test_parse_number(text: str, value: float) -> None:
    assert parse_number(text) == pytest.approx(value)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "abc",
        "about 5",  # does not start with the number
        "3 + 4",
        "1.2.3",
        "1,23",
        "3/0",
        "\\frac{1}{0}",
        "1" * 400 + "e",  # 1e399 overflows: not finite, so not a number
        "1e400",
        "inf",
        "nan",
        "NaN",
        "-",
        "$",
        "%",
        "١٢",  # Arabic-Indic digits: float() would take them, we do not
        "12 34",
        "5 (2 each)",
    ],
)
def test_parse_number_rejects(text: str) -> None:
    assert parse_number(text) is None


def test_parse_number_on_non_text_and_huge_input() -> None:
    assert parse_number(None) is None  # type: ignore[arg-type]
    assert parse_number(5) is None  # type: ignore[arg-type]
    assert parse_number("7" + " units" * 200_000) == 7.0


def test_parse_number_never_evaluates(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("no eval")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    assert parse_number("__import__('os').system('x')") is None
    assert parse_number("2**10") is None
    assert judge_numeric("#### 2*3", 6.0).score == 0.0


@pytest.mark.parametrize(
    ("phrase", "value"),
    [
        ("18 dollars, since 9*2=18", 18.0),
        ("3 + 4 = 7", 7.0),
        ("probably 5 apples", 5.0),
        ("nothing", None),
    ],
)
def test_answer_value(phrase: str, value: float | None) -> None:
    assert answer_value(phrase) == value


def test_format_number() -> None:
    assert format_number(72.0) == "72" and format_number(-4.0) == "-4" and format_number(8.75) == "8.75"


# --- numbers_match and judge_numeric ---------------------------------------------------------


def test_numbers_match() -> None:
    assert numbers_match(72.0, 72.0)
    assert numbers_match(72.005, 72.0)
    assert not numbers_match(72.02, 72.0)
    assert numbers_match(72.5, 72.0, abs_tol=0.5)
    assert not numbers_match(72.0001, 72.0, abs_tol=0.0)
    assert numbers_match(1010.0, 1000.0, rel_tol=0.01)
    assert not numbers_match(float("nan"), float("nan"))
    assert not numbers_match(float("inf"), float("inf"))


@pytest.mark.parametrize(
    ("text", "gold", "reason"),
    [
        ("#### 72", 72.0, "correct"),
        ("The answer is $1,234.", 1234.0, "correct"),
        ("so \\boxed{\\frac{3}{4}}", 0.75, "correct"),
        ("answer: 0.75000001", 0.75, "correct"),  # within the relative tolerance 1e-6
        ("It drops to -4 degrees.", -4.0, "correct"),
        ("about 50% of them", 50.0, "correct"),
        ("#### 8.75", 8.75, "correct"),
    ],
)
def test_judge_numeric_right(text: str, gold: float, reason: str) -> None:
    assert judge_numeric(text, gold) == Verdict.right(reason)


def test_judge_numeric_tolerance_is_exact_for_integer_golds_and_relative_otherwise() -> None:
    # The peer-found defects: an absolute 1e-2 accepted 0.12 for 0.125 and 0.495 for 0.5.
    assert not judge_numeric("#### 0.12", 0.125).correct
    assert not judge_numeric("#### 0.495", 0.5).correct
    assert not judge_numeric("#### 72.005", 72.0).correct  # integer gold: exact
    assert judge_numeric("#### 72.0", 72.0).correct
    assert judge_numeric("#### 0.3333333", 1 / 3).correct  # 1e-7 relative: float noise
    assert not judge_numeric("#### 0.333", 1 / 3).correct
    # R^3's absolute tolerance stays available.
    assert judge_numeric("#### 0.495", 0.5, abs_tol=1e-2).correct
    assert judge_numeric("answer: 0.749", 0.75, abs_tol=1e-2).correct
    assert numeric_tolerance(3.0, None, 1e-6) == 0.0
    assert numeric_tolerance(0.5, None, 1e-6) == pytest.approx(5e-7)
    assert numeric_tolerance(0.5, 0.01, 1e-6) == 0.01


def test_an_expression_after_the_hashes_is_refused_as_an_expression() -> None:
    verdict = judge_numeric("#### 3+5", 8.0)
    assert not verdict.correct and "expression" in verdict.reason and "wrong answer 3" not in verdict.reason
    assert "expression" in judge_numeric("#### 4 * 2", 8.0).reason
    assert judge_numeric("#### 18 dollars, since 9*2=18", 18.0).correct  # a number first, then words
    assert judge_numeric("#### 3/4", 0.75).correct  # a fraction is a number


def test_judge_numeric_partial_reward() -> None:
    wrong = judge_numeric("#### 71", 72.0, partial=0.2)
    assert wrong == Verdict(score=0.2, correct=False, reason="wrong answer 71")
    assert judge_numeric("#### 71", 72.0).score == 0.0
    # Partial reward needs a number: nothing usable gets 0 whatever `partial` is.
    assert judge_numeric("I don't know", 72.0, partial=0.2) == Verdict.wrong("no answer found")
    assert judge_numeric("#### many", 72.0, partial=0.2) == Verdict.wrong("answer 'many' is not a number")
    assert judge_numeric(None, 72.0, partial=0.2) == Verdict.wrong("not text")  # type: ignore[arg-type]


def test_wrong_reason_never_reveals_the_gold() -> None:
    verdict = judge_numeric("#### 71", 987654.0, partial=0.2)
    assert "987654" not in verdict.reason


def test_judge_numeric_long_answer_is_shortened_in_reason() -> None:
    verdict = judge_numeric("#### " + "x" * 500, 1.0)
    assert not verdict.correct and len(verdict.reason) < 80


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.text(alphabet="0123456789,.$%-+/\\{}boxed#answer: \n", max_size=200)))
def test_judge_numeric_never_raises(text: str) -> None:
    verdict = judge_numeric(text, 12.0, partial=0.2)
    assert isinstance(verdict, Verdict) and verdict.score in (0.0, 0.2, 1.0)
    assert verdict.correct == (verdict.score == 1.0)
    assert extract_answer(text) is None or isinstance(extract_answer(text), str)
    value = parse_number(text)
    assert value is None or isinstance(value, float)


# --- config ----------------------------------------------------------------------------------


def test_numeric_config() -> None:
    cfg = NumericConfig()
    assert isinstance(cfg, TaskConfig)
    assert (cfg.abs_tol, cfg.rel_tol, cfg.partial_reward) == (None, 1e-6, 0.0)
    assert NumericConfig(partial_reward=0.2).partial_reward == 0.2
    for bad in ({"partial_reward": 1.5}, {"partial_reward": -0.1}, {"abs_tol": -1.0}, {"abs_tol": float("nan")}):
        with pytest.raises(ValidationError, match=re.escape(next(iter(bad)))):
            NumericConfig(**bad)
