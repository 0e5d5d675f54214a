"""Vote keys of the tasks whose answer is not a final number: function calls and code.

Two answers share a key exactly when they are the same answer for the task (same calls for the
verifier; same program up to layout), and a majority vote over them picks the right group.
"""

from __future__ import annotations

import json

import pytest

from selfimprove.search.vote import majority_vote
from selfimprove.tasks.plugins import make_task
from selfimprove.tasks.function_call import calls_key


def calls(*pairs: tuple[str, dict]) -> str:
    return json.dumps([{"name": n, "arguments": a} for n, a in pairs])


def test_function_calls_key_by_names_and_arguments_not_by_the_last_number() -> None:
    task = make_task("function_call")
    problem = task.problem("test", 0)
    key = lambda text: task.answer_key(problem, text)  # noqa: E731
    paris, rome = calls(("get_weather", {"city": "Paris", "days": 3})), calls(("get_weather", {"city": "Rome", "days": 3}))
    assert key(paris) != key(rome)  # the default key (last number: 3) would merge them
    assert key(paris) == key('[{"arguments": {"days": 3.0, "city": "Paris"}, "name": "get_weather"}]')  # key order, 3 == 3.0
    assert key(paris) == key('{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}\ntrailing line')  # one call
    assert key(paris) == key("```json\n" + paris + "\n```")
    assert key(paris) != key(calls(("get_weather", {"city": "paris", "days": 3})))  # strings exactly
    assert key(calls(("f", {"x": True}))) != key(calls(("f", {"x": 1})))  # booleans are not numbers
    assert key(calls(("f", {"x": [1, 2]}))) != key(calls(("f", {"x": [2, 1]})))  # lists in order
    two = calls(("a", {"x": 1}), ("b", {"y": {"q": 1, "p": 2}}))
    assert key(two) == key(calls(("b", {"y": {"p": 2, "q": 1.0}}), ("a", {"x": 1})))  # calls are a multiset
    assert key(two) != key(calls(("a", {"x": 1})))
    for garbage in ("not json", "[]", '[{"name": "f"}]', "42", ""):
        assert key(garbage) is None, garbage


def test_function_call_keys_agree_with_the_verifier() -> None:
    task = make_task("function_call")
    for index in range(20):
        problem = task.problem("test", index)
        gold = problem.answer
        reordered = json.dumps(list(reversed(json.loads(gold))), indent=1)
        assert task.verify(problem, reordered).correct
        assert task.answer_key(problem, reordered) == task.answer_key(problem, gold) == calls_key(gold)


def test_a_vote_over_function_calls_picks_the_most_common_calls() -> None:
    task = make_task("function_call")
    problem = task.problem("test", 1)
    gold = json.loads(problem.answer)
    wrong = [{**gold[0], "arguments": {**gold[0]["arguments"], "extra": 1}}]
    answers = [json.dumps(wrong), json.dumps(gold), json.dumps(gold, indent=2), "garbage", json.dumps(list(reversed(gold)))]
    vote = majority_vote([task.answer_key(problem, a) for a in answers])
    assert vote.index == 1 and vote.votes[vote.key] == 3 and task.verify(problem, answers[vote.index]).correct


@pytest.fixture(scope="module")
def code_task():
    return make_task("code")


def test_code_keys_by_the_program_with_whitespace_collapsed(code_task) -> None:
    problem = code_task.problem("test", 0)
    key = lambda text: code_task.answer_key(problem, text)  # noqa: E731
    bare = "def f(xs):\n    return sorted(set(xs))[-2]\n"
    assert key(bare) == "def f(xs): return sorted(set(xs))[-2]"
    assert key(bare) == key("Here it is:\n```python\ndef f(xs):\n  return   sorted(set(xs))[-2]\n```\nThat returns 2.")
    assert key(bare) == key(bare + "<eos>junk after the end")
    assert key(bare) != key("def f(xs):\n    return sorted(xs)[-2]\n")  # a different program, same last number
    assert key("") is None and key("   \n") is None


def test_humaneval_completions_key_with_their_prompt(tmp_path) -> None:
    record = {"task_id": "H/0", "prompt": "def add(a, b):\n    \"\"\"Add.\"\"\"\n", "canonical_solution": "    return a + b\n",
              "test": "def check(c):\n    assert c(1, 2) == 3\n", "entry_point": "add"}
    path = tmp_path / "he.jsonl"
    path.write_text(json.dumps(record) + "\n")
    task = make_task("code", {"path": str(path), "test_fraction": 1.0})
    problem = task.problem("test", 0)
    completion = task.answer_key(problem, "    return a + b\n")
    assert completion == task.answer_key(problem, 'def add(a, b):\n    """Add."""\n    return a + b\n')  # body or whole function
    assert task.answer_key(problem, "") is None  # the prompt alone is no program
