"""Chat messages as the ecosystem writes them (Hugging Face chat templates, TRL, OpenAI): plain dicts.

A conversation is a list of messages `{"role": ..., "content": ...}`; an assistant message that calls
tools carries `tool_calls: [{"type": "function", "function": {"name": ..., "arguments": {...}}}]` and a
tool's result is `{"role": "tool", "name": ..., "content": ...}`. Keeping them as dicts (typed here)
means they go into `apply_chat_template`, a JSONL export and TRL's SFT trainer unchanged.
"""

from __future__ import annotations

from typing import Any, Mapping, TypedDict


class FunctionCall(TypedDict):
    name: str
    arguments: dict[str, Any]


class ToolCall(TypedDict):
    type: str  # "function"
    function: FunctionCall


class Message(TypedDict, total=False):
    role: str  # "system" | "user" | "assistant" | "tool"
    content: str
    tool_calls: list[ToolCall]
    name: str  # a tool message: the tool that answered


ROLES = ("system", "user", "assistant", "tool")


def tool_call(name: str, arguments: Mapping[str, Any]) -> ToolCall:
    """One call in the chat-template form."""
    return {"type": "function", "function": {"name": name, "arguments": dict(arguments)}}


def user(content: str) -> Message:
    return {"role": "user", "content": content}


def assistant(content: str, calls: list[ToolCall] | None = None) -> Message:
    message: Message = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = list(calls)
    return message


def tool_result(name: str, content: str) -> Message:
    return {"role": "tool", "name": name, "content": content}


def calls_of(message: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, arguments) of an assistant message's tool calls (also the flat `{"name", "arguments"}` form
    some datasets use)."""
    out = []
    for call in message.get("tool_calls") or []:
        fn = call.get("function", call) if isinstance(call, Mapping) else {}
        out.append((str(fn.get("name", "")), dict(fn.get("arguments") or {})))
    return out


def check_messages(messages: Any, where: str = "messages") -> list[Message]:
    """`messages` as a list of chat messages, or a ValueError that says what is wrong and where."""
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where} must be a non-empty list of chat messages")
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or m.get("role") not in ROLES:
            raise ValueError(f"{where}[{i}] must be a mapping with role in {', '.join(ROLES)}")
        if not isinstance(m.get("content", ""), str):
            raise ValueError(f"{where}[{i}].content must be text")
        if m.get("tool_calls") and m["role"] != "assistant":
            raise ValueError(f"{where}[{i}]: only an assistant message calls tools")
        for name, _ in calls_of(m):
            if not name:
                raise ValueError(f"{where}[{i}]: a tool call without a function name")
    return [dict(m) for m in messages]  # type: ignore[misc]
