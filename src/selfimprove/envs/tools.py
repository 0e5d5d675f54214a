"""Tools: plain typed Python functions with a docstring, as Hugging Face chat templates and TRL's
`tools=` take them.

`Tool.from_function` reads the function's JSON schema with transformers' `get_json_schema` (type hints
and the docstring's `Args:` section), so the schema a chat template shows the model is the one the
call is checked against. `run_calls` executes a batch of calls concurrently, each on a daemon thread
with its own time limit, and turns every way a call can go wrong (an unknown tool, bad arguments, an
exception, a timeout, a result that is not text) into an error *result*: a tool never ends a run.

Why threads and not a process pool: tools are user functions that may close over state (a database
handle, an environment's world) and need not be picklable; the model-written code tool (`python`)
already runs in its own sandboxed process. A call that never returns is abandoned on its daemon thread
(it cannot be killed from Python); it is logged, and it cannot keep the process alive at exit.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

logger = logging.getLogger(__name__)

MAX_RESULT_CHARS = 2000  # a tool's result is cut here (observations stay small)


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
            if isinstance(value, str) and value.strip().lstrip("+-").isdigit() and len(value) < 30:
                return int(value), None
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


def _call(tool: Tool, arguments: Mapping[str, Any], box: list[Any]) -> None:
    try:
        box.append((True, tool.fn(**arguments)))
    except BaseException as err:  # a tool's failure is the model's observation, never the run's end
        # A tool's own refusal (ValueError, RuntimeError) reads as its message; anything else names its type.
        box.append((False, str(err) if type(err) in (ValueError, RuntimeError) else f"{type(err).__name__}: {err}"))


def run_calls(calls: Sequence[tuple[Tool | None, str, Any]], *, limit: int = MAX_RESULT_CHARS) -> list[CallOutcome]:
    """Run calls `(tool or None when unknown, name, arguments)` concurrently, each within its tool's
    timeout; one outcome per call, in order."""
    started: list[tuple[threading.Thread | None, list[Any], float, CallOutcome | None]] = []
    for tool, name, arguments in calls:
        if tool is None:
            started.append((None, [], 0.0, CallOutcome(f"error: unknown tool {name!r}", False)))
            continue
        args, error = tool.check_arguments(arguments)
        if error is not None:
            started.append((None, [], 0.0, CallOutcome(f"error: {error}", False)))
            continue
        box: list[Any] = []
        thread = threading.Thread(target=_call, args=(tool, args, box), daemon=True, name=f"tool-{tool.name}")
        thread.start()
        started.append((thread, box, time.monotonic(), None))
    out = []
    for (tool, name, _), (thread, box, t0, ready) in zip(calls, started):
        if ready is not None:
            out.append(ready)
            continue
        assert tool is not None and thread is not None
        thread.join(max(0.0, tool.timeout - (time.monotonic() - t0)))
        seconds = time.monotonic() - t0
        if not box:
            tool.stats["timeouts"] = tool.stats.get("timeouts", 0) + 1
            logger.warning("tool %s did not return within %gs (abandoned on its thread)", name, tool.timeout)
            out.append(CallOutcome(f"error: {name} timed out after {tool.timeout:g}s", False, seconds))
            continue
        ok, value = box[0]
        if not ok:
            tool.stats["errors"] = tool.stats.get("errors", 0) + 1
            out.append(CallOutcome(f"error: {value}"[:limit], False, seconds))
        else:
            out.append(CallOutcome(result_text(value, limit), True, seconds))
    return out
