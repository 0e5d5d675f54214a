"""`function_call`: the function-calling task with its tools really executed, judged on the final state.

Each conversation gets a simulated device (`World`): the library's twelve tools answer from it
(deterministic weather, prices and times; alarms, timers, mail and music change it). The model calls
tools over several turns and then replies; the verdict is on what was *executed*: the calls that ran
must be exactly the expected ones (a multiset: setting an alarm twice leaves two alarms), and the final
reply must pass on every result the user asked for (the weather, a price, a sum). Tools of an APIGen
file without an implementation here are executed as a record only (result `ok`).
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Sequence

from selfimprove.chat import Message, assistant, tool_call
from selfimprove.envs.base import Conversation, Environment, Reply, Turn, register_env, respond_with_calls
from selfimprove.envs.tools import Tool
from selfimprove.tasks.base import Problem, Verdict
from selfimprove.tasks.function_call.judge import calls_key, format_calls, judge_calls
from selfimprove.tasks.function_call.tools import TOOLS_BY_NAME

ACTIONS = ("set_alarm", "set_timer", "send_email", "play_music")  # change the device; the rest inform
_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "list": "array", "dict": "object"}
_RATES = {"USD": 1.0, "EUR": 0.92, "GBP": 0.79, "JPY": 151.0, "CHF": 0.9, "CAD": 1.36, "AUD": 1.52, "CNY": 7.2,
          "INR": 83.0, "SEK": 10.5}


def _hash(*parts: Any) -> int:
    return int.from_bytes(hashlib.sha256("\0".join(map(str, parts)).encode()).digest()[:4], "big")


@dataclass
class World:
    """One conversation's device: what the action tools changed, and every executed call."""

    alarms: list[str] = field(default_factory=list)
    timers: list[int] = field(default_factory=list)
    outbox: list[dict[str, str]] = field(default_factory=list)
    playing: str | None = None
    executed: list[dict[str, Any]] = field(default_factory=list)
    results: dict[int, str] = field(default_factory=dict)  # executed call index -> its result (informing tools)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


def _run(world: World, name: str, arguments: dict[str, Any], library: bool = True) -> str:
    """Execute one call on the world (arguments already checked against the tool's schema): a tool of the
    generator's library by its own code, any other (an APIGen file's) as a record only."""
    a = arguments
    if not library:
        result = "ok"
    elif name == "get_weather":
        celsius = 5 + _hash("weather", a["city"]) % 26
        value = celsius if str(a["unit"]).lower().startswith("c") else round(celsius * 9 / 5 + 32)
        result = f"{value} {a['unit']}"
    elif name in ("add", "multiply"):
        result = str(a["a"] + a["b"] if name == "add" else a["a"] * a["b"])
    elif name == "convert_currency":
        src, dst = str(a["from"]).upper(), str(a["to"]).upper()
        if src not in _RATES or dst not in _RATES:
            raise ValueError(f"unknown currency {src if src not in _RATES else dst}")
        result = f"{a['amount'] / _RATES[src] * _RATES[dst]:.2f} {dst}"
    elif name == "set_alarm":
        if not (0 <= a["hour"] <= 23 and 0 <= a["minute"] <= 59):
            raise ValueError("no such time")
        world.alarms.append(f"{a['hour']}:{a['minute']:02d}")
        result = f"alarm set for {world.alarms[-1]}"
    elif name == "set_timer":
        world.timers.append(int(a["minutes"]))
        result = f"timer set for {a['minutes']} minutes"
    elif name == "search_flights":
        result = f"{1 + _hash('flights', a['origin'], a['destination'], a['date']) % 5} flights"
    elif name == "send_email":
        world.outbox.append({"to": a["to"], "subject": a["subject"]})
        result = "sent"
    elif name == "get_stock_price":
        result = f"{50 + _hash('stock', a['symbol']) % 950}.{_hash('cents', a['symbol']) % 100:02d}"
    elif name == "translate":
        result = f"[{a['target_lang']}] {a['text']}"
    elif name == "get_time":
        minutes = _hash("time", a["city"]) % 1440
        result = f"{minutes // 60}:{minutes % 60:02d}"
    elif name == "play_music":
        world.playing = str(a["artist"])
        result = f"playing {a['artist']}"
    else:
        result = "ok"
    if library and name not in ACTIONS:
        world.results[len(world.executed)] = result
    world.executed.append({"name": name, "arguments": dict(a)})
    return result


def json_type(apigen_type: str) -> str | None:
    """An APIGen type (`str`, `int`, `List[int]`, `Dict[str, Any]`, `str, optional`) as a JSON schema type;
    None when it says nothing a JSON type can (`Union[int, float]`, `Any`): then any value is taken."""
    kind = apigen_type.split(",")[0].strip() if not apigen_type.startswith(("Union", "Optional")) else apigen_type
    head = re.match(r"[A-Za-z_]+", kind)
    word = head[0] if head else ""
    if word in ("List", "list", "Tuple", "tuple", "Set", "set", "array"):
        return "array"
    if word in ("Dict", "dict", "Mapping", "object"):
        return "object"
    if word == "Optional":
        return json_type(kind[len("Optional["):-1])
    return _TYPES.get(word, word if word in _TYPES.values() else None)


def json_schema(apigen: dict[str, Any]) -> dict[str, Any]:
    """An APIGen tool schema as the JSON schema chat templates take."""
    params = apigen.get("parameters") or {}
    properties: dict[str, Any] = {}
    for arg, spec in params.items():
        spec = dict(spec) if isinstance(spec, dict) else {}
        kind = json_type(str(spec.get("type", "")))
        properties[arg] = {**({"type": kind} if kind else {}), "description": str(spec.get("description", ""))}
    required = [arg for arg, spec in params.items() if not (isinstance(spec, dict) and "default" in spec)]
    return {"type": "function", "function": {"name": apigen["name"], "description": apigen.get("description", ""),
                                             "parameters": {"type": "object", "properties": properties,
                                                            "required": required}}}


@register_env("function_call")
class FunctionCallEnv(Environment):
    """Call the shown tools on a simulated device, then reply; judged on the executed calls and the reply."""

    def _schemas(self, problem: Problem) -> list[dict[str, Any]]:
        out = []
        for tool in _shown(problem):
            if isinstance(tool, str):
                if tool in TOOLS_BY_NAME:
                    out.append(json_schema(TOOLS_BY_NAME[tool].schema()))
            elif isinstance(tool, dict) and "name" in tool:
                out.append(json_schema(tool))
        return out

    def tool_schemas(self, conversation: Conversation) -> list[dict[str, Any]]:
        """The problem's tools as JSON schemas, built once per conversation (every turn reads them)."""
        if "schemas" not in conversation.data:
            conversation.data["schemas"] = self._schemas(conversation.problem)
        return conversation.data["schemas"]

    def reset(self, conversation: Conversation) -> None:
        conversation.data["world"] = World()

    def respond_all(self, conversations: Sequence[Conversation], turns: Sequence[Turn]) -> list[Reply]:
        return respond_with_calls(conversations, turns, self._tools_for)

    def _tools_for(self, conversation: Conversation) -> Callable[[str], Tool | None]:
        """The tools this conversation's problem offers, each acting on its own world."""
        schemas = {s["function"]["name"]: s for s in self.tool_schemas(conversation)}
        library = _library(conversation.problem)
        world = conversation.data["world"]

        def lookup(name: str) -> Tool | None:
            if name not in schemas:
                return None
            return Tool(name, partial(_run_named, world, name, name in library), schemas[name], timeout=5.0)

        return lookup

    def respond(self, conversation: Conversation, turn: Turn) -> Reply:
        return self.respond_all([conversation], [turn])[0]

    def judge(self, conversation: Conversation) -> Verdict:
        """The executed calls against the expected ones (exact, order ignored), then the reply: it must
        pass on every informing tool's result."""
        world: World = conversation.data["world"]
        problem = conversation.problem
        if conversation.end != "done":
            return Verdict.wrong(f"no final reply ({conversation.end or 'unfinished'})")
        verdict = judge_calls(format_calls(world.executed), problem.metadata.get("calls"), problem.metadata.get("tools"))
        if not verdict.correct:
            return Verdict.wrong(f"executed calls: {verdict.reason}")
        reply = self.answer(conversation)
        for result in world.results.values():
            if result not in reply:
                return Verdict.wrong(f"the reply does not give the result {result!r}")
        return Verdict.right()

    def answer_key(self, conversation: Conversation) -> str | None:
        world: World = conversation.data["world"]  # the calls in the verifier's canonical form (numbers by value)
        return (calls_key(format_calls(world.executed)) or "[]") + "\n" + self.answer(conversation).strip()

    def demonstration(self, problem: Problem) -> list[Message] | None:
        """One call per expected call, then a reply with the informing results (or `done`)."""
        calls = problem.metadata.get("calls") or []
        scratch = World()
        library = _library(problem)
        results = [_run(scratch, c["name"], dict(c["arguments"]), c["name"] in library) for c in calls]
        told = [r for c, r in zip(calls, results) if c["name"] not in ACTIONS and c["name"] in library]
        return [assistant("", [tool_call(c["name"], c["arguments"])]) for c in calls] + [assistant("; ".join(told) or "done")]


def _shown(problem: Problem) -> list[Any]:
    """The tools a problem offers: an APIGen file's schemas, else the names of library tools."""
    return list(problem.metadata.get("tool_schemas") or problem.metadata.get("tools") or [])


def _library(problem: Problem) -> set[str]:
    """The offered tools the simulated device runs (library tools named by name); a file's own schemas are
    recorded, not run."""
    return {t for t in _shown(problem) if isinstance(t, str) and t in TOOLS_BY_NAME}


def _run_named(world: World, name: str, library: bool, /, **arguments: Any) -> str:
    """One call on the world (positional-only parameters: a tool may have an argument called `name`)."""
    with world.lock:  # the calls of one turn run on threads of their own
        return _run(world, name, arguments, library)

