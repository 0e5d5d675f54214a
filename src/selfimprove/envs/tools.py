"""Tools: plain typed Python functions with a docstring, as Hugging Face chat templates and TRL's
`tools=` take them.

`Tool.from_function` reads the function's JSON schema with transformers' `get_json_schema` (type hints
and the docstring's `Args:` section), so the schema a chat template shows the model is the one the
call is checked against. `run_calls` executes a batch of calls concurrently, each on a daemon thread,
at most `MAX_CONCURRENT` at once (a batch of 128 sandboxed programs must not start 128 processes on
two cores, where wall-clock limits would fire by load), each timed from when it starts, and turns every
way a call can go wrong (an unknown tool, bad arguments, an exception, a timeout, a result that is not
text) into an error *result*: a tool never ends a run.

Why threads and not a process pool: tools are user functions that may close over state (a database
handle, an environment's world) and need not be picklable; the model-written code tool (`python`)
already runs in its own sandboxed process. A call that never returns is abandoned on its daemon thread
(it cannot be killed from Python); it is logged, and it cannot keep the process alive at exit.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

logger = logging.getLogger(__name__)

MAX_RESULT_CHARS = 2000  # a tool's result is cut here (observations stay small)
MAX_CONCURRENT = max(2, os.cpu_count() or 2)  # calls running at once (a batch may hold hundreds)
_INTEGER = re.compile(r"[+-]?[0-9]{1,30}", re.ASCII)


class ToolError(ValueError):
    """A tool that cannot be built from a function (the message names the function and the fix)."""


@dataclass(frozen=True)
class Tool:
    """A callable tool and its JSON schema (`{"type": "function", "function": {...}}`)."""

    name: str
    fn: Callable[..., Any]
    schema: Mapping[str, Any]
    timeout: float = 10.0  # seconds one call may take before it returns a timeout error
    stats: dict[str, int] = field(default_factory=dict, compare=False)

    @classmethod
    def from_function(cls, fn: Callable[..., Any], *, name: str | None = None, timeout: float = 10.0) -> "Tool":
        """A tool from a typed function whose docstring describes every argument (Google style `Args:`)."""
        from transformers.utils.chat_template_utils import get_json_schema

        label = getattr(fn, "__qualname__", repr(fn))
        if not callable(fn):
            raise ToolError(f"tool {label}: not a function")
        try:
            schema = get_json_schema(fn)
        except Exception as err:  # transformers' DocstringParsingException / TypeHintParsingException
            raise ToolError(f"tool {label}: {err} (a tool is a typed function whose docstring has an Args: section "
                            "describing every argument)") from None
        if name is not None:
            schema = {**schema, "function": {**schema["function"], "name": name}}
        return cls(schema["function"]["name"], fn, schema, timeout)

    @property
    def parameters(self) -> dict[str, Any]:
        return dict(self.schema["function"].get("parameters", {}).get("properties", {}))

    @property
    def required(self) -> list[str]:
        return list(self.schema["function"].get("parameters", {}).get("required", []))

    def check_arguments(self, arguments: Any) -> tuple[dict[str, Any] | None, str | None]:
        """(arguments cast to the schema's types, None) or (None, why they are wrong)."""
        if not isinstance(arguments, Mapping):
            return None, f"the arguments of {self.name} must be an object"
        params = self.parameters
        unknown = sorted(set(arguments) - set(params))
        if unknown:
            return None, f"{self.name} has no argument {unknown[0]!r} (it takes {', '.join(params) or 'none'})"
        missing = [p for p in self.required if p not in arguments]
        if missing:
            return None, f"{self.name} needs argument {missing[0]!r}"
        out = {}
        for key, value in arguments.items():
            cast, error = cast_value(value, params[key])
            if error:
                return None, f"argument {key!r} of {self.name}: {error}"
            out[key] = cast
        return out, None


def cast_value(value: Any, schema: Mapping[str, Any]) -> tuple[Any, str | None]:
    """A value as the JSON schema's type asks (a string "7" for an integer is 7, as chat parsers do)."""
    kind = schema.get("type")
    kinds = kind if isinstance(kind, list) else [kind]
    if value is None and ("null" in kinds or schema.get("nullable")):
        return None, None
    for k in kinds:
        if k in (None, "string") and isinstance(value, str):
            return value, None
        if k == "integer":
            if isinstance(value, bool):
                continue
            if isinstance(value, int):
                return value, None
            if isinstance(value, float) and value.is_integer():
                return int(value), None
            if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
                return int(value.strip()), None
        if k == "number":
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return value, None
            if isinstance(value, str):
                try:
                    return float(value), None
                except ValueError:
                    pass
        if k == "boolean":
            if isinstance(value, bool):
                return value, None
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true", None
        if k == "array" and isinstance(value, list):
            return value, None
        if k == "object" and isinstance(value, Mapping):
            return dict(value), None
        if k is None:
            return value, None
    return None, f"expected {' or '.join(str(k) for k in kinds)}, got {type(value).__name__}"


def result_text(value: Any, limit: int = MAX_RESULT_CHARS) -> str:
    """A tool's return value as observation text: strings as they are, containers as JSON, anything else
    as its `str`; cut at `limit` characters."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, (dict, list, tuple, bool)) or value is None:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError):
            text = repr(value)
    else:  # numbers as Python writes them, any other object by its str()
        text = str(value)
    return text if len(text) <= limit else text[:limit] + "...[cut]"


@dataclass
class CallOutcome:
    text: str  # the result, or "error: ..." for a call that failed
    ok: bool
    seconds: float = 0.0


class _Slots:
    """At most `MAX_CONCURRENT` calls run at once; a call's time limit starts when it starts running. A
    call abandoned at its limit gives its slot back (its thread may run on, outside the count)."""

    def __init__(self, size: int) -> None:
        self.free = threading.Semaphore(size)


_SLOTS = _Slots(MAX_CONCURRENT)


@dataclass
class _Call:
    tool: Tool
    arguments: dict[str, Any]
    started: threading.Event = field(default_factory=threading.Event)
    finished: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    wake: threading.Event = field(default_factory=threading.Event)  # the caller's: set when this call starts or ends
    began: float = 0.0
    released: bool = False
    result: tuple[bool, Any] | None = None

    def release(self) -> None:
        with self.lock:
            if not self.released:
                self.released = True
                _SLOTS.free.release()

    def run(self) -> None:
        _SLOTS.free.acquire()
        self.began = time.monotonic()
        self.started.set()
        self.wake.set()
        try:
            self.result = (True, self.tool.fn(**self.arguments))
        except BaseException as err:  # a tool's failure is the model's observation, never the run's end
            # A tool's own refusal (ValueError, RuntimeError) reads as its message; anything else names its type.
            self.result = (False, str(err) if type(err) in (ValueError, RuntimeError) else f"{type(err).__name__}: {err}")
        finally:
            self.finished.set()
            self.release()
            self.wake.set()


def run_calls(calls: Sequence[tuple[Tool | None, str, Any]], *, limit: int = MAX_RESULT_CHARS) -> list[CallOutcome]:
    """Run calls `(tool or None when unknown, name, arguments)` concurrently (at most `MAX_CONCURRENT` at
    once), each within its tool's timeout counted from when it starts; one outcome per call, in order."""
    pending: list[_Call | CallOutcome] = []
    wake = threading.Event()  # set by any call that starts or finishes: the caller sleeps until then or a timeout
    for tool, name, arguments in calls:
        if tool is None:
            pending.append(CallOutcome(f"error: unknown tool {name!r}", False))
            continue
        args, error = tool.check_arguments(arguments)
        if error is not None:
            pending.append(CallOutcome(f"error: {error}", False))
            continue
        call = _Call(tool, args, wake=wake)
        threading.Thread(target=call.run, daemon=True, name=f"tool-{tool.name}").start()
        pending.append(call)
    # Resolve calls as they finish or run out of time, in any order: a call that waits for a slot held by
    # hung calls gets it once those are abandoned.
    results: dict[int, CallOutcome] = {i: item for i, item in enumerate(pending) if isinstance(item, CallOutcome)}  # type: ignore[misc]
    while len(results) < len(pending):
        wake.clear()  # before the scan: a call that ends during it sets it again, and the wait below returns at once
        now = time.monotonic()
        deadline = None
        for i, item in enumerate(pending):
            if i in results or isinstance(item, CallOutcome):
                continue
            if item.finished.is_set():
                results[i] = _outcome(item, calls[i][1], limit)
            elif item.started.is_set() and now - item.began >= item.tool.timeout:
                item.release()
                item.tool.stats["timeouts"] = item.tool.stats.get("timeouts", 0) + 1
                logger.warning("tool %s did not return within %gs (abandoned on its thread)", calls[i][1], item.tool.timeout)
                results[i] = CallOutcome(f"error: {calls[i][1]} timed out after {item.tool.timeout:g}s", False, now - item.began)
            elif item.started.is_set():
                ends = item.began + item.tool.timeout - now
                deadline = ends if deadline is None else min(deadline, ends)
        if len(results) < len(pending):
            # until a call starts or ends, or the first running one's timeout (a call waiting for a slot starts,
            # and wakes this, when another one ends or is abandoned); a second at most, as a safeguard
            wake.wait(1.0 if deadline is None else min(max(deadline, 0.0), 1.0))
    return [results[i] for i in range(len(pending))]


def _outcome(call: _Call, name: str, limit: int) -> CallOutcome:
    assert call.result is not None
    ok, value = call.result
    seconds = time.monotonic() - call.began
    if not ok:
        call.tool.stats["errors"] = call.tool.stats.get("errors", 0) + 1
        return CallOutcome(f"error: {value}"[:limit], False, seconds)
    return CallOutcome(result_text(value, limit), True, seconds)
