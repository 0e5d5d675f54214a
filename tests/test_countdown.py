"""Countdown: config validation, exact solver, deterministic generation, and a hostile-input verifier."""

from __future__ import annotations

import builtins
import re
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from selfimprove.tasks import TASKS, Problem, Verdict, make_task
from selfimprove.tasks.arith import ArithError, BinOp, Node, Num, evaluate, format_expr, parse
from selfimprove.tasks.base import split_of
from selfimprove.tasks.countdown import (
    CountdownConfig,
    CountdownTask,
    judge_answer,
    problem_key,
    reachable_targets,
    solution_steps,
    solve,
)


def _task(**params: Any) -> CountdownTask:
    task = make_task("countdown", params)
    assert isinstance(task, CountdownTask)
    return task


def _problem(numbers: list[int], target: int, fmt: str = "expression") -> Problem:
    prompt = f"{' '.join(map(str, numbers))} -> {target}:" + ("\n" if fmt == "steps" else "")
    return Problem(
        id="hand-made",
        prompt=prompt,
        answer=str(target),
        metadata={"numbers": numbers, "target": target, "format": fmt},
    )


def _assert_wrong(verdict: Verdict, reason: str) -> None:
    assert isinstance(verdict, Verdict)
    assert verdict.score == 0.0 and not verdict.correct
    assert reason in verdict.reason, verdict.reason


# --- config ----------------------------------------------------------------------------------


def test_config_defaults_follow_specs() -> None:
    cfg = CountdownConfig()
    assert (cfg.num_numbers, cfg.min_number, cfg.max_number) == (3, 1, 20)
    assert (cfg.min_target, cfg.max_target, cfg.format) == (10, 50, "expression")
    assert (cfg.seed, cfg.test_fraction) == (0, 0.1)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"num_numbers": 1}, "num_numbers"),
        ({"num_numbers": 7}, "num_numbers"),
        ({"min_number": 0}, "min_number"),
        ({"min_number": 30, "max_number": 20}, "min_number (30) > max_number (20)"),
        ({"min_target": 60}, "min_target (60) > max_target (50)"),
        ({"format": "prose"}, "format"),
        ({"test_fraction": 1.5}, "test_fraction"),
        ({"num_numbrs": 3}, "num_numbrs"),
    ],
)
def test_bad_config_fails_with_a_clear_error(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        make_task("countdown", params)


def test_task_is_registered() -> None:
    assert TASKS.get("countdown") is CountdownTask
    assert "countdown" in TASKS


def test_describe_mentions_the_settings() -> None:
    text = _task(num_numbers=4).describe()
    assert "Countdown" in text and "4 numbers" in text and "1..20" in text


# --- solver ----------------------------------------------------------------------------------


def test_reachable_targets_of_small_sets() -> None:
    assert reachable_targets([2, 3]) == {1, 5, 6}  # 3/2 is not a whole number
    assert reachable_targets([4, 2]) == {2, 6, 8}
    assert reachable_targets([5, 5]) == {0, 1, 10, 25}
    assert reachable_targets([1, 1, 1]) == {0, 1, 2, 3}


def test_solve_known_cases() -> None:
    node = solve([9, 20, 2], 22)
    assert node is not None and format_expr(node) == "(20-9)*2"
    assert solution_steps(node) == ("20-9=11", "11*2=22")
    assert solve([1, 1, 1, 1], 24) is None
    assert solve([3, 3, 8, 8], 24) is None  # only 8/(3-8/3), which needs fractions
    game = solve([4, 7, 8, 8], 24)
    assert game is not None and evaluate(game) == 24


def _pointless(node: Node) -> int:
    if isinstance(node, Num):
        return 0
    right = evaluate(node.right)
    here = (node.op in "*/" and right == 1) or (node.op in "+-" and right == 0)
    return int(here) + _pointless(node.left) + _pointless(node.right)


def test_solver_prefers_solutions_without_pointless_operations() -> None:
    node = solve([1, 2, 3], 6)  # 1*2*3 works, but 1+2+3 needs no *1
    assert node is not None and evaluate(node) == 6 and _pointless(node) == 0
    forced = solve([1, 5, 4], 20)  # here *1 (or /1) is the only way
    assert forced is not None and evaluate(forced) == 20


def test_solver_ignores_input_order() -> None:
    assert solve([20, 9, 2], 22) == solve([2, 9, 20], 22) == solve([9, 2, 20], 22)


def test_solver_handles_six_numbers() -> None:
    node = solve([20, 19, 18, 17, 16, 15], 1000)
    assert node is not None and evaluate(node) == 1000
    assert sorted(n.value for n in _leaves(node)) == [15, 16, 17, 18, 19, 20]


def _leaves(node: Node) -> list[Num]:
    return [node] if isinstance(node, Num) else _leaves(node.left) + _leaves(node.right)


# --- generation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "count"),
    [
        ({}, 300),
        ({"format": "steps"}, 300),
        ({"num_numbers": 4}, 100),
        ({"num_numbers": 4, "format": "steps"}, 100),
    ],
)
def test_every_demonstration_verifies(params: dict[str, Any], count: int) -> None:
    task = _task(**params)
    for split, n in (("train", count), ("test", count // 5)):
        for problem in task.problems(split, n):
            verdict = task.verify(problem, task.target_text(problem))
            assert verdict.correct and verdict.score == 1.0, (problem, verdict)


def test_prompt_answer_and_metadata_shapes() -> None:
    problem = _task().problem("train", 3)
    numbers, target = problem.metadata["numbers"], problem.metadata["target"]
    assert problem.prompt == f"{' '.join(map(str, numbers))} -> {target}:"
    assert re.fullmatch(r"\d+ \d+ \d+ -> \d+:", problem.prompt)
    assert problem.answer == str(target) and problem.id == "countdown-train-3"
    assert problem.metadata["format"] == "expression"
    assert problem.demonstration is not None and len(problem.demonstration) == 1
    assert re.fullmatch(r"[0-9+\-*/()]+", problem.demonstration[0])

    steps = _task(format="steps").problem("test", 3)
    assert steps.prompt.endswith(":\n") and steps.id == "countdown-test-3"
    assert steps.demonstration is not None and len(steps.demonstration) == 2
    assert all(re.fullmatch(r"\d+[-+*/]\d+=\d+", line) for line in steps.demonstration)
    assert steps.demonstration[-1].endswith(f"={steps.metadata['target']}")


def test_generation_is_deterministic() -> None:
    assert _task().problems("train", 50) == _task().problems("train", 50)
    assert _task(seed=1).problems("test", 20) == _task(seed=1).problems("test", 20)


def test_different_seeds_give_different_problems() -> None:
    a = [p.prompt for p in _task(seed=0).problems("train", 50)]
    b = [p.prompt for p in _task(seed=1).problems("train", 50)]
    assert sum(x != y for x, y in zip(a, b)) > 40


def test_random_access_matches_sequential_generation() -> None:
    task = _task()
    assert task.problem("train", 57) == task.problems("train", 100)[57]
    assert task.problem("test", 57) == _task().problems("test", 100)[57]
    assert task.problems("train", 5, start=10) == task.problems("train", 15)[10:]


def test_train_and_test_never_share_a_problem() -> None:
    task = _task()
    train = {problem_key(p.metadata["numbers"], p.metadata["target"]) for p in task.problems("train", 3000)}
    test = {problem_key(p.metadata["numbers"], p.metadata["target"]) for p in task.problems("test", 500)}
    assert train and test and not train & test
    assert all(split_of(key, 0, 0.1) == "test" for key in test)
    assert len(test) > 300  # plenty of distinct held-out problems, not one repeated


def test_problem_key_ignores_number_order() -> None:
    assert problem_key([9, 2, 20], 22) == problem_key([20, 9, 2], 22)
    assert problem_key([9, 2, 20], 22) != problem_key([9, 2, 20], 23)


@pytest.mark.parametrize(
    "params",
    [{}, {"num_numbers": 4, "min_number": 5, "max_number": 9, "min_target": 30, "max_target": 40}],
)
def test_numbers_and_targets_stay_in_range(params: dict[str, Any]) -> None:
    task = _task(**params)
    cfg = task.config
    for problem in task.problems("train", 200):
        numbers, target = problem.metadata["numbers"], problem.metadata["target"]
        assert len(numbers) == cfg.num_numbers
        assert all(cfg.min_number <= n <= cfg.max_number for n in numbers)
        assert cfg.min_target <= target <= cfg.max_target
        assert target in reachable_targets(numbers)


def test_numbers_keep_their_sampled_order() -> None:
    prompts = [p.metadata["numbers"] for p in _task().problems("train", 100)]
    assert any(numbers != sorted(numbers) for numbers in prompts)


def test_impossible_configs_fail_clearly() -> None:
    with pytest.raises(ValueError, match="no countdown problem"):
        _task(num_numbers=2, min_number=1, max_number=1, min_target=100, max_target=200).problem("train", 0)
    with pytest.raises(ValueError, match="test_fraction"):
        _task(test_fraction=0.0).problem("test", 0)
    with pytest.raises(ValueError, match="unknown split"):
        _task().problem("dev", 0)  # type: ignore[arg-type]


# --- verifier: expression format ---------------------------------------------------------------

EXPR = _problem([9, 20, 2], 22)
STEPS = _problem([9, 20, 2], 22, "steps")
ZERO = _problem([9, 9, 5], 10)  # (9-9) is available here, so division by zero can happen
ZERO_STEPS = _problem([9, 9, 5], 10, "steps")


@pytest.mark.parametrize(
    "text",
    [
        "(20-9)*2",
        "  (20 - 9) * 2  ",
        "2*(20-9)",
        "(20-9)*2=22",
        "(20-9)*2 = 22",
        "(20-9)*2<eos>junk after the end marker",
        "(20-9)*2<|end|>",
        "(20-9)*2\n\nanything after a blank line",
        "\n\n(20-9)*2\n",
        "(20-9)*2\nextra line ignored in expression format",
    ],
)
def test_expression_answers_accepted(text: str) -> None:
    assert _task().verify(EXPR, text) == Verdict.right()


@pytest.mark.parametrize(
    ("problem", "text", "reason"),
    [
        (EXPR, "", "empty answer"),
        (EXPR, " \n\t \n ", "empty answer"),
        (EXPR, "<eos>(20-9)*2", "empty answer"),
        (EXPR, "\u2603\ufe0f\U0001f4a5 \u0662\u0660 \u202e\x00", "unparsable"),
        (EXPR, "1" * 1_000_000, "too long"),
        (EXPR, "(" * 10000, "too long"),
        (EXPR, "1+" * 5000, "too long"),
        (EXPR, "(" * 30 + "20-9" + ")" * 30 + "*2", "nesting too deep"),
        (EXPR, "+".join(["2"] * 40), "too many numbers"),
        (EXPR, "(20-9)*2*2", "number 2 used twice"),
        (EXPR, "20+2", "number 9 not used"),
        (EXPR, "(20-9)*2+5-5", "uses 5 which is not available"),
        (ZERO, "5/(9-9)", "division by zero"),
        (EXPR, "(20-9)*2/0", "division by zero"),
        (EXPR, "__import__('os').system('x')", "unparsable"),
        (EXPR, "2**100", "unparsable"),
        (EXPR, "2.5*8+2", "unparsable"),
        (EXPR, "9" * 50, "number too long"),
        (EXPR, "-2+20+9-5", "unparsable: unary"),
        (EXPR, "20+9-2", "value 27 != target 22"),
        (EXPR, "20+9/2", "intermediate result 9/2 = 9/2 is not a whole number (every step must give a whole number >= 0)"),
        (EXPR, "(20-9)*2=23", "claims 23 but the expression gives 22"),
        (EXPR, "20+9-2=22", "claims 22 but the expression gives 27"),
        (EXPR, "(20-9)*2=22=22", "unparsable"),
        (EXPR, "(20-9)*2=twenty-two", "unparsable"),
        (EXPR, "\n\n20+2\n\n(20-9)*2", "number 9 not used"),
    ],
)
def test_expression_hostile_inputs(problem: Problem, text: str, reason: str) -> None:
    _assert_wrong(_task().verify(problem, text), reason)


def test_non_text_is_wrong_not_an_exception() -> None:
    _assert_wrong(_task().verify(EXPR, None), "not text")  # type: ignore[arg-type]


def test_verifier_never_calls_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the verifier must not evaluate model text as code")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    monkeypatch.setattr(builtins, "compile", forbidden)
    task = _task()
    assert task.verify(EXPR, "(20-9)*2").correct
    assert not task.verify(EXPR, "__import__('os').system('x')").correct
    assert task.verify(STEPS, "20-9=11\n11*2=22").correct


# --- verifier: steps format ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "20-9=11\n11*2=22",
        " 20 - 9 = 11 \n\t11 * 2 = 22\n",
        "20-9=11\n2*11=22",
        "20-9=11\n11*2=22<eos>\n1+1=2",
        "20-9=11\n11*2=22\n\nignored",
    ],
)
def test_steps_answers_accepted(text: str) -> None:
    assert _task(format="steps").verify(STEPS, text) == Verdict.right()


@pytest.mark.parametrize(
    ("problem", "text", "reason"),
    [
        (STEPS, "", "empty answer"),
        (STEPS, "1" * 1_000_000, "too long"),
        (STEPS, "20-9=12\n12*2=24", "line 1: 20-9 is 11, not 12"),
        (STEPS, "20-5=15\n15+9=24", "line 1: 5 is not available"),
        (STEPS, "20-9=11\n11*9=99", "line 2: 9 is not available"),
        (STEPS, "9+9=18\n18+2=20", "line 1: 9 is not available"),
        (STEPS, "20+2=22", "number 9 not used"),
        (STEPS, "20-9=11", "target 22 not reached (left: 2, 11)"),
        (STEPS, "20-9=11\n11+2=13", "value 13 != target 22"),
        (STEPS, "9/2=4\n20-4=16", "line 1: 9/2 is 9/2, not 4"),
        (STEPS, "9-20=11\n11*2=22", "line 1: 9-20 is -11, not 11"),
        (STEPS, "hello\n20-9=11", "line 1 unparsable"),
        (STEPS, "(20-9)*2", "line 1 unparsable"),
        (STEPS, "20-9=11\n11*2=22\n22+0=22", "line 3: 0 is not available"),
        (STEPS, "\n".join(["20-9=11"] * 10), "too many lines"),
        (STEPS, "20-9=11\n11*2=" + "9" * 40, "line 2 unparsable"),
        (STEPS, "20-9=011\n11*2=22", "line 1 unparsable"),
        (ZERO_STEPS, "9-9=0\n5/0=0", "line 2: division by zero"),
    ],
)
def test_steps_hostile_inputs(problem: Problem, text: str, reason: str) -> None:
    _assert_wrong(_task(format="steps").verify(problem, text), reason)


# --- properties ------------------------------------------------------------------------------


def _assert_well_formed(verdict: Verdict) -> None:
    assert isinstance(verdict, Verdict)
    assert verdict.score in (0.0, 1.0)
    assert verdict.correct == (verdict.score == 1.0)
    assert verdict.reason and verdict.reason != "verifier error"


_HOSTILE_TEXT = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=100),
    st.text(alphabet="0123456789+-*/()= \n\t", max_size=120),
    st.text(min_size=1900, max_size=2100, alphabet="1+(\n"),
)


@settings(max_examples=200, deadline=None)
@given(_HOSTILE_TEXT, st.sampled_from([EXPR, STEPS, ZERO, ZERO_STEPS]))
def test_verify_never_raises_on_arbitrary_text(text: str, problem: Problem) -> None:
    _assert_well_formed(_task().verify(problem, text))


_PROBLEMS = _task().problems("train", 30) + _task(num_numbers=4).problems("train", 30)


@st.composite
def _expression_for(draw: st.DrawFn, numbers: list[int]) -> Node:
    """A random expression tree using each of `numbers` once, in a random order and shape."""
    pool: list[Node] = [Num(n) for n in draw(st.permutations(numbers))]
    while len(pool) > 1:
        i = draw(st.integers(0, len(pool) - 1))
        left = pool.pop(i)
        j = draw(st.integers(0, len(pool) - 1))
        right = pool.pop(j)
        pool.insert(min(i, j), BinOp(draw(st.sampled_from("+-*/")), left, right))
    return pool[0]


@settings(max_examples=300, deadline=None)
@given(st.data(), st.sampled_from(_PROBLEMS))
def test_expression_verdict_agrees_with_exact_value(data: st.DataObject, problem: Problem) -> None:
    node = data.draw(_expression_for(list(problem.metadata["numbers"])))
    verdict = _task().verify(problem, format_expr(node))
    _assert_well_formed(verdict)
    try:
        value = evaluate(node)
    except ArithError:
        assert "division by zero" in verdict.reason
        return
    written = parse(format_expr(node))  # the text's own tree: 18+(8-13) is written 18+8-13
    assert verdict.correct == (value == problem.metadata["target"] and _whole_steps(written))


def _whole_steps(node: Node) -> bool:
    """Every intermediate result a whole number >= 0 (the rule of both formats)."""
    if isinstance(node, Num):
        return True
    value = evaluate(node)
    return value >= 0 and value.denominator == 1 and _whole_steps(node.left) and _whole_steps(node.right)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("7-13+20", "intermediate result 7-13 = -6 is negative"),
        ("12/19*19", "intermediate result 12/19 = 12/19 is not a whole number"),
        ("16-(8-10)", "intermediate result 8-10 = -2 is negative"),
    ],
)
def test_one_rule_for_both_formats_negative_and_fractional_intermediates(text: str, reason: str) -> None:
    # Peer-found defect: the expression verifier accepted these although the steps format cannot write them.
    numbers = [int(n) for n in re.findall(r"[0-9]+", text)]
    value = evaluate(parse(text))
    verdict = judge_answer(text, numbers, int(value), "expression")
    assert not verdict.correct and verdict.reason.startswith(reason)


@settings(max_examples=300, deadline=None)
@given(st.data(), st.sampled_from(_PROBLEMS))
def test_steps_verdict_agrees_with_exact_arithmetic(data: st.DataObject, problem: Problem) -> None:
    pool = list(problem.metadata["numbers"])
    lines, valid = [], True
    while len(pool) > 1:
        a = pool.pop(data.draw(st.integers(0, len(pool) - 1)))
        b = pool.pop(data.draw(st.integers(0, len(pool) - 1)))
        op = data.draw(st.sampled_from("+-*/"))
        exact = Fraction(0) if op == "/" and b == 0 else evaluate(BinOp(op, Num(a), Num(b)))
        valid = valid and not (op == "/" and b == 0) and exact.denominator == 1 and exact >= 0
        if not valid:
            lines.append(f"{a}{op}{b}={abs(exact.numerator)}")
            break
        pool.append(exact.numerator)
        lines.append(f"{a}{op}{b}={exact.numerator}")
    steps_problem = _problem(list(problem.metadata["numbers"]), problem.metadata["target"], "steps")
    verdict = _task().verify(steps_problem, "\n".join(lines))
    _assert_well_formed(verdict)
    assert verdict.correct == (valid and pool == [problem.metadata["target"]])
