"""Chain: config validation, deterministic random access, disjoint splits, one step per line, verifier."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from selfimprove.tasks import TASKS, Problem, Verdict, make_task
from selfimprove.tasks.base import split_of
from selfimprove.tasks.chain import ChainConfig, ChainTask, apply, chain_prompt, step_lines

_STEP = re.compile(r"(-?\d+)([-+*/])(\d+)=(-?\d+)")


def _task(**params: Any) -> ChainTask:
    task = make_task("chain", params)
    assert isinstance(task, ChainTask)
    return task


# --- config ----------------------------------------------------------------------------------


def test_config_defaults() -> None:
    cfg = ChainConfig()
    assert (cfg.num_steps, cfg.min_number, cfg.max_number, cfg.max_value) == (4, 1, 9, 999)
    assert (cfg.ops, cfg.allow_negative, cfg.abs_tol, cfg.partial_reward) == ("+-*", False, None, 0.0)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"num_steps": 2}, "num_steps"),
        ({"num_steps": 13}, "num_steps"),
        ({"ops": ""}, "ops"),
        ({"ops": "+^"}, "ops"),
        ({"ops": "++"}, "ops"),
        ({"min_number": 0}, "min_number"),
        ({"min_number": 8, "max_number": 5}, "min_number (8) > max_number (5)"),
        ({"max_number": 500, "max_value": 100}, "max_number (500) > max_value (100)"),
        ({"partial_reward": 2.0}, "partial_reward"),
        ({"test_fraction": -0.1}, "test_fraction"),
        ({"steps": 4}, "steps"),
    ],
)
def test_bad_config_fails_with_a_clear_error(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        make_task("chain", params)


def test_registered_and_described() -> None:
    assert TASKS.get("chain") is ChainTask
    text = _task(num_steps=6, ops="+-*/", partial_reward=0.2).describe()
    assert text.startswith("Chain:") and "6 operations" in text and "1..9" in text
    assert "one step per line" in text and "partial reward 0.2" in text


# --- generation ------------------------------------------------------------------------------


def test_prompt_and_demonstration_shapes() -> None:
    assert chain_prompt(7, [("+", 5), ("*", 3), ("-", 4)]) == "7; +5 *3 -4:\n"
    assert step_lines(7, [("+", 5), ("*", 3), ("-", 4)]) == ("7+5=12", "12*3=36", "36-4=32")
    problem = _task().problem("train", 3)
    assert problem.id == "chain-train-3"
    assert re.fullmatch(r"\d+; [-+*/]\d+( [-+*/]\d+){3}:\n", problem.prompt)
    assert problem.demonstration is not None and len(problem.demonstration) == 4
    assert problem.answer == problem.demonstration[-1].rpartition("=")[2]
    assert problem.metadata["target"] == int(problem.answer)


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"num_steps": 3},
        {"num_steps": 12, "ops": "+-*/"},
        {"ops": "+-*/", "allow_negative": True, "max_number": 20},
        {"ops": "*/", "min_number": 2, "max_number": 5, "max_value": 500},
    ],
)
def test_demonstrations_are_one_consistent_step_per_line(params: dict[str, Any]) -> None:
    task = _task(**params)
    cfg = task.config
    for problem in task.problems("train", 150) + task.problems("test", 30):
        assert problem.demonstration is not None and len(problem.demonstration) == cfg.num_steps
        value = problem.metadata["start"]
        for line, (op, operand) in zip(problem.demonstration, problem.metadata["steps"]):
            match = _STEP.fullmatch(line)
            assert match is not None, line
            assert (int(match[1]), match[2], int(match[3])) == (value, op, operand)
            assert op in cfg.ops and cfg.min_number <= operand <= cfg.max_number
            value = apply(op, value, operand)
            assert int(match[4]) == value and abs(value) <= cfg.max_value
            assert cfg.allow_negative or value >= 0
            if op == "*" and cfg.max_number > 1:
                assert operand != 1
        assert str(value) == problem.answer
        assert task.verify(problem, task.target_text(problem)) == Verdict.right()


def test_generation_is_deterministic_and_random_access() -> None:
    task = _task()
    assert task.problems("train", 50) == _task().problems("train", 50)
    assert task.problem("train", 37) == task.problems("train", 40)[37]
    assert task.problem("test", 11) == _task().problems("test", 12)[11]
    assert task.problems("train", 5, start=10) == task.problems("train", 15)[10:]


def test_seeds_differ() -> None:
    a = [p.prompt for p in _task(seed=0).problems("train", 50)]
    b = [p.prompt for p in _task(seed=1).problems("train", 50)]
    assert sum(x != y for x, y in zip(a, b)) > 40


def test_train_and_test_are_disjoint() -> None:
    task = _task(num_steps=3, max_number=4)  # a small space, so collisions would show
    train = {p.prompt for p in task.problems("train", 1500)}
    test = {p.prompt for p in task.problems("test", 300)}
    assert train and test and not train & test
    assert all(split_of(prompt, 0, 0.1) == "test" for prompt in test)
    assert len(test) > 100


def test_bad_requests_fail_clearly() -> None:
    with pytest.raises(ValueError, match="unknown split"):
        _task().problem("dev", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="index"):
        _task().problem("train", -1)
    with pytest.raises(ValueError, match="test split is empty"):
        _task(test_fraction=0.0).problem("test", 0)
    with pytest.raises(ValueError, match="no chain problem"):
        _task(ops="*", min_number=9, max_number=9, max_value=100, num_steps=3).problem("train", 0)


# --- verifier --------------------------------------------------------------------------------

PROBLEM = Problem(
    id="hand-made",
    prompt="7; +5 *3 -4:\n",
    answer="32",
    demonstration=("7+5=12", "12*3=36", "36-4=32"),
)


@pytest.mark.parametrize(
    "text",
    [
        "7+5=12\n12*3=36\n36-4=32",
        "7+5=12\n12*3=36\n36-4=32\n",
        " 7 + 5 = 12 \n 12*3=36\n36 - 4 = 32 ",
        "36-4=32",  # a continuation from an R^3 start state
        "32",
        "7+5=11\n11*3=33\n33-4=32",  # only the outcome is judged
        "36-4=32<eos>\n1+1=2",
        "36-4=32\n\nanything after a blank line",
        "\n\n36-4=32",
        "the answer is 32",
        "36-4 = 32.",
        "#### 32",
    ],
)
def test_accepted(text: str) -> None:
    assert _task().verify(PROBLEM, text) == Verdict.right()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty answer"),
        (" \n \n", "empty answer"),
        ("<eos>36-4=32", "empty answer"),
        ("7+5=12\n12*3=36\n36-4=33", "wrong answer 33"),
        ("36-4=32\n32+1=33", "wrong answer 33"),
        ("36-4=", "no answer found"),
        ("36-4=thirty-two", "no answer found"),
        ("hello", "no answer found"),
        ("1" * 20_000, "too long"),
    ],
)
def test_rejected(text: str, reason: str) -> None:
    verdict = _task().verify(PROBLEM, text)
    assert not verdict.correct and verdict.score == 0.0 and reason in verdict.reason, verdict


def test_partial_reward_for_a_wrong_number_only() -> None:
    task = _task(partial_reward=0.2)
    assert task.verify(PROBLEM, "36-4=31") == Verdict(0.2, False, "wrong answer 31")
    assert task.verify(PROBLEM, "36-4=32").score == 1.0
    assert task.verify(PROBLEM, "no idea").score == 0.0


def test_non_text_is_wrong_not_an_exception() -> None:
    assert _task().verify(PROBLEM, None) == Verdict.wrong("not text")  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=300), st.text(alphabet="0123456789+-*/= \n", max_size=200)))
def test_verify_never_raises(text: str) -> None:
    verdict = _task(partial_reward=0.2).verify(PROBLEM, text)
    assert isinstance(verdict, Verdict) and verdict.score in (0.0, 0.2, 1.0)
    assert verdict.correct == (verdict.score == 1.0) and verdict.reason != "verifier error"
