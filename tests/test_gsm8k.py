"""GSM8K files (JSONL, JSON, parquet, the built-in sample) and reasoning-gym's GSM-symbolic."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from selfimprove.tasks import TASKS, Problem, Verdict, make_task
from selfimprove.tasks.base import split_of
from selfimprove.tasks.gsm8k import (
    DEFAULT_TEMPLATE,
    RG_SUFFIX,
    SAMPLE_PATH,
    GSM8KTask,
    GSMSymbolicTask,
    split_solution,
    strip_calculations,
)

ROWS = [
    {
        "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
        "in May. How many clips did Natalia sell altogether in April and May?",
        "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72",
    },
    {
        "question": "A club has 1,000 members and 250 leave. How many stay?",
        "answer": "1000-250=<<1000-250=750>>750\n#### 750",
    },
    {"question": "Split $3 among 4 people. How much each?", "answer": "3/4 = <<3/4=0.75>>0.75\n#### 0.75"},
    {"question": "It was 2 degrees and fell by 5. What is it now?", "answer": "2-5=<<2-5=-3>>-3\n\n#### -3"},
    {
        "question": "A town has 1200 people and 234 more arrive. How many now?",
        "answer": "1200+234=1434\n#### 1,434",
    },
]


def _gsm(**params: Any) -> GSM8KTask:
    task = make_task("gsm8k", params)
    assert isinstance(task, GSM8KTask)
    return task


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _all(task: GSM8KTask, split: str) -> list[Problem]:
    return task.problems(split, task.size(split))  # type: ignore[arg-type]


# --- parsing ---------------------------------------------------------------------------------


def test_split_solution_strips_annotations_and_keeps_the_answer_line() -> None:
    lines, gold = split_solution(ROWS[0]["answer"])
    assert lines == (
        "Natalia sold 48/2 = 24 clips in May.",
        "Natalia sold 48+24 = 72 clips altogether in April and May.",
        "#### 72",
    )
    assert gold == "72"
    assert split_solution("x\n\n#### 1,434\n")[1] == "1434"
    assert split_solution("#### -3")[1] == "-3"
    assert strip_calculations("a <<1+1=2>>2 b <<3*3=9>>9") == "a 2 b 9"
    for bad in ("no marker 72", "#### ", "#### many"):
        with pytest.raises(ValueError, match="####"):
            split_solution(bad)


# --- the built-in sample ---------------------------------------------------------------------


def test_builtin_sample_loads_and_every_demonstration_verifies() -> None:
    assert SAMPLE_PATH.is_file()
    task = _gsm()
    assert task.size("train") + task.size("test") == 32
    for problem in _all(task, "train") + _all(task, "test"):
        assert problem.demonstration is not None and problem.demonstration[-1] == f"#### {problem.answer}"
        assert not any("<<" in line or not line.strip() for line in problem.demonstration)
        assert problem.prompt.endswith("\nEnd with: #### <number>\n")
        assert task.verify(problem, task.target_text(problem)) == Verdict.right()
    assert task.problem("train", 0).metadata["source"] == "built-in sample"


def test_builtin_sample_split_column() -> None:
    task = _gsm(split_field="split")
    assert (task.size("train"), task.size("test")) == (24, 8)
    train = {p.prompt for p in _all(task, "train")}
    test = {p.prompt for p in _all(task, "test")}
    assert len(train) == 24 and len(test) == 8 and not train & test


def test_hash_split_is_disjoint_and_follows_split_of() -> None:
    task = _gsm(test_fraction=0.3, seed=2)
    train, test = _all(task, "train"), _all(task, "test")
    assert train and test and not {p.prompt for p in train} & {p.prompt for p in test}
    for problem in test:
        question = problem.prompt[: -len(DEFAULT_TEMPLATE) + len("{question}")]
        assert split_of(question, 2, 0.3) == "test"


def test_random_access_and_wrap_around() -> None:
    task = _gsm()
    n = task.size("train")
    assert task.problem("train", 5) == task.problems("train", 10)[5] == _gsm().problem("train", 5)
    assert task.problem("train", n + 3) == task.problem("train", 3)
    assert task.problem("train", n + 3).id == "gsm8k-train-3"
    with pytest.raises(ValueError, match="distinct"):
        task.distinct_problems("train", n + 1)
    assert len(task.distinct_problems("train", n)) == n


def test_describe() -> None:
    text = _gsm().describe()
    assert text.startswith("GSM8K:") and "built-in sample" in text and "####" in text
    assert "'split' column" in _gsm(split_field="split").describe()


# --- files -----------------------------------------------------------------------------------


def test_jsonl_file(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "gsm.jsonl", ROWS)
    task = _gsm(path=str(path), test_fraction=0.0)
    problems = _all(task, "train")
    assert [p.answer for p in problems] == ["72", "750", "0.75", "-3", "1434"]
    assert problems[0].prompt == ROWS[0]["question"] + "\nEnd with: #### <number>\n"
    assert problems[0].metadata == {"row": 0, "source": str(path), "solution": ROWS[0]["answer"]}
    for problem in problems:
        assert task.verify(problem, task.target_text(problem)).correct
    assert task.verify(problems[1], "They stay: #### 750 members").correct
    assert task.verify(problems[4], "The answer is 1,434.").correct
    assert task.verify(problems[2], "\\boxed{\\frac{3}{4}}").correct
    with pytest.raises(ValueError, match="no test problems"):
        task.problem("test", 0)


def test_json_list_file_and_split_field(tmp_path: Path) -> None:
    rows = [dict(row, part="test" if i < 2 else "train") for i, row in enumerate(ROWS)]
    rows.append(dict(ROWS[0], question="ignored?", part="validation"))
    path = tmp_path / "gsm.json"
    path.write_text(json.dumps(rows), encoding="utf-8")
    task = _gsm(path=str(path), split_field="part")
    assert (task.size("train"), task.size("test")) == (3, 2)
    assert [p.answer for p in _all(task, "test")] == ["72", "750"]


def test_separate_test_file(tmp_path: Path) -> None:
    train_path = _write_jsonl(tmp_path / "train.jsonl", ROWS)
    test_path = _write_jsonl(tmp_path / "test.jsonl", ROWS[3:] + [dict(ROWS[0], question="A new one?")])
    task = _gsm(path=str(train_path), test_path=str(test_path))
    assert (task.size("train"), task.size("test")) == (3, 3)  # the two shared questions stay in test
    assert [p.answer for p in _all(task, "test")] == ["-3", "1434", "72"]
    assert _all(task, "test")[2].metadata == {"row": 2, "source": f"{train_path} + {test_path}", "solution": ROWS[0]["answer"]}
    assert "split by file" in task.describe()
    with pytest.raises(ValidationError, match="not both"):
        _gsm(path=str(train_path), test_path=str(test_path), split_field="split")
    with pytest.raises(ValidationError, match="needs path"):
        _gsm(test_path=str(test_path))
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        _gsm(path=str(train_path), test_path=str(tmp_path / "missing.jsonl"))


def test_parquet_file(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "gsm.parquet"
    pd.DataFrame(ROWS).to_parquet(path)
    task = _gsm(path=str(path), test_fraction=0.0)
    assert [p.answer for p in _all(task, "train")] == ["72", "750", "0.75", "-3", "1434"]
    from_jsonl = _all(_gsm(path=str(_write_jsonl(tmp_path / "same.jsonl", ROWS)), test_fraction=0.0), "train")
    for a, b in zip(_all(task, "train"), from_jsonl, strict=True):
        assert (a.id, a.prompt, a.answer, a.demonstration) == (b.id, b.prompt, b.answer, b.demonstration)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="GSM8K file not found.*nope.jsonl"):
        _gsm(path=str(tmp_path / "nope.jsonl"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"q": "x", "answer": "#### 1"}\n', "no column(s) 'question'"),
        ('{"question": "x"}\n', "no column(s) 'answer'"),
        ('{"question": "x", "answer": "the answer is 1"}\n', "record 0: the answer does not end with '####"),
        ('{"question": "x", "answer": "#### 1"}\n{oops\n', "line 2 is not valid JSON"),
        ("[1, 2]\n", "record 0 is not an object"),
        ("\n\n", "no records"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(message)):
        _gsm(path=str(path))


def test_parquet_without_columns(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    path = tmp_path / "bad.parquet"
    pd.DataFrame({"prompt": ["x"], "solution": ["#### 1"]}).to_parquet(path)
    with pytest.raises(ValueError, match=r"no column\(s\) 'question', 'answer'"):
        _gsm(path=str(path))


def test_other_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text("question,answer\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown file type '.csv'"):
        _gsm(path=str(path))
    jsonl = _write_jsonl(tmp_path / "gsm.jsonl", ROWS)
    with pytest.raises(ValueError, match="no column\\(s\\) 'part'"):
        _gsm(path=str(jsonl), split_field="part")


def test_file_changes_are_picked_up(tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "gsm.jsonl", ROWS[:2])
    assert _gsm(path=str(path), test_fraction=0.0).size("train") == 2
    _write_jsonl(path, ROWS)
    assert _gsm(path=str(path), test_fraction=0.0).size("train") == 5


# --- config and verifier ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"prompt_template": "Q: {question} {answer}"}, "may only use {question}"),
        ({"prompt_template": "no field"}, "must contain {question}"),
        ({"prompt_template": "{question.upper}"}, "plain names"),
        ({"prompt_template": "{question"}, "bad prompt_template"),
        ({"partial_reward": 3}, "partial_reward"),
        ({"paht": "x"}, "paht"),
    ],
)
def test_bad_config(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        make_task("gsm8k", params)


def test_custom_template() -> None:
    task = _gsm(prompt_template="Q: {question}\nA:")
    problem = task.problem("train", 0)
    assert problem.prompt.startswith("Q: ") and problem.prompt.endswith("\nA:")


def test_verify_scores() -> None:
    task = _gsm(partial_reward=0.2)
    problem = task.problem("train", 0)
    gold = problem.answer
    assert task.verify(problem, f"blah\n#### {gold}") == Verdict.right()
    assert task.verify(problem, f"#### {float(gold) + 1}").score == 0.2
    assert task.verify(problem, "I give up") == Verdict.wrong("no answer found")
    assert task.verify(problem, None) == Verdict.wrong("not text")  # type: ignore[arg-type]


@settings(max_examples=150, deadline=None)
@given(st.one_of(st.text(max_size=300), st.text(alphabet="0123456789#,.$ \n\\boxed{}answer:", max_size=200)))
def test_verify_never_raises(text: str) -> None:
    task = _gsm(partial_reward=0.2)
    verdict = task.verify(task.problem("train", 1), text)
    assert isinstance(verdict, Verdict) and verdict.score in (0.0, 0.2, 1.0)
    assert verdict.correct == (verdict.score == 1.0) and verdict.reason != "verifier error"


# --- gsm_symbolic ----------------------------------------------------------------------------


def _sym(**params: Any) -> GSMSymbolicTask:
    task = make_task("gsm_symbolic", params)
    assert isinstance(task, GSMSymbolicTask)
    return task


def test_gsm_symbolic_registered_and_described() -> None:
    assert TASKS.get("gsm_symbolic") is GSMSymbolicTask and TASKS.get("gsm8k") is GSM8KTask
    assert _sym().describe().startswith("GSM-symbolic:")


def test_gsm_symbolic_problems() -> None:
    task = _sym()
    train, test = task.problems("train", 60), task.problems("test", 15)
    assert not {p.prompt for p in train} & {p.prompt for p in test}
    for problem in train + test:
        assert RG_SUFFIX not in problem.prompt and problem.prompt.endswith("#### <number>\n")
        assert float(problem.answer) == float(problem.answer)  # a plain number
        assert problem.demonstration is not None and problem.demonstration[-1].startswith("####")
        assert task.verify(problem, task.target_text(problem)) == Verdict.right()
    for problem in test:
        question = problem.prompt[: -len(DEFAULT_TEMPLATE) + len("{question}")]
        assert split_of(question, 0, 0.1) == "test"


def test_gsm_symbolic_is_deterministic_with_random_access() -> None:
    task = _sym(seed=3)
    assert task.problem("test", 7) == _sym(seed=3).problems("test", 8)[7]
    assert task.problem("train", 20) == task.problems("train", 21)[20]
    assert _sym(seed=4).problem("train", 0).prompt != task.problem("train", 0).prompt


def test_gsm_symbolic_never_uses_the_dataset_scorer(monkeypatch: pytest.MonkeyPatch) -> None:
    from reasoning_gym.factory import DATASETS

    def forbidden(*args: object, **kwargs: object) -> float:
        raise AssertionError("reasoning-gym's scorer must not see model text")

    monkeypatch.setattr(DATASETS["gsm_symbolic"][0], "score_answer", forbidden)
    task = _sym(partial_reward=0.2)
    problem = task.problem("train", 0)
    assert task.verify(problem, f"#### {problem.answer}").correct
    assert task.verify(problem, "__import__('os') #### 1e999").score in (0.0, 0.2)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=200))
def test_gsm_symbolic_verify_never_raises(text: str) -> None:
    task = _sym()
    verdict = task.verify(task.problem("train", 0), text)
    assert isinstance(verdict, Verdict) and verdict.reason != "verifier error"
