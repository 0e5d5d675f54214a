"""reasoning-gym adapter: config checks, short prompts, disjoint splits, and safe verification."""

from __future__ import annotations

import builtins
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from selfimprove.tasks import TASKS, Problem, Verdict, make_task
from selfimprove.tasks import rgym
from selfimprove.tasks.base import split_of
from selfimprove.tasks.rgym import (
    SCORER_ALLOW_LIST,
    SHORT_TEMPLATES,
    ReasoningGymTask,
    allowed_scorer,
    candidates,
    is_numeric_answer,
    normalise,
)

SMALL = {"min_terms": 2, "max_terms": 3, "min_digits": 1, "max_digits": 2}


def _task(**params: Any) -> ReasoningGymTask:
    task = make_task("reasoning_gym", params)
    assert isinstance(task, ReasoningGymTask)
    return task


# --- config ----------------------------------------------------------------------------------


def test_registered_with_defaults() -> None:
    assert TASKS.get("reasoning_gym") is ReasoningGymTask
    task = _task()
    assert task.config.dataset == "chain_sum" and task.config.dataset_config == {}
    assert task.template == SHORT_TEMPLATES["chain_sum"] == "{expression} ="
    assert {"chain_sum", "basic_arithmetic"} <= set(SHORT_TEMPLATES)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"dataset": "countdown"}, "use the 'countdown' task"),
        ({"dataset": "puzzle24"}, "use the 'countdown' task"),
        ({"dataset": "no_such_dataset"}, "unknown reasoning-gym dataset 'no_such_dataset'"),
        ({"dataset_config": {"seed": 3}}, "must not set 'seed'"),
        ({"dataset_config": {"size": 3}}, "must not set 'size'"),
        ({"dataset_config": {"bogus": 1}}, "bad dataset_config for 'chain_sum'"),
        ({"dataset_config": {"min_terms": 0}}, "min_terms must be positive"),
        ({"prompt_template": "{entry[0]}"}, "plain names"),
        ({"partial_reward": -1}, "partial_reward"),
        ({"datasett": "chain_sum"}, "datasett"),
    ],
)
def test_bad_config_fails_with_a_clear_error(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        make_task("reasoning_gym", params)


def test_describe() -> None:
    text = _task(dataset_config=SMALL).describe()
    assert "reasoning-gym 'chain_sum'" in text and "{expression} =" in text and "never evaluated" in text


# --- generation ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params",
    [
        {"dataset_config": SMALL},
        {"dataset": "basic_arithmetic", "dataset_config": {"max_terms": 3, "max_digits": 2}},
        {"dataset": "spell_backward"},
        {"dataset": "word_sorting"},
        {"dataset": "leg_counting"},
    ],
)
def test_problems_are_deterministic_disjoint_and_demonstrations_verify(params: dict[str, Any]) -> None:
    task = _task(**params)
    train, test = task.problems("train", 60), task.problems("test", 12)
    assert train == _task(**params).problems("train", 60)
    assert task.problem("test", 9) == test[9] and task.problem("train", 33) == train[33]
    train_questions = {p.metadata["entry"]["question"] for p in train}
    test_questions = {p.metadata["entry"]["question"] for p in test}
    assert not train_questions & test_questions
    assert all(split_of(q, 0, 0.1) == "test" for q in test_questions)
    for problem in train + test:
        assert problem.answer == problem.metadata["entry"]["answer"]
        assert task.verify(problem, task.target_text(problem)) == Verdict.right(), problem


def test_short_prompts_for_arithmetic() -> None:
    problem = _task(dataset_config=SMALL).problem("train", 0)
    assert re.fullmatch(r"\d+( [-+] \d+)+ =", problem.prompt)
    assert problem.id == "rg-chain_sum-train-0" and problem.demonstration == (problem.answer,)
    original = _task(dataset_config=SMALL, prompt_template="{question}").problem("train", 0)
    assert original.prompt.startswith("State the final answer") and original.answer == problem.answer
    custom = _task(dataset_config=SMALL, prompt_template="{expression}=? ({num_terms} terms)").problem("train", 0)
    assert custom.prompt.startswith(problem.prompt[:-2]) and "terms)" in custom.prompt


def test_unknown_template_field_is_a_clear_error() -> None:
    task = _task(dataset="spell_backward", prompt_template="{expression}")
    with pytest.raises(ValueError, match="field\\(s\\) expression not available.*word"):
        task.problem("train", 0)


def test_seeds_and_settings_change_the_stream() -> None:
    a = [p.prompt for p in _task(dataset_config=SMALL).problems("train", 30)]
    b = [p.prompt for p in _task(dataset_config=SMALL, seed=1).problems("train", 30)]
    assert sum(x != y for x, y in zip(a, b)) > 20
    big = _task(dataset_config={"min_digits": 3, "max_digits": 3}).problem("train", 0)
    assert all(len(n) == 3 for n in re.findall(r"\d+", big.prompt))


def test_bad_requests() -> None:
    task = _task(dataset_config=SMALL)
    with pytest.raises(ValueError, match="unknown split"):
        task.problem("dev", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="index"):
        task.problem("train", -2)
    with pytest.raises(ValueError, match="test split is empty"):
        _task(dataset_config=SMALL, test_fraction=0.0).problem("test", 0)


def test_stream_spans_chunks() -> None:
    task = _task(dataset_config=SMALL, test_fraction=0.5)
    problem = task.problem("train", 600)  # beyond the first chunk of the stream
    assert problem.metadata["position"] >= rgym.CHUNK
    assert task.verify(problem, problem.answer).correct


# --- verification ----------------------------------------------------------------------------


def test_helpers() -> None:
    assert is_numeric_answer("-12") and is_numeric_answer("3.5") and not is_numeric_answer("3/4")
    assert not is_numeric_answer("reyornac") and not is_numeric_answer("1e5")
    assert normalise("  a \n b. ") == "a b" and normalise("AbC", case_sensitive=False) == "abc"
    assert candidates("x <answer> 5 </answer> y <answer>6</answer>") == ["6"]
    assert candidates("work\nThe answer is: cat\ncat") == ["work\nThe answer is: cat\ncat", "cat", "cat"]


def test_numeric_answers() -> None:
    task = _task(dataset_config=SMALL, partial_reward=0.2)
    problem = task.problem("train", 0)
    gold = int(problem.answer)
    for text in (f"{gold}", f" {gold}\n", f"The answer is {gold}.", f"<answer>{gold}</answer>", f"#### {gold}"):
        assert task.verify(problem, text) == Verdict.right(), text
    assert task.verify(problem, f"{gold + 1}") == Verdict(0.2, False, f"wrong answer {gold + 1}")
    assert task.verify(problem, "") == Verdict.wrong("empty answer")
    assert task.verify(problem, "no idea") == Verdict.wrong("no answer found")


def _entry_problem(task: ReasoningGymTask) -> Problem:
    return task.problem("train", 0)


def test_string_answers_match_exactly_after_normalising() -> None:
    task = _task(dataset="spell_backward")
    problem = _entry_problem(task)
    gold = problem.answer
    assert task.verify(problem, f"  {gold} \n") == Verdict.right()
    assert task.verify(problem, f"thinking...\nThe answer is {gold}.") == Verdict.right()
    assert task.verify(problem, f"<answer>{gold}</answer>") == Verdict.right()
    assert task.verify(problem, f"{gold}<eos>junk") == Verdict.right()
    assert not task.verify(problem, f"{gold}x").correct


def test_partial_credit_of_the_dataset_scorer_is_never_correct() -> None:
    task = _task(dataset="spell_backward")
    problem = _entry_problem(task)
    gold = problem.answer
    dataset = task._stream.dataset(problem.metadata["position"])
    partial = gold[:-1] + ("a" if gold[-1] != "a" else "b")
    assert 0 < dataset.score_answer(partial, problem.metadata["entry"]) < 1
    assert task.verify(problem, partial) == Verdict.wrong("answer does not match")


def test_allow_listed_scorer_widens_matching() -> None:
    task = _task(dataset="word_sorting")
    problem = _entry_problem(task)
    squeezed = problem.answer.replace(", ", ",")
    assert normalise(squeezed) != normalise(problem.answer)
    assert task.verify(problem, squeezed) == Verdict.right("correct (dataset scorer)")
    assert not _task(dataset="word_sorting", use_dataset_scorer=False).verify(problem, squeezed).correct
    # Case: reasoning-gym's spell_backward scorer lower-cases; our own matching is case-sensitive.
    spell = _task(dataset="spell_backward")
    p = _entry_problem(spell)
    assert spell.verify(p, p.answer.upper()).correct
    assert not _task(dataset="spell_backward", use_dataset_scorer=False).verify(p, p.answer.upper()).correct
    assert _task(dataset="spell_backward", use_dataset_scorer=False, case_sensitive=False).verify(
        p, p.answer.upper()
    ).correct


def test_scorer_exceptions_are_a_wrong_answer() -> None:
    task = _task(dataset="prime_factorization")
    problem = _entry_problem(task)
    assert task.verify(problem, problem.answer.replace(" × ", "×")) == Verdict.right("correct (dataset scorer)")
    assert task.verify(problem, "2 × x") == Verdict.wrong("answer does not match")  # int("x") raises inside


def test_scorers_outside_the_allow_list_are_never_called(monkeypatch: pytest.MonkeyPatch) -> None:
    from reasoning_gym.factory import DATASETS

    def forbidden(*args: object, **kwargs: object) -> float:
        raise AssertionError("not allow-listed: must not be called")

    assert "leg_counting" not in SCORER_ALLOW_LIST and "number_sorting" not in SCORER_ALLOW_LIST
    evaluating = {"countdown", "puzzle24", "polynomial_multiplication", "simple_integration", "n_queens"}
    assert not evaluating & set(SCORER_ALLOW_LIST)
    task = _task(dataset="caesar_cipher")
    monkeypatch.setattr(DATASETS["caesar_cipher"][0], "score_answer", forbidden)
    problem = _entry_problem(task)
    assert task.verify(problem, problem.answer).correct
    assert not task.verify(problem, "something else").correct


def test_unverified_version_disables_the_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    task = _task(dataset="word_sorting")
    problem = _entry_problem(task)
    dataset = task._stream.dataset(problem.metadata["position"])
    assert allowed_scorer("word_sorting", dataset) is not None
    assert allowed_scorer("leg_counting", dataset) is None
    monkeypatch.setattr(rgym, "_rg_version", lambda: "99.0")
    assert allowed_scorer("word_sorting", dataset) is None
    assert not task.verify(problem, problem.answer.replace(", ", ",")).correct
    assert task.verify(problem, problem.answer).correct


def test_verify_never_evaluates(monkeypatch: pytest.MonkeyPatch) -> None:
    tasks = [_task(dataset_config=SMALL), _task(dataset="word_sorting"), _task(dataset="spell_backward")]
    problems = [_entry_problem(t) for t in tasks]

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("model text must not be evaluated")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    for task, problem in zip(tasks, problems):
        assert task.verify(problem, problem.answer).correct
        assert not task.verify(problem, "__import__('os').system('echo hi')").correct


def test_non_text_and_huge_text() -> None:
    task = _task(dataset="word_sorting")
    problem = _entry_problem(task)
    assert task.verify(problem, None) == Verdict.wrong("not text")  # type: ignore[arg-type]
    assert not task.verify(problem, "a, " * 400_000).correct


_TASKS = [
    _task(dataset_config=SMALL, partial_reward=0.2),
    _task(dataset="word_sorting"),
    _task(dataset="spell_backward"),
]
_PROBLEMS = [(t, _entry_problem(t)) for t in _TASKS]


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(st.text(max_size=300), st.text(alphabet="0123456789-+., <answer>/\n", max_size=200)),
    st.sampled_from(range(len(_PROBLEMS))),
)
def test_verify_never_raises(text: str, which: int) -> None:
    task, problem = _PROBLEMS[which]
    verdict = task.verify(problem, text)
    assert isinstance(verdict, Verdict) and verdict.score in (0.0, 0.2, 1.0)
    assert verdict.correct == (verdict.score == 1.0) and verdict.reason != "verifier error"
