"""Function calling: an exact-match verifier that survives hostile text, the seeded generator, APIGen files."""

from __future__ import annotations

import builtins
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
from selfimprove.tasks.function_call import (
    MAX_ANSWER_CHARS,
    TOOL_LIBRARY,
    FunctionCallConfig,
    FunctionCallTask,
    format_calls,
    judge_calls,
    load_apigen,
    problem_key,
)


def _task(**params: Any) -> FunctionCallTask:
    task = make_task("function_call", params)
    assert isinstance(task, FunctionCallTask)
    return task


def _assert_wrong(verdict: Verdict, reason: str) -> None:
    assert isinstance(verdict, Verdict)
    assert verdict.score == 0.0 and not verdict.correct
    assert reason in verdict.reason, verdict.reason


WEATHER = {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}}
ADD = {"name": "add", "arguments": {"a": 3, "b": 4}}
TOOLS = ["get_weather", "add", "multiply"]


def _judge(text: str, expected: Any = (WEATHER,), tools: Any = TOOLS) -> Verdict:
    return judge_calls(text, list(expected), tools)


# --- verifier: accepted answers ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '[{"name":"get_weather","arguments":{"city":"Paris","unit":"celsius"}}]',
        '[{"name": "get_weather", "arguments": {"unit": "celsius", "city": "Paris"}}]',  # argument order
        '{"name":"get_weather","arguments":{"city":"Paris","unit":"celsius"}}',  # one call, no list
        '  \n [{"arguments":{"city":"Paris","unit":"celsius"},"name":"get_weather"}]  \n',
        '```json\n[{"name":"get_weather","arguments":{"city":"Paris","unit":"celsius"}}]\n```',
        '```\n{"name":"get_weather","arguments":{"city":"Paris","unit":"celsius"}}\n```\nbye',
        '[{"name":"get_weather","arguments":{"city":"Paris","unit":"celsius"}}]<eos>junk',
        '[{"name":"get_weather","arguments":{"city":"Paris","unit":"celsius"}}]\nanother line ignored',
        '[{"name":"get_weather","arguments":{"city":"Paris","unit":"celsius"},"id":"x1"}]',  # extra key
        '[\n  {\n    "name": "get_weather",\n    "arguments": {"city": "Paris", "unit": "celsius"}\n  }\n]',
    ],
)
def test_accepted_answers(text: str) -> None:
    assert _judge(text) == Verdict.right()


def test_call_order_is_ignored_but_multiplicity_is_not() -> None:
    both = (WEATHER, ADD)
    assert _judge(format_calls([ADD, WEATHER]), both).correct
    assert _judge(format_calls([WEATHER, ADD]), both).correct
    _assert_wrong(_judge(format_calls([ADD, ADD]), both), "call 2: wrong tool add, expected get_weather")
    twice = (ADD, ADD)
    assert _judge(format_calls([ADD, ADD]), twice).correct
    _assert_wrong(_judge(format_calls([ADD]), twice), "expected 2 calls, got 1")


def test_numbers_compare_by_value_strings_exactly() -> None:
    assert _judge('[{"name":"add","arguments":{"a":3.0,"b":4}}]', (ADD,)).correct
    assert _judge('[{"name":"add","arguments":{"a":3e0,"b":4.00}}]', (ADD,)).correct
    as_float = [{"name": "add", "arguments": {"a": 1.0, "b": 2}}]
    assert judge_calls('{"name":"add","arguments":{"a":1,"b":2}}', as_float).correct
    _assert_wrong(_judge('[{"name":"add","arguments":{"a":"3","b":4}}]', (ADD,)), 'wrong value for a: got "3", expected 3')
    _assert_wrong(_judge('[{"name":"add","arguments":{"a":3.5,"b":4}}]', (ADD,)), "wrong value for a: got 3.5")
    flag = [{"name": "add", "arguments": {"a": 1, "b": True}}]
    _assert_wrong(judge_calls('{"name":"add","arguments":{"a":1,"b":1}}', flag), "wrong value for b: got 1, expected true")
    _assert_wrong(_judge('[{"name":"get_weather","arguments":{"city":"paris","unit":"celsius"}}]'),
                  'wrong value for city: got "paris", expected "Paris"')
    _assert_wrong(_judge('[{"name":"get_weather","arguments":{"city":"Paris ","unit":"celsius"}}]'),
                  "wrong value for city")


def test_nested_values_compare_structurally() -> None:
    expected = [{"name": "f", "arguments": {"xs": [1, 2, {"k": "v", "n": 1}]}}]
    assert judge_calls('[{"name":"f","arguments":{"xs":[1.0,2,{"n":1,"k":"v"}]}}]', expected).correct
    _assert_wrong(judge_calls('[{"name":"f","arguments":{"xs":[2,1,{"k":"v","n":1}]}}]', expected), "wrong value for xs")


def test_single_object_and_expected_as_json_string() -> None:
    expected = json.dumps([WEATHER])
    assert judge_calls(json.dumps(WEATHER), expected).correct
    assert judge_calls(json.dumps([WEATHER]), WEATHER).correct  # one expected call object
    assert judge_calls("[]", []).correct  # nothing to call, and nothing called


# --- verifier: rejected answers --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty answer"),
        ("  \n\t ", "empty answer"),
        ("<eos>[]", "empty answer"),
        ("get_weather(city='Paris', unit='celsius')", "not JSON"),
        ("[{'name': 'get_weather'}]", "not JSON"),
        ('[{"name":"get_weather","arguments":{"city":"Paris","unit":"celsius"}}', "not JSON"),
        ('[{"name":"get_weather","arguments":{"city":"Paris","unit":"celsius"}}] and more', "extra text"),
        ('Sure! [{"name":"get_weather","arguments":{"city":"Paris","unit":"celsius"}}]', "not JSON"),
        ('[{"name":"get_weather","arguments":{"city":"Paris","city":"Paris","unit":"celsius"}}]', "duplicate key"),
        ('[{"name":"add","arguments":{"a":NaN,"b":4}}]', "NaN is not allowed"),
        ('[{"name":"add","arguments":{"a":1e999,"b":4}}]', "number out of range"),
        ('[{"name":"add","arguments":{"a":' + "9" * 5000 + ',"b":4}}]', "not JSON"),
        ('"get_weather"', "not a list of calls (got a string)"),
        ("42", "not a list of calls (got a number)"),
        ("[1]", "call 1 is not an object (got a number)"),
        ('[{"arguments":{"city":"Paris","unit":"celsius"}}]', "call 1 has no name"),
        ('[{"name":"","arguments":{}}]', "call 1 has no name"),
        ('[{"name":7,"arguments":{}}]', "call 1: name is not a string"),
        ('[{"name":"get_weather"}]', "call 1 (get_weather) has no arguments"),
        ('[{"name":"get_weather","arguments":"{\\"city\\":\\"Paris\\"}"}]', "arguments is not an object (got a string)"),
        ('[{"name":"foo","arguments":{}}]', "unknown tool foo"),
        ('[{"name":"add","arguments":{"a":3,"b":4}}]', "wrong tool add, expected get_weather"),
        ('[{"name":"get_weather","arguments":{"city":"Paris"}}]', "missing argument unit"),
        ('[{"name":"get_weather","arguments":{"city":"Paris","unit":"celsius","days":3}}]', "unexpected argument days"),
        ('[{"name":"get_weather","arguments":{"city":"Rome","unit":"celsius"}}]',
         'wrong value for city: got "Rome", expected "Paris"'),
        ("[]", "expected 1 call, got 0"),
        (format_calls([WEATHER, WEATHER]), "expected 1 call, got 2"),
    ],
)
def test_rejected_answers(text: str, reason: str) -> None:
    _assert_wrong(_judge(text), reason)


def test_wrong_value_reason_names_the_numbers() -> None:
    _assert_wrong(_judge('{"name":"add","arguments":{"a":3,"b":5}}', (ADD,)), "wrong value for b: got 5, expected 4")
    _assert_wrong(_judge('[{"name":"add","arguments":{"a":3}}, {"name":"get_weather","arguments":{}}]', (ADD, WEATHER)),
                  "call 1 (add): missing argument b")


def test_unknown_tool_without_a_tool_list_means_not_expected() -> None:
    _assert_wrong(judge_calls('[{"name":"multiply","arguments":{"a":3,"b":4}}]', [ADD]), "unknown tool multiply")


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("[" * 100_000, "too long"),
        ("x" * 1_000_000, "too long"),
        ("[" * (MAX_ANSWER_CHARS - 10), "nesting too deep"),
        ("{" * 5000, "nesting too deep"),
        ('[{"name":"add","arguments":{"a":' + "[" * 40 + "]" * 40 + ',"b":4}}]', "nesting too deep"),
        ('[{"a":"' + "[" * 5000 + '"', "not JSON"),  # brackets inside a string are not nesting
    ],
)
def test_bombs_are_rejected_quickly(text: str, reason: str) -> None:
    _assert_wrong(_judge(text), reason)


def test_brackets_in_strings_do_not_count_as_nesting() -> None:
    expected = [{"name": "f", "arguments": {"s": "[" * 100}}]
    assert judge_calls(json.dumps(expected), expected).correct


def test_non_text_and_bad_gold_never_raise() -> None:
    _assert_wrong(_judge(None), "not text")  # type: ignore[arg-type]
    _assert_wrong(judge_calls("[]", "not json at all"), "verifier error")
    _assert_wrong(judge_calls("[]", [{"arguments": {}}]), "verifier error")


def test_verifier_never_calls_eval(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("the verifier must not evaluate model text as code")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    monkeypatch.setattr(builtins, "compile", forbidden)
    assert _judge(format_calls([WEATHER])).correct
    assert not _judge("__import__('os').system('x')").correct


def _assert_well_formed(verdict: Verdict) -> None:
    assert isinstance(verdict, Verdict)
    assert verdict.score in (0.0, 1.0)
    assert verdict.correct == (verdict.score == 1.0)
    assert verdict.reason and verdict.reason != "verifier error"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(["name", "arguments", "a", "b", "city", "unit"]) | st.text(max_size=5), inner),
    max_leaves=20,
)
_HOSTILE_TEXT = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x10FFFF), max_size=100),
    st.text(alphabet='[]{}":,\\ 0123456789.eE-+truefalsn\n`', max_size=200),
    _JSON.map(json.dumps),
    st.builds(
        lambda name, args: json.dumps([{"name": name, "arguments": args}]),
        st.sampled_from(["get_weather", "add", "multiply", "nope"]),
        st.dictionaries(st.sampled_from(["a", "b", "city", "unit", "x"]), _JSON, max_size=3),
    ),
)


@settings(max_examples=300, deadline=None)
@given(_HOSTILE_TEXT, st.sampled_from([(WEATHER,), (ADD,), (WEATHER, ADD), ()]))
def test_verify_never_raises_on_arbitrary_text(text: str, expected: tuple[Any, ...]) -> None:
    _assert_well_formed(_judge(text, expected))


@settings(max_examples=150, deadline=None)
@given(st.permutations([WEATHER, ADD, {"name": "multiply", "arguments": {"a": 1, "b": 2}}]), st.booleans())
def test_any_order_and_layout_of_the_right_calls_is_correct(calls: list[Any], indent: bool) -> None:
    text = json.dumps(calls, indent=2 if indent else None)
    assert _judge(text, (ADD, WEATHER, {"name": "multiply", "arguments": {"b": 2.0, "a": 1}})).correct


# --- config and generator --------------------------------------------------------------------------


def test_config_defaults_and_registration() -> None:
    cfg = FunctionCallConfig()
    assert (cfg.path, cfg.num_tools, cfg.compact, cfg.seed, cfg.test_fraction) == (None, 2, True, 0, 0.1)
    assert TASKS.get("function_call") is FunctionCallTask
    assert 8 <= len(TOOL_LIBRARY) <= 12


@pytest.mark.parametrize(
    ("params", "message"),
    [({"num_tools": 0}, "num_tools"), ({"num_tools": 13}, "num_tools"), ({"path": " "}, "path"),
     ({"two_call_fraction": 2}, "two_call_fraction"), ({"num_tool": 2}, "num_tool")],
)
def test_bad_config_fails_with_a_clear_error(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        make_task("function_call", params)


@pytest.mark.parametrize("params", [{}, {"compact": False}, {"num_tools": 5, "two_call_fraction": 0.5}])
def test_every_demonstration_verifies(params: dict[str, Any]) -> None:
    task = _task(**params)
    for split, n in (("train", 300), ("test", 60)):
        for problem in task.problems(split, n):
            assert problem.demonstration is not None and len(problem.demonstration) == 1
            assert problem.answer == problem.demonstration[0] and "\n" not in problem.answer
            verdict = task.verify(problem, task.target_text(problem))
            assert verdict == Verdict.right(), (problem, verdict)


def test_compact_prompt_shape() -> None:
    task = _task()
    problems = task.problems("train", 200)
    for problem in problems:
        tools_line, query_line, rest = problem.prompt.split("\n")
        assert rest == "" and query_line == f"q: {problem.metadata['query']}"
        signatures = tools_line.removeprefix("tools: ").split(" ")
        assert [s.split("(")[0] for s in signatures] == problem.metadata["tools"]
        assert all(re.fullmatch(r"[a-z_]+\([a-z_,]+\)", s) for s in signatures)
        assert len(signatures) == max(2, len({c["name"] for c in problem.metadata["calls"]}))
        assert {c["name"] for c in problem.metadata["calls"]} <= set(problem.metadata["tools"])
        limit = 250 if len(problem.metadata["calls"]) == 1 else 400  # the tiny model has 512 positions
        assert problem.prompt.isascii() and len(problem.prompt) + len(problem.answer) < limit
    counts = [len(p.metadata["calls"]) for p in problems]
    assert set(counts) == {1, 2} and 0.1 < counts.count(2) / len(counts) < 0.35
    assert len({p.metadata["calls"][0]["name"] for p in problems}) == len(TOOL_LIBRARY)


def test_full_prompt_holds_json_schemas() -> None:
    problem = _task(compact=False, num_tools=3).problem("train", 4)
    tools_line, query_line = problem.prompt.split("\n")[:2]
    schemas = json.loads(tools_line.removeprefix("tools: "))
    assert [s["name"] for s in schemas] == problem.metadata["tools"] and len(schemas) == 3
    assert all(set(s) == {"name", "description", "parameters"} for s in schemas)
    assert all(set(spec) >= {"type", "description"} for s in schemas for spec in s["parameters"].values())
    assert query_line == f"query: {problem.metadata['query']}"


def test_wrong_answers_to_generated_problems_fail() -> None:
    task = _task()
    problem = next(p for p in task.problems("train", 50) if len(p.metadata["calls"]) == 1)
    call = problem.metadata["calls"][0]
    key = next(iter(call["arguments"]))
    _assert_wrong(task.verify(problem, format_calls([{**call, "arguments": {**call["arguments"], key: "zzz"}}])),
                  f"wrong value for {key}")
    other = next(t for t in problem.metadata["tools"] if t != call["name"])
    _assert_wrong(task.verify(problem, format_calls([{"name": other, "arguments": call["arguments"]}])), "wrong tool")
    _assert_wrong(task.verify(problem, '[{"name":"launch_rocket","arguments":{}}]'), "unknown tool launch_rocket")


def test_generation_is_deterministic_with_random_access() -> None:
    assert _task().problems("train", 50) == _task().problems("train", 50)
    task = _task(seed=3)
    assert task.problem("train", 77) == task.problems("train", 100)[77]
    assert task.problem("test", 17) == _task(seed=3).problems("test", 20)[17]
    assert task.problems("train", 5, start=10) == task.problems("train", 15)[10:]
    assert task.problem("train", 7).id == "function_call-train-7"


def test_different_seeds_give_different_problems() -> None:
    a = [p.prompt for p in _task(seed=0).problems("train", 50)]
    b = [p.prompt for p in _task(seed=1).problems("train", 50)]
    assert sum(x != y for x, y in zip(a, b)) > 40


def test_train_and_test_never_share_a_problem() -> None:
    task = _task()
    key = lambda p: problem_key(p.metadata["query"], p.metadata["calls"])  # noqa: E731
    train = {key(p) for p in task.problems("train", 2000)}
    test = {key(p) for p in task.problems("test", 300)}
    assert train and test and not train & test
    assert all(split_of(k, 0, 0.1) == "test" for k in test)
    assert len(test) > 200  # small tools (stock, time, music) repeat, as with replacement
    assert len(task.distinct_problems("test", 100)) == 100


def test_problem_key_ignores_call_and_argument_order() -> None:
    reordered = {"name": "get_weather", "arguments": {"unit": "celsius", "city": "Paris"}}
    assert problem_key("q", [WEATHER, ADD]) == problem_key("q", [ADD, reordered])
    assert problem_key("q", [WEATHER]) != problem_key("q2", [WEATHER])


def test_bad_splits_and_indices_fail_clearly() -> None:
    with pytest.raises(ValueError, match="unknown split"):
        _task().problem("dev", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="index must be >= 0"):
        _task().problem("train", -1)
    with pytest.raises(ValueError, match="test_fraction"):
        _task(test_fraction=0.0).problem("test", 0)


def test_describe_mentions_the_settings() -> None:
    text = _task(num_tools=3).describe()
    assert "Function calling" in text and "3 tools" in text and "exact match" in text


# --- APIGen files --------------------------------------------------------------------------------

_RECORDS = [
    {
        "id": i,
        "query": query,
        "answers": json.dumps(answers),
        "tools": json.dumps(tools),
    }
    for i, (query, answers, tools) in enumerate(
        [
            (
                f"What is the weather in city {k}, and what is {k} plus {k + 1}?",
                [{"name": "get_weather", "arguments": {"city": f"City{k}", "unit": "celsius"}},
                 {"name": "add", "arguments": {"a": k, "b": k + 1}}],
                [{"name": "get_weather", "description": "Weather.",
                  "parameters": {"city": {"type": "str", "description": "City."},
                                 "unit": {"type": "str", "description": "Unit.", "default": "celsius"}}},
                 {"name": "add", "description": "Add.",
                  "parameters": {"a": {"type": "int", "description": "a"}, "b": {"type": "int", "description": "b"}}}],
            )
            for k in range(40)
        ]
    )
]


def _write(tmp_path: Path, name: str, records: Any, jsonl: bool = False) -> Path:
    path = tmp_path / name
    if jsonl:
        path.write_text("\n".join(json.dumps(r) for r in records) + "\n\n", encoding="utf-8")
    else:
        path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return path


@pytest.mark.parametrize(("name", "jsonl"), [("data.json", False), ("data.jsonl", True)])
def test_loading_an_apigen_file(tmp_path: Path, name: str, jsonl: bool) -> None:
    path = _write(tmp_path, name, _RECORDS, jsonl)
    items = load_apigen(path)
    assert len(items) == 40 and items[3].query == _RECORDS[3]["query"] and items[3].source_id == 3
    assert items[3].answers[1] == {"name": "add", "arguments": {"a": 3, "b": 4}}

    task = _task(path=str(path), test_fraction=0.3)
    assert task.size("train") + task.size("test") == 40 and task.size("test") > 0
    seen_train, seen_test = set(), set()
    for split, seen in (("train", seen_train), ("test", seen_test)):
        for problem in task.problems(split, task.size(split)):
            assert problem.metadata["source_id"] is not None
            seen.add(problem.metadata["item"])
            assert task.verify(problem, task.target_text(problem)) == Verdict.right()
            assert problem.prompt.startswith("tools: [") and f"query: {problem.metadata['query']}\n" in problem.prompt
            assert problem.metadata["tools"] == ["get_weather", "add"]
    assert not seen_train & seen_test and len(seen_train | seen_test) == 40
    size = task.size("train")
    assert task.problem("train", size + 2).prompt == task.problem("train", 2).prompt  # wraps around
    assert "40 items" in task.describe()

    problem = task.problem("train", 0)
    swapped = list(reversed(problem.metadata["calls"]))
    assert task.verify(problem, json.dumps(swapped)).correct
    _assert_wrong(task.verify(problem, json.dumps(swapped[:1])), "expected 2 calls, got 1")
    # The schema's default does not excuse a missing argument: exact match.
    weather = next(c for c in problem.metadata["calls"] if c["name"] == "get_weather")
    add = next(c for c in problem.metadata["calls"] if c["name"] == "add")
    short = [{"name": "get_weather", "arguments": {"city": weather["arguments"]["city"]}}, add]
    _assert_wrong(task.verify(problem, json.dumps(short)), "missing argument unit")


def test_loading_plain_lists_works_too(tmp_path: Path) -> None:
    records = [{**r, "tools": json.loads(r["tools"]), "answers": json.loads(r["answers"])} for r in _RECORDS[:5]]
    assert load_apigen(_write(tmp_path, "plain.json", records)) == load_apigen(_write(tmp_path, "s.json", _RECORDS[:5]))


def test_an_apigen_files_own_tools_are_shown_and_recorded_by_the_environment(tmp_path: Path) -> None:
    """The file's schemas reach the multi-turn environment: its tools are offered and their calls recorded
    (they were dropped as unknown tools when the problem carried only their names)."""
    from selfimprove.envs.plugins import make_env

    renamed = [{**r, "answers": r["answers"].replace('"add"', '"sum_two"'), "tools": r["tools"].replace('"add"', '"sum_two"')}
               for r in _RECORDS]  # `sum_two` is no library tool
    task = _task(path=str(_write(tmp_path, "data.json", renamed)), test_fraction=0.3)
    problem = task.problem("train", 0)
    assert problem.metadata["tools"] == ["get_weather", "sum_two"]  # names, as the judge reads them
    env = make_env("function_call", task)
    conversation = env.start(problem)
    assert [s["function"]["name"] for s in env.tool_schemas(conversation)] == ["get_weather", "sum_two"]
    demo = env.demonstration(problem)
    assert demo is not None and [m["tool_calls"][0]["function"]["name"] for m in demo[:-1]] == \
        [c["name"] for c in problem.metadata["calls"]]


def test_missing_file_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="APIGen file not found"):
        _task(path=str(tmp_path / "nope.json"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty file"),
        ("[", "not valid JSON"),
        ("[]", "no APIGen items"),
        ('{"query": "q"}\n{oops', "line 2 is not valid JSON"),
        ("[1]", "item 1: expected an object"),
        ('[{"tools": "[]", "answers": "[]"}]', "'query' must be a non-empty string"),
        ('[{"query": "q", "answers": "[]"}]', "missing field 'tools'"),
        ('[{"query": "q", "tools": "[]"}]', "missing field 'answers'"),
        ('[{"query": "q", "tools": "[{", "answers": "[]"}]', "'tools' is not valid JSON"),
        ('[{"query": "q", "tools": "{}", "answers": "[]"}]', "'tools' must be a list"),
        ('[{"query": "q", "tools": [{"description": "x"}], "answers": []}]', "tool 1 must be an object"),
        ('[{"query": "q", "tools": [{"name": "f"}], "answers": "{}"}]', "'answers' must be a list"),
        ('[{"query": "q", "tools": [{"name": "f"}], "answers": [{"arguments": {}}]}]', "call 1 has no name"),
        ('[{"query": "q", "tools": [{"name": "f"}], "answers": [{"name": "f", "arguments": 3}]}]',
         "arguments is not an object"),
        ('[{"query": "q", "tools": [{"name": "f"}], "answers": [{"name": "g", "arguments": {}}]}]',
         "answer 1 calls 'g', which is not among its tools"),
    ],
)
def test_malformed_files_fail_clearly(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=re.escape(message)) as info:
        load_apigen(path)
    assert str(path) in str(info.value)


def test_file_with_an_empty_split_fails_clearly(tmp_path: Path) -> None:
    task = _task(path=str(_write(tmp_path, "d.json", _RECORDS[:3])), test_fraction=0.0)
    assert task.size("test") == 0 and task.problem("train", 0).answer
    with pytest.raises(ValueError, match="no test problems"):
        task.problem("test", 0)


def test_problems_are_plain_data() -> None:
    problem = _task().problem("train", 0)
    assert isinstance(problem, Problem)
    json.dumps(dict(problem.metadata))  # metadata is JSON-serialisable (run directories, logs)
