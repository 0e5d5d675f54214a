"""The shipped environments: worked conversations that the environments judge right, function calls
executed on a simulated device and judged on what ran, a calculator that lies, plug-in environments."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from selfimprove.chat import assistant, tool_call
from selfimprove.envs.base import Turn
from selfimprove.envs.function_env import json_schema
from selfimprove.envs.plugins import make_env, resolve_env
from selfimprove.envs.tool_env import wrong_number
from selfimprove.errors import ConfigError
from selfimprove.policy.hf import HFPolicy
from selfimprove.policy.tiny import build_tiny_model
from selfimprove.rollout.demonstrations import demonstration_episodes
from selfimprove.tasks import make_task
from selfimprove.tasks.function_call.tools import TOOLS_BY_NAME


@pytest.fixture(scope="module")
def tiny() -> HFPolicy:
    model, tokenizer = build_tiny_model("small")
    return HFPolicy(model, tokenizer)


@pytest.mark.parametrize("task, params, tools", [
    ("chain", {"num_steps": 5}, ["calc"]),
    ("countdown", {}, ["calc"]),
    ("countdown", {"format": "steps"}, ["calc"]),
    ("gsm8k", {}, ["calc"]),
    ("gsm8k", {}, ["python"]),
    ("function_call", {"two_call_fraction": 0.5}, []),
])
def test_worked_conversations_are_judged_right(tiny: HFPolicy, task: str, params: dict, tools: list[str]) -> None:
    the_task = make_task(task, params)
    env = make_env("function_call" if task == "function_call" else "tools", the_task, tools=tools)
    problems = [the_task.problem("train", i) for i in range(6 if tools != ["python"] else 2)]
    episodes = demonstration_episodes(tiny, env, problems)
    assert all(e is not None and e.info["correct"] for e in episodes), [p.id for p, e in zip(problems, episodes) if e is None]
    assert all(e.info["tool_calls"] >= 1 for e in episodes)


def test_gsm8k_demonstrations_call_python_per_annotation(tiny: HFPolicy) -> None:
    task = make_task("gsm8k", {})
    env = make_env("tools", task, tools=["python"])
    [episode] = demonstration_episodes(tiny, env, [task.problem("train", 0)])
    messages = episode.info["messages"]
    assert messages[1]["tool_calls"][0]["function"]["arguments"]["code"].startswith("print(")
    assert messages[2]["role"] == "tool" and messages[-1]["content"].startswith("#### ")


def call(tool: str, /, **arguments) -> Turn:
    return Turn(assistant("", [tool_call(tool, arguments)]))


def test_function_calls_run_on_the_device_and_the_final_state_is_judged() -> None:
    task = make_task("function_call", {"two_call_fraction": 0.0})
    env = make_env("function_call", task)
    problem = next(p for p in (task.problem("train", i) for i in range(50)) if p.metadata["calls"][0]["name"] == "set_alarm")
    expected = problem.metadata["calls"][0]["arguments"]

    def play(*turns: Turn):
        conversation = env.start(problem)
        for turn in turns:
            conversation.messages.append(turn.message)
            conversation.turns += 1
            reply = env.respond(conversation, turn)
            conversation.messages.extend(reply.observation)
            if reply.done:
                conversation.end = "done"
        return conversation, reply

    conversation, reply = play(call("set_alarm", **expected))
    assert reply.observation[0]["content"].startswith("alarm set for") and not reply.done
    conversation, _ = play(call("set_alarm", **expected), Turn(assistant("done")))
    assert env.judge(conversation).correct
    twice, _ = play(call("set_alarm", **expected), call("set_alarm", **expected), Turn(assistant("done")))
    assert not env.judge(twice).correct and twice.data["world"].alarms == [twice.data["world"].alarms[0]] * 2
    unanswered, _ = play(call("set_alarm", **expected))
    assert env.judge(unanswered).reason.startswith("no final reply")
    bad, reply = play(call("set_alarm", hour=99, minute=0))
    assert reply.observation[0]["content"] == "error: no such time"
    unknown, reply = play(call("launch_rocket"))
    assert reply.observation[0]["content"] == "error: unknown tool 'launch_rocket'"  # only the shown tools exist


def test_a_conversations_tool_schemas_are_built_once_across_its_turns(monkeypatch: pytest.MonkeyPatch) -> None:
    task = make_task("function_call", {"two_call_fraction": 0.0})
    env = make_env("function_call", task)
    problem = next(p for p in (task.problem("train", i) for i in range(50)) if p.metadata["calls"][0]["name"] == "set_alarm")
    built = []
    original = type(env)._schemas
    monkeypatch.setattr(type(env), "_schemas", lambda self, prob: built.append(prob.id) or original(self, prob))
    conversation = env.start(problem)
    shown = env.tool_schemas(conversation)
    for _ in range(3):
        turn = call("set_alarm", **problem.metadata["calls"][0]["arguments"])
        conversation.messages.append(turn.message)
        env.respond(conversation, turn)
    assert built == [problem.id] and env.tool_schemas(conversation) == shown
    assert env.tool_schemas(env.start(problem)) == shown and built == [problem.id] * 2  # a new conversation builds its own


def test_an_informing_tool_result_must_reach_the_reply() -> None:
    task = make_task("function_call", {"two_call_fraction": 0.0})
    env = make_env("function_call", task)
    problem = next(p for p in (task.problem("train", i) for i in range(80)) if p.metadata["calls"][0]["name"] == "get_weather")
    args = problem.metadata["calls"][0]["arguments"]
    conversation = env.start(problem)
    for turn in (call("get_weather", **args), Turn(assistant("it is nice"))):
        conversation.messages.append(turn.message)
        env.respond(conversation, turn)
    conversation.end = "done"
    verdict = env.judge(conversation)
    assert not verdict.correct and "does not give the result" in verdict.reason
    result = conversation.data["world"].results[0]
    conversation.messages[-1] = assistant(f"it is {result}")
    assert env.judge(conversation).correct


def test_apigen_types_and_tools_without_code_here() -> None:
    from selfimprove.envs.function_env import json_type

    assert [json_type(t) for t in ("str", "int", "float, optional", "List[int]", "Dict[str, Any]", "Optional[int]",
                                   "Union[int, float]", "Any", "bool")] == [
        "string", "integer", "number", "array", "object", "integer", None, None, "boolean"]
    # An APIGen file's tool whose name is a library tool's, with an argument called `name`: recorded, not
    # run by the library tool's code, and no clash with the runner's own parameters.
    tool = {"name": "translate", "description": "x", "parameters": {
        "name": {"type": "str", "description": "who"}, "words": {"type": "List[str]", "description": "w"}}}
    calls = [{"name": "translate", "arguments": {"name": "ann", "words": ["hi"]}}]
    task = make_task("function_call", {"two_call_fraction": 0.0})
    problem = task.problem("train", 0)
    problem = type(problem)(problem.id, problem.prompt, problem.answer, problem.demonstration,
                            {**problem.metadata, "tools": [tool], "calls": calls})
    env = make_env("function_call", task)
    conversation = env.start(problem)
    reply = env.respond(conversation, call("translate", name="ann", words=["hi"]))
    assert reply.observation[0]["content"] == "ok"
    assert conversation.data["world"].executed == calls


def test_apigen_schemas_become_json_schemas() -> None:
    schema = json_schema(TOOLS_BY_NAME["convert_currency"].schema())
    assert schema["function"]["parameters"]["properties"]["amount"] == {"type": "integer", "description": "Amount to convert."}
    assert schema["function"]["parameters"]["required"] == ["amount", "from", "to"]


def test_a_lying_tool_moves_numbers_and_replays_the_same() -> None:
    rng = random.Random(0)
    for value in ("7", "120", "3.25", "-40"):
        for _ in range(50):
            lie = wrong_number(value, rng)
            assert lie != value and abs(float(lie) - float(value)) <= max(1, 0.2 * abs(float(value))) + 1e-9
    assert wrong_number("no numbers", rng) == "no numbers"
    task = make_task("chain", {"num_steps": 3})
    env = make_env("tools", task, tools=["calc"], params={"faults": {"calc": 0.5}})
    problem = task.problem("train", 0)

    def results() -> list[str]:
        conversation = env.start(problem, sample=3)
        return [env.respond(conversation, call("calc", expression="6*7")).observation[0]["content"] for _ in range(40)]

    first = results()
    assert first == results()  # the conversation's own stream: the same lies on a rerun or resume
    assert 5 < sum(r != "42" for r in first) < 35
    with pytest.raises(ConfigError, match="faults names 'python', which is not one of the tools"):
        make_env("tools", task, tools=["calc"], params={"faults": {"python": 0.1}})


MY_ENV = '''
from selfimprove.chat import user
from selfimprove.envs import Environment, EnvConfig, Reply


class GuessConfig(EnvConfig):
    hint: str = "higher"


class Guess(Environment):
    """Say a number; until it is the answer, the environment says `higher` or `lower`."""

    Config = GuessConfig

    def respond(self, conversation, turn):
        said = turn.text.strip()
        if said == conversation.problem.answer:
            return Reply(done=True)
        return Reply([user("\\n" + self.config.hint + ":")], reward=-0.1)
'''


def test_an_environment_by_import_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_env.py").write_text(MY_ENV)
    monkeypatch.chdir(tmp_path)
    cls = resolve_env("my_env:Guess")
    assert cls.name == "my_env:Guess"
    env = make_env("my_env:Guess", make_task("chain", {"num_steps": 3}), params={"hint": "more"})
    conversation = env.start(env.task.problem("train", 0))
    assert env.respond(conversation, Turn(assistant("1"))).observation[0]["content"] == "\nmore:"
    with pytest.raises(ConfigError, match="unknown environment 'nowhere'"):
        resolve_env("nowhere")
    with pytest.raises(ConfigError, match="is not an Environment subclass"):
        resolve_env("my_env:GuessConfig")
