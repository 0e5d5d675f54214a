"""Function calling: parsing and judging a model's tool calls (exact match, never evaluated as code).

Each problem shows some tools and a query; the answer is a JSON list of calls
`[{"name": ..., "arguments": {...}}]`, checked by exact match of tool names and arguments
(SPECS §3, Reflect-Retry-Reward). Problems come from a seeded generator over a small tool library
(the default, short prompts for the character-level model) or from a local APIGen file
(Salesforce xlam-function-calling-60k: `query`, `tools`, `answers`, the last two often JSON strings).

Matching rules (`judge_calls`), chosen once and kept here:
- the calls are a multiset: their order does not matter (APIGen's parallel calls are unordered),
  but each expected call must appear exactly as many times as expected;
- arguments are compared as dicts (key order ignored), every key exactly: a missing optional
  argument is missing even if the schema gives a default;
- values compare after JSON parsing: numbers by value (`1 == 1.0`), booleans are not numbers,
  strings exactly (case and spaces included), lists in order, objects by keys;
- a single call object is accepted as a list of one call; surrounding whitespace, end markers,
  a ```json fence, and further lines after the JSON value are tolerated; other text is not;
- keys of a call other than `name` and `arguments` are ignored.
"""


from __future__ import annotations

import json
import logging
import math
from typing import Any, Iterable, Mapping, Sequence

from selfimprove.tasks.answers import cut_at_end_marker
from selfimprove.tasks.problem import Verdict

logger = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 20_000  # longer texts are rejected before any parsing
MAX_NESTING = 32  # deeper JSON is rejected before `json` can recurse (calls use 3 levels)
MAX_SHOWN_VALUE = 40  # characters of a value quoted in a reason

Call = dict[str, Any]  # {"name": str, "arguments": dict}


class _Reject(ValueError):
    """A reason to reject the model's JSON, raised from inside the decoder's hooks."""


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _Reject(f"duplicate key {_show(key)}")
        out[key] = value
    return out


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Reject(f"number out of range: {text[:MAX_SHOWN_VALUE]}")
    return value


def _no_constant(name: str) -> Any:
    raise _Reject(f"{name} is not allowed")


_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicates, parse_float=_finite_float, parse_constant=_no_constant
)


def _nesting_within(text: str, start: int, limit: int) -> bool:
    """Whether the JSON value starting at `start` nests at most `limit` deep (strings skipped)."""
    depth, in_string, escaped = 0, False, False
    for i in range(start, len(text)):
        ch = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "[" or ch == "{":
            depth += 1
            if depth > limit:
                return False
        elif ch == "]" or ch == "}":
            depth -= 1
            if depth <= 0:
                return True  # the first value is closed; anything after it is not parsed
    return True


def _strip_fence(text: str) -> str:
    """The content of a ``` fence (any language tag) if the text is one, else the text."""
    if not text.startswith("```"):
        return text
    newline = text.find("\n")
    if newline < 0:
        return text[3:]
    body = text[newline + 1 :]
    close = body.find("```")
    return (body if close < 0 else body[:close]).strip()


def _show(value: Any) -> str:
    """A value as short compact JSON for a reason."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= MAX_SHOWN_VALUE else text[: MAX_SHOWN_VALUE - 3] + "..."


def _short(name: str) -> str:
    """A name from model text, cut for a reason."""
    return name if len(name) <= MAX_SHOWN_VALUE else name[: MAX_SHOWN_VALUE - 3] + "..."


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def parse_json_answer(text: object) -> tuple[Any, str | None]:
    """The first JSON value of a model's text, or (None, reason). Never raises, never evaluates."""
    if not isinstance(text, str):
        return None, "not text"
    if len(text) > MAX_ANSWER_CHARS:
        return None, f"too long ({len(text)} > {MAX_ANSWER_CHARS} characters)"
    body = _strip_fence(cut_at_end_marker(text).strip())
    if not body:
        return None, "empty answer"
    if not _nesting_within(body, 0, MAX_NESTING):
        return None, f"not JSON: nesting too deep (> {MAX_NESTING} levels)"
    try:
        value, end = _DECODER.raw_decode(body)
    except _Reject as error:
        return None, f"not JSON: {error}"
    except json.JSONDecodeError as error:
        return None, f"not JSON: {error.msg} (char {error.pos})"
    except (ValueError, RecursionError) as error:  # e.g. an integer over Python's digit limit
        return None, f"not JSON: {str(error)[:80] or type(error).__name__}"
    rest = body[end:].lstrip(" \t\r")
    if rest and not rest.startswith("\n"):
        return None, f"not JSON: extra text after the JSON value at char {end}"
    return value, None


def canonical(value: Any) -> Any:
    """A hashable form in which equal JSON values are equal: numbers by value, bools apart."""
    if value is None:
        return ("null",)
    if isinstance(value, bool):
        return ("bool", value)
    if isinstance(value, (int, float)):
        return ("num", value)  # 1 == 1.0 and hash(1) == hash(1.0)
    if isinstance(value, str):
        return ("str", value)
    if isinstance(value, (list, tuple)):
        return ("list", tuple(canonical(v) for v in value))
    if isinstance(value, Mapping):
        return ("dict", frozenset((k, canonical(v)) for k, v in value.items()))
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _call_key(call: Mapping[str, Any]) -> tuple[str, Any]:
    return call["name"], canonical(call["arguments"])


def _check_calls(value: Any) -> tuple[list[Call], str | None]:
    """The calls in a parsed answer (a list, or one call object), or ([], reason)."""
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list):
        return [], f"not a list of calls (got {type_name(value)})"
    calls: list[Call] = []
    for k, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            return [], f"call {k} is not an object (got {type_name(item)})"
        name = item.get("name")
        if name is None or name == "":
            return [], f"call {k} has no name"
        if not isinstance(name, str):
            return [], f"call {k}: name is not a string (got {type_name(name)})"
        if "arguments" not in item:
            return [], f"call {k} ({_short(name)}) has no arguments"
        arguments = item["arguments"]
        if not isinstance(arguments, dict):
            return [], f"call {k} ({_short(name)}): arguments is not an object (got {type_name(arguments)})"
        calls.append({"name": name, "arguments": arguments})
    return calls, None


def _differences(got: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """Why two argument dicts differ, most telling first; empty if they are equal."""
    out = [f"missing argument {key}" for key in expected if key not in got]
    out += [f"unexpected argument {key}" for key in got if key not in expected]
    out += [
        f"wrong value for {key}: got {_show(got[key])}, expected {_show(value)}"
        for key, value in expected.items()
        if key in got and canonical(got[key]) != canonical(value)
    ]
    return out


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def tool_names(tools: Iterable[Any]) -> list[str]:
    """Names of tools given as names or as schemas with a `name`."""
    names: list[str] = []
    for tool in tools:
        if isinstance(tool, str):
            names.append(tool)
        elif isinstance(tool, Mapping) and isinstance(tool.get("name"), str):
            names.append(tool["name"])
    return names


def coerce_calls(calls: Any, where: str = "answers") -> list[Call]:
    """Trusted expected calls (a JSON string, one call, or a list) as a list of clean calls.

    Raises `ValueError` naming the problem; for data files and gold answers, never model text.
    """
    if isinstance(calls, str):
        try:
            calls = json.loads(calls)
        except ValueError as error:
            raise ValueError(f"{where} is not valid JSON: {error}") from None
    checked, reason = _check_calls(calls)
    if reason is not None:
        raise ValueError(f"{where}: {reason}")
    try:
        for call in checked:
            canonical(call["arguments"])
    except (TypeError, RecursionError) as error:
        raise ValueError(f"{where}: {error}") from None
    return checked


def judge_calls(text: object, expected_calls: Any, tools: Iterable[Any] | None = None) -> Verdict:
    """Exact match of the model's calls against the expected ones (see the module docstring).

    `tools` (names or schemas) are the tools the prompt offered: a call to any other name is an
    "unknown tool"; without it, the expected calls' names are the known tools. Scores are 0 or 1.
    """
    try:
        expected = coerce_calls(expected_calls, "expected calls")
        known = set(tool_names(tools)) if tools is not None else {c["name"] for c in expected}
        return _judge(text, expected, known)
    except Exception:  # a bad gold answer or a verifier bug must not stop a run; make it loud
        logger.exception("function_call verifier failed on %r", text[:200] if isinstance(text, str) else text)
        return Verdict.wrong("verifier error")


def _judge(text: object, expected: list[Call], known: set[str]) -> Verdict:
    value, reason = parse_json_answer(text)
    if reason is not None:
        return Verdict.wrong(reason)
    got, reason = _check_calls(value)
    if reason is not None:
        return Verdict.wrong(reason)
    for call in got:
        if call["name"] not in known:
            return Verdict.wrong(f"unknown tool {_short(call['name'])}")
    if len(got) != len(expected):
        return Verdict.wrong(f"expected {_plural(len(expected), 'call')}, got {len(got)}")

    unmatched = list(expected)  # remove exact matches, as a multiset
    unmatched_keys = [_call_key(e) for e in expected]
    missed: list[tuple[int, Call]] = []
    for k, call in enumerate(got, start=1):
        key = _call_key(call)
        hit = next((i for i, e in enumerate(unmatched_keys) if e == key), None)
        if hit is None:
            missed.append((k, call))
        else:
            unmatched.pop(hit)
            unmatched_keys.pop(hit)
    if not missed:
        return Verdict.right()

    k, call = missed[0]
    name = _short(call["name"])
    prefix = f"call {k} ({name}): " if len(got) > 1 else ""
    same_name = [e for e in unmatched if e["name"] == call["name"]]
    if not same_name:
        wanted = ", ".join(dict.fromkeys(e["name"] for e in unmatched))
        where = f"call {k}: " if len(got) > 1 else ""
        return Verdict.wrong(f"{where}wrong tool {name}, expected {wanted}")
    diffs = min((_differences(call["arguments"], e["arguments"]) for e in same_name), key=len)
    return Verdict.wrong(prefix + (diffs[0] if diffs else "does not match"))


def _vote_form(value: Any) -> Any:
    """A JSON value in the form the verifier compares: whole floats as ints (`1.0` is `1`), bools apart."""
    if isinstance(value, float) and value.is_integer():  # exact: int(1e20) == 1e20
        return int(value)
    if isinstance(value, list):
        return [_vote_form(v) for v in value]
    if isinstance(value, dict):
        return {k: _vote_form(v) for k, v in value.items()}
    return value


def calls_key(text: object) -> str | None:
    """Canonical JSON of the calls in a model's text, equal exactly when the verifier would count the
    two answers as the same calls: each call as `{"arguments": ..., "name": ...}` with keys sorted and
    numbers by value, the calls sorted (their order does not matter). None when the text holds no
    valid list of calls: an answer that can never be right casts no vote."""
    value, reason = parse_json_answer(text)
    if reason is not None:
        return None
    calls, reason = _check_calls(value)
    if reason is not None or not calls:
        return None
    forms = sorted(
        json.dumps({"name": c["name"], "arguments": _vote_form(c["arguments"])}, sort_keys=True, ensure_ascii=False)
        for c in calls
    )
    return "[" + ",".join(forms) + "]"


def format_calls(calls: Sequence[Mapping[str, Any]]) -> str:
    """Calls as the model should write them: compact JSON on one line."""
    clean = [{"name": c["name"], "arguments": dict(c["arguments"])} for c in calls]
    return json.dumps(clean, separators=(",", ":"), ensure_ascii=False)


def problem_key(query: str, calls: Sequence[Mapping[str, Any]]) -> str:
    """What makes two problems the same: the query and the multiset of expected calls."""
    forms = sorted(
        json.dumps({"name": c["name"], "arguments": c["arguments"]}, sort_keys=True, ensure_ascii=False)
        for c in calls
    )
    return query + "\n" + "\n".join(forms)


