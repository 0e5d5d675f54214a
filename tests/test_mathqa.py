"""MATH task: math-verify comparison under our own time limit (threads, processes, hostile input)."""

from __future__ import annotations

import json
import multiprocessing
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from selfimprove.tasks import TASKS, Problem, make_task
from selfimprove.tasks.base import split_of
from selfimprove.tasks.mathqa import (
    MAX_ANSWER_CHARS,
    MathTask,
    MathVerifierPool,
    last_boxed,
    math_equal,
)

POW_TOWER = r"The answer is \boxed{9^{9^{9^{9}}}}."  # sympy evaluates it eagerly: ~10^8 digits, in C


@pytest.fixture(scope="module", autouse=True)
def _warm_worker() -> None:
    """Start the default pool's first worker once, so timings below do not include its start."""
    assert math_equal(r"\boxed{\frac{1}{2}}", "0.5") == (True, "correct")


def _task(**params: Any) -> MathTask:
    task = make_task("math", params)
    assert isinstance(task, MathTask)
    return task


def _boxed(answer: str) -> str:
    return f"We compute carefully.\nThe answer is $\\boxed{{{answer}}}$."


# --- answer comparison ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        (r"\frac{1}{2}", "0.5"),
        ("0.5", r"\frac{1}{2}"),
        (r"\dfrac12", r"\frac{1}{2}"),
        (r"\sqrt{2}/2", r"\frac{\sqrt{2}}{2}"),
        ("x=3", "3"),
        ("x = 3", "3"),
        (r"(-\infty,3]", r"(-\infty, 3]"),
        (r"[2,5)", "[2, 5)"),
        (r"(-\infty,-2)\cup(2,\infty)", r"(-\infty, -2) \cup (2, \infty)"),
        ("1,000", "1000"),
        ("1000", "1,000"),
        ("86{,}400", "86400"),
        (r"\sqrt{98}", r"7\sqrt{2}"),
        ("3+x", "x + 3"),
        ("3, 2", "2, 3"),
        ("2.25", r"\frac{9}{4}"),
        (r"9 \pi", r"9\pi"),
        ("12", "12"),
        ("-7", "-7"),
    ],
)
def test_equivalent_answers(pred: str, gold: str) -> None:
    assert math_equal(_boxed(pred), gold) == (True, "correct")


@pytest.mark.parametrize(
    ("pred", "gold"),
    [
        ("2", "3"),
        (r"\frac{1}{3}", r"\frac{1}{2}"),
        ("0.333", r"\frac{1}{3}"),
        (r"(-\infty, 3)", r"(-\infty, 3]"),
        ("(2, \\infty)", r"(-\infty, -2) \cup (2, \infty)"),
        ("2", "2, 3"),
        ("x + 4", "x + 3"),
        ("(-3, 2)", "(2, -3)"),
        (r"\sqrt{3}", r"\sqrt{2}"),
        ("12", "120"),
    ],
)
def test_different_answers(pred: str, gold: str) -> None:
    equal, reason = math_equal(_boxed(pred), gold)
    assert not equal
    assert "!=" in reason, reason


def test_the_last_box_counts() -> None:
    assert math_equal(r"First \boxed{2}, no wait: \boxed{3}", "3")[0]
    assert not math_equal(r"First \boxed{3}, no wait: \boxed{2}", "3")[0]


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("The answer is 3.", "no \\boxed{} answer"),
        ("", "no \\boxed{} answer"),
        ("The answer is \\boxed{3", "unclosed \\boxed{"),
        ("The answer is \\boxed{}", "empty \\boxed{}"),
        ("The answer is \\boxed{" + "1+" * MAX_ANSWER_CHARS + "1}", "answer too long"),
    ],
)
def test_missing_or_broken_box_is_wrong_with_a_reason(text: str, reason: str) -> None:
    equal, why = math_equal(text, "3")
    assert not equal
    assert reason in why, why


def test_unboxed_answers_only_count_when_allowed() -> None:
    assert not math_equal("The final answer is 3.", "3")[0]
    assert math_equal("The final answer is 3.", "3", require_boxed=False) == (True, "correct")


def test_box_extraction() -> None:
    assert last_boxed(r"\boxed{\{1, 2\}}").content == r"\{1, 2\}"
    assert last_boxed(r"so \boxed{\frac{a}{b}} and").content == r"\frac{a}{b}"
    assert last_boxed(r"\boxed 5 apples").content == "5"
    assert last_boxed(r"\fbox{7}").content == "7"
    assert last_boxed("nothing here").content is None


@pytest.mark.parametrize("gold", [r"\boxed{\frac{1}{2}}", r"$\frac{1}{2}$", r" \frac{1}{2} "])
def test_gold_answers_are_unwrapped(gold: str) -> None:
    assert math_equal(r"\boxed{0.5}", gold)[0]


@pytest.mark.parametrize("pred, gold", [(None, "3"), (r"\boxed{3}", None), (r"\boxed{3}", ""), (3, 3)])
def test_bad_arguments_are_wrong_not_errors(pred: Any, gold: Any) -> None:
    equal, reason = math_equal(pred, gold)
    assert not equal and reason


# --- the time limit ------------------------------------------------------------------------------


def test_pathological_input_is_cut_off_at_the_time_limit() -> None:
    equal, reason = math_equal(POW_TOWER, "5", timeout=1.0)
    assert not equal
    assert reason.startswith("timeout"), reason  # the limit fired (math-verify alone never returns)
    # The killed worker is replaced: the next comparison works.
    assert math_equal(r"\boxed{\frac{3}{4}}", "0.75") == (True, "correct")


def test_huge_inputs_are_rejected_before_parsing() -> None:
    huge = r"\boxed{" + r"\frac{x}{2}+" * 10_000 + "1}"  # ~110k characters of LaTeX
    equal, reason = math_equal(huge, "1")
    assert not equal and "too long" in reason  # rejected before any parsing
    equal, reason = math_equal("x" * 300_000, "1")
    assert not equal and "too long" in reason


def test_works_from_a_thread() -> None:
    results: list[tuple[bool, str]] = []
    thread = threading.Thread(target=lambda: results.append(math_equal(_boxed(r"\frac{2}{4}"), "0.5")))
    thread.start()
    thread.join(timeout=30)
    assert results == [(True, "correct")]


def test_works_from_many_threads_at_once_while_one_times_out() -> None:
    cases = [(_boxed(r"\frac{1}{2}"), "0.5", True), (_boxed("x=3"), "3", True), (_boxed("1,000"), "1000", True),
             (_boxed(r"\sqrt{8}"), r"2\sqrt{2}", True), (_boxed("5"), r"\frac{9}{2}", False)] * 3
    with ThreadPoolExecutor(max_workers=4) as pool:
        slow = pool.submit(math_equal, POW_TOWER, "5", timeout=2.0)
        futures = [pool.submit(math_equal, text, gold) for text, gold, _ in cases]
        got = [f.result(timeout=60) for f in futures]
        assert slow.result(timeout=60)[1].startswith("timeout")
    assert [equal for equal, _ in got] == [expected for _, _, expected in cases]


def _child(queue: Any) -> None:
    queue.put(math_equal(_boxed(r"\frac{\sqrt{2}}{2}"), r"\sqrt{2}/2"))


def test_works_in_a_forked_daemonic_process() -> None:
    """Daemonic processes may not start multiprocessing children; our workers are plain subprocesses,
    and a forked child starts its own instead of sharing the parent's pipes."""
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    process = ctx.Process(target=_child, args=(queue,), daemon=True)
    process.start()
    try:
        assert queue.get(timeout=60) == (True, "correct")
    finally:
        process.join(timeout=10)
    assert math_equal(_boxed("7"), "7.0")[0]  # the parent's pool is untouched


def test_a_private_pool_with_one_worker_serves_concurrent_callers() -> None:
    pool = MathVerifierPool(max_workers=1)
    try:
        with ThreadPoolExecutor(max_workers=3) as threads:
            got = list(threads.map(lambda g: math_equal(_boxed("0.25"), g, pool=pool), [r"\frac14", "0.5", "1/4"]))
        assert [equal for equal, _ in got] == [True, False, True]
    finally:
        pool.close()
    assert "unavailable" in math_equal(_boxed("0.25"), r"\frac14", pool=pool)[1]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=200), boxed=st.booleans(), gold=st.sampled_from(["3", r"\frac{1}{2}", r"(-\infty, 3]"]))
def test_arbitrary_text_never_raises(text: str, boxed: bool, gold: str) -> None:
    equal, reason = math_equal("\\boxed{" + text + "}" if boxed else text, gold, timeout=2.0)
    assert isinstance(equal, bool) and isinstance(reason, str) and reason


# --- the task ------------------------------------------------------------------------------------


def test_registered_and_config_validated() -> None:
    assert TASKS.get("math") is MathTask
    with pytest.raises(ValidationError, match="timeout"):
        make_task("math", {"timeout": 0})
    with pytest.raises(ValidationError, match="pathh"):
        make_task("math", {"pathh": "x.jsonl"})


def test_builtin_demonstrations_all_verify() -> None:
    task = _task()
    assert task.size("train") + task.size("test") >= 30
    for split in ("train", "test"):
        for index in range(task.size(split)):
            problem = task.problem(split, index)
            assert problem.prompt.endswith("Put the final answer in \\boxed{}.\n")
            verdict = task.verify(problem, task.target_text(problem))
            assert verdict.correct, (problem, verdict)
            assert not task.verify(problem, "I do not know.").correct


def test_builtin_set_is_deterministic_and_splits_are_disjoint() -> None:
    a, b = _task(), _task()
    for split in ("train", "test"):
        assert a.problems(split, 2 * a.size(split)) == b.problems(split, 2 * b.size(split))
    train = {p.prompt for p in a.distinct_problems("train", a.size("train"))}
    test = {p.prompt for p in a.distinct_problems("test", a.size("test"))}
    assert train and test and not train & test
    for prompt in train:
        assert split_of(prompt.split("\nPut the final")[0], 0, 0.1) == "train"
    # Each pass over a split is a reshuffle of the same problems.
    n = a.size("train")
    first, second = a.problems("train", n), a.problems("train", n, start=n)
    assert sorted(p.prompt for p in first) == sorted(p.prompt for p in second)
    assert _task(seed=1).problems("train", 5) != a.problems("train", 5)


def test_wrong_answers_and_garbage_are_judged_not_raised() -> None:
    task = _task()
    problem = Problem(id="p", prompt="1+1?", answer="2")
    assert task.verify(problem, r"\boxed{2}").correct
    wrong = task.verify(problem, r"\boxed{3}")
    assert not wrong.correct and wrong.score == 0.0 and "!=" in wrong.reason
    assert task.verify(problem, None).reason == "not text"  # type: ignore[arg-type]


def test_loads_a_jsonl_file(tmp_path: Path) -> None:
    rows = [
        {"problem": "What is 1+1?", "solution": "1+1=2.\nSo $\\boxed{2}$."},
        {"problem": "Halve 1.", "solution": "Half of one.", "answer": "\\frac{1}{2}", "level": "Level 1"},
        {"problem": "Ratio?", "answer": "0.25"},
        {"problem": "No answer at all", "solution": "Nothing boxed."},
    ]
    path = tmp_path / "math.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    task = _task(path=str(path), test_fraction=0.0)
    assert task.size("train") == 3 and task.size("test") == 0
    by_prompt = {p.prompt.split("\n")[0]: p for p in task.problems("train", 3)}
    one = by_prompt["What is 1+1?"]
    assert one.answer == "2" and one.demonstration == ("1+1=2.", "So $\\boxed{2}$.")
    half = by_prompt["Halve 1."]
    assert half.answer == r"\frac{1}{2}" and half.metadata["level"] == "Level 1"
    assert half.demonstration == ("Half of one.", "The final answer is $\\boxed{\\frac{1}{2}}$.")
    assert task.verify(half, task.target_text(half)).correct
    assert by_prompt["Ratio?"].demonstration is None
    with pytest.raises(ValueError, match="no test problems"):
        task.problem("test", 0)


def test_missing_file_and_bad_rows_fail_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        _task(path=str(tmp_path / "nowhere.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question_text": "?", "answer": "1"}) + "\n")
    with pytest.raises(ValueError, match="no 'problem' text"):
        _task(path=str(bad))
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"problem": "x", "answer": "1"}\n{oops\n')
    with pytest.raises(ValueError, match="line 2"):
        _task(path=str(broken))
