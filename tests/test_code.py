"""The code task: loading MBPP/HumanEval JSONL, splits, prompts, and verification in the sandbox."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from selfimprove.tasks import make_task
from selfimprove.tasks.base import TASKS
from selfimprove.tasks.code import CodeConfig, CodeTask, extract_code, load_problems, parse_record

FAST = {"timeout_seconds": 2.0, "cpu_seconds": 1.0, "memory_mb": 256, "max_processes": 8}


@pytest.fixture(scope="module")
def task() -> CodeTask:
    return CodeTask(CodeConfig(**FAST))


def _all(task: CodeTask):
    return [task.problem(s, i) for s in ("train", "test") for i in range(task.size(s))]


def test_registered_and_built_from_settings():
    assert "code" in TASKS
    t = make_task("code", {"seed": 3, **FAST})
    assert isinstance(t, CodeTask)
    assert "sandbox" in t.describe()
    with pytest.raises(ValidationError):
        make_task("code", {"timeout": 3})  # unknown field
    with pytest.raises(ValidationError):
        make_task("code", {"format": "leetcode"})


def test_builtin_sample_splits_are_disjoint_and_deterministic(task):
    train = {task.problem("train", i).metadata["key"] for i in range(task.size("train"))}
    test = {task.problem("test", i).metadata["key"] for i in range(task.size("test"))}
    assert len(train) + len(test) == 24
    assert train and test and not train & test
    again = CodeTask(CodeConfig(**FAST))
    assert [again.problem("train", i) for i in range(5)] == [task.problem("train", i) for i in range(5)]
    other_seed = CodeTask(CodeConfig(seed=1, **FAST))
    assert [other_seed.problem("train", i).prompt for i in range(5)] != [task.problem("train", i).prompt
                                                                          for i in range(5)]


def test_random_access_wraps_around(task):
    n = task.size("train")
    assert task.problem("train", n + 2).prompt == task.problem("train", 2).prompt
    with pytest.raises(ValueError):
        task.problem("train", -1)
    with pytest.raises(ValueError):
        task.problem("valid", 0)  # type: ignore[arg-type]
    assert len(task.distinct_problems("test", task.size("test"))) == task.size("test")


def test_prompt_shows_the_text_and_a_test(task):
    p = task.problem("train", 0)
    tests = p.metadata["tests"]
    assert p.prompt.endswith(tests[0] + "\n")
    assert "Your code should pass this test:" in p.prompt
    assert tests[1] not in p.prompt
    three = CodeTask(CodeConfig(show_tests=3, **FAST)).problem("train", 0)
    assert all(t in three.prompt for t in tests) and "these tests" in three.prompt


def test_every_reference_solution_passes(task):
    problems = _all(task)
    verdicts = task.verify_many(problems, [task.target_text(p) for p in problems])
    assert all(v.correct and v.score == 1.0 for v in verdicts), [v.reason for v in verdicts if not v.correct]
    assert all(p.demonstration and p.answer.startswith("def ") for p in problems)


def test_wrong_answer_fails_with_the_failing_test(task):
    p = next(p for p in _all(task) if "add_numbers" in p.answer)
    v = task.verify(p, "def add_numbers(a, b):\n    return a - b\n")
    assert not v.correct and v.score == 0.0
    assert "test 1/3 failed: assert add_numbers(1, 2) == 3 -- got -1, expected 3" in v.reason


def test_fenced_answers_with_prose_are_extracted(task):
    p = next(p for p in _all(task) if "reverse_string" in p.answer)
    text = (
        "Here is my solution:\n```python\ndef reverse_string(s):\n    return s[::-1]\n```\n"
        "And an example:\n```\n>>> reverse_string('ab')\n```\n"
    )
    assert task.verify(p, text).correct
    assert task.verify(p, "def reverse_string(s):\n    return s[::-1]\n<eos>garbage that is not python").correct


def test_extract_code():
    assert extract_code("```python\nx = 1\n```") == "x = 1\n"
    assert extract_code("text\n```py\nx = 2\n```\nmore") == "x = 2\n"
    assert extract_code("```python\nprint(1)\n```\n```python\ndef f():\n    pass\n```") == "def f():\n    pass\n"
    assert extract_code("```python\ndef f():\n    return 1") == "def f():\n    return 1\n"  # unclosed fence
    assert extract_code("def f():\n    return 1\n<|im_end|>junk") == "def f():\n    return 1\n"
    assert extract_code("x = 3\n```bash\nls\n```") == "x = 3\n"


def test_garbage_answers_never_raise(task):
    p = task.problem("train", 0)
    for text in ("", "   ", "```python\n```", "I don't know.", "def (", "\x00\x01", "é" * 100):
        v = task.verify(p, text)
        assert not v.correct and v.reason
    assert task.verify(p, None).reason == "not text"  # type: ignore[arg-type]
    assert "too long" in task.verify(p, "x" * 30000).reason


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("import os\nwhile True:\n    os.fork()\n", ""),
        ("while True:\n    pass\n", "timed out"),
        ("x = bytearray(10**10)\n", "memory"),
        ("while True:\n    print('spam' * 1000)\n", "too much output"),
        ("import sys\nsys.exit(0)\n", "exited"),
        ("import os\nos._exit(0)\n", "before the tests"),
        ("import os\nos.kill(os.getppid(), 9)\n", ""),
        ("open('/tmp/escape', 'w').write('x')\n", ""),
    ],
    ids=["fork-bomb", "loop", "memory", "output", "sys-exit", "os-exit", "kill-parent", "write"],
)
def test_hostile_answers_score_zero(task, answer, expected):
    p = next(p for p in _all(task) if "add_numbers" in p.answer)
    v = task.verify(p, answer + "def add_numbers(a, b):\n    return a + b\n")
    assert not v.correct and v.score == 0.0
    assert expected in v.reason and v.reason


def _write_jsonl(path: Path, records: list[dict]) -> str:
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return str(path)


MBPP = [
    {
        "task_id": 11,
        "text": "Write a python function to remove first and last occurrence of a given character from the string.",
        "code": "def remove_Occ(s,ch): \r\n    for i in range(len(s)): \r\n        if (s[i] == ch): \r\n"
                "            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    for i in range(len(s) - 1,-1,-1):  \r\n"
                "        if (s[i] == ch): \r\n            s = s[0 : i] + s[i + 1:] \r\n            break\r\n    return s ",
        "test_list": ['assert remove_Occ("hello","l") == "heo"', 'assert remove_Occ("abcda","a") == "bcd"',
                      'assert remove_Occ("PHP","P") == "H"'],
        "test_setup_code": "",
        "challenge_test_list": [],
    },
    {
        "task_id": 12,
        "prompt": "Write a function to compute the square root.",
        "code": "import math\ndef root(x):\n    return math.sqrt(x)",
        "test_list": ["assert math.isclose(root(4), 2.0)"],
        "test_imports": ["import math"],
    },
]

HUMANEVAL = [
    {
        "task_id": "HumanEval/0",
        "prompt": 'def add_all(xs: list) -> int:\n    """Return the sum of xs.\n    >>> add_all([1, 2])\n    3\n    """\n',
        "canonical_solution": "    return sum(xs)\n",
        "test": "\n\nMETADATA = {}\n\n\ndef check(candidate):\n    assert candidate([1, 2]) == 3\n"
                "    assert candidate([]) == 0\n",
        "entry_point": "add_all",
    }
]


def test_mbpp_file(tmp_path):
    path = _write_jsonl(tmp_path / "mbpp.jsonl", MBPP)
    t = CodeTask(CodeConfig(path=path, test_fraction=0.0, **FAST))
    assert t.size("train") == 2 and t.size("test") == 0
    problems = [t.problem("train", i) for i in range(2)]
    assert all(t.verify(p, t.target_text(p)).correct for p in problems)
    occ = next(p for p in problems if "remove_Occ" in p.answer)
    assert "\r" not in occ.answer and occ.prompt.startswith("Write a python function")
    assert not t.verify(occ, "def remove_Occ(s, ch):\n    return s\n").correct
    with pytest.raises(ValueError, match="empty"):
        t.problem("test", 0)


def test_humaneval_file(tmp_path):
    path = _write_jsonl(tmp_path / "he.jsonl", HUMANEVAL)
    t = CodeTask(CodeConfig(path=path, format="humaneval", test_fraction=0.0, **FAST))
    p = t.problem("train", 0)
    assert p.prompt == HUMANEVAL[0]["prompt"]
    assert p.demonstration == ("    return sum(xs)",)
    assert t.verify(p, t.target_text(p)).correct  # the body continues the prompt
    full = "```python\ndef add_all(xs):\n    total = 0\n    for x in xs:\n        total += x\n    return total\n```"
    assert t.verify(p, full).correct  # a whole function replaces it
    v = t.verify(p, "    return len(xs)\n")
    assert not v.correct and "assert candidate([1, 2]) == 3 -- got 2, expected 3" in v.reason


def test_auto_format_mixed_file_and_errors(tmp_path):
    path = _write_jsonl(tmp_path / "mixed.jsonl", MBPP + HUMANEVAL)
    assert [p.format for p in load_problems(path)] == ["mbpp", "mbpp", "humaneval"]
    with pytest.raises(FileNotFoundError):
        CodeTask(CodeConfig(path=str(tmp_path / "missing.jsonl")))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "no tests"}\n')
    with pytest.raises(ValueError, match="line 1"):
        load_problems(bad)
    bad.write_text("not json\n")
    with pytest.raises(ValueError, match="not JSON"):
        load_problems(bad)
    with pytest.raises(ValueError, match="test_list"):
        parse_record({"text": "x", "code": "y", "test_list": []}, "mbpp")
    with pytest.raises(ValueError, match="entry_point"):
        parse_record({**HUMANEVAL[0], "entry_point": "not valid"}, "humaneval")
