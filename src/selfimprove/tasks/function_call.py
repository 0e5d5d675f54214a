"""Function calling in the APIGen format: pick the right tools and arguments for a request.

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

import copy
import json
import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from pydantic import Field, model_validator

from selfimprove.tasks.base import SPLITS, TASKS, Problem, Split, Task, TaskConfig, Verdict, seeded_rng, split_of
from selfimprove.tasks.answers import cut_at_end_marker

logger = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 20_000  # longer texts are rejected before any parsing
MAX_NESTING = 32  # deeper JSON is rejected before `json` can recurse (calls use 3 levels)
MAX_SHOWN_VALUE = 40  # characters of a value quoted in a reason
MAX_ATTEMPTS = 1000  # draws per problem before the config is declared unusable

Call = dict[str, Any]  # {"name": str, "arguments": dict}


class FunctionCallConfig(TaskConfig):
    """Function-calling settings. `path` None means the seeded generator."""

    path: str | None = None  # a local APIGen JSON (a list) or JSONL file
    num_tools: int = Field(2, ge=1, le=12)  # tools shown per generated problem (at least those needed)
    compact: bool = True  # short prompts for the character-level model (generated problems only)
    two_call_fraction: float = Field(0.2, ge=0.0, le=1.0)  # generated problems that need two calls

    @model_validator(mode="after")
    def _check_path(self) -> "FunctionCallConfig":
        if self.path is not None and not self.path.strip():
            raise ValueError("path must name a file (or be null for the generator)")
        return self


# ---------------------------------------------------------------------------------------------
# Parsing and judging the model's calls.


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


def _type_name(value: Any) -> str:
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


def _canon(value: Any) -> Any:
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
        return ("list", tuple(_canon(v) for v in value))
    if isinstance(value, Mapping):
        return ("dict", frozenset((k, _canon(v)) for k, v in value.items()))
    raise TypeError(f"not a JSON value: {type(value).__name__}")


def _call_key(call: Mapping[str, Any]) -> tuple[str, Any]:
    return call["name"], _canon(call["arguments"])


def _check_calls(value: Any) -> tuple[list[Call], str | None]:
    """The calls in a parsed answer (a list, or one call object), or ([], reason)."""
    items = [value] if isinstance(value, dict) else value
    if not isinstance(items, list):
        return [], f"not a list of calls (got {_type_name(value)})"
    calls: list[Call] = []
    for k, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            return [], f"call {k} is not an object (got {_type_name(item)})"
        name = item.get("name")
        if name is None or name == "":
            return [], f"call {k} has no name"
        if not isinstance(name, str):
            return [], f"call {k}: name is not a string (got {_type_name(name)})"
        if "arguments" not in item:
            return [], f"call {k} ({_short(name)}) has no arguments"
        arguments = item["arguments"]
        if not isinstance(arguments, dict):
            return [], f"call {k} ({_short(name)}): arguments is not an object (got {_type_name(arguments)})"
        calls.append({"name": name, "arguments": arguments})
    return calls, None


def _differences(got: Mapping[str, Any], expected: Mapping[str, Any]) -> list[str]:
    """Why two argument dicts differ, most telling first; empty if they are equal."""
    out = [f"missing argument {key}" for key in expected if key not in got]
    out += [f"unexpected argument {key}" for key in got if key not in expected]
    out += [
        f"wrong value for {key}: got {_show(got[key])}, expected {_show(value)}"
        for key, value in expected.items()
        if key in got and _canon(got[key]) != _canon(value)
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
            _canon(call["arguments"])
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
    canonical = sorted(
        json.dumps({"name": c["name"], "arguments": _vote_form(c["arguments"])}, sort_keys=True, ensure_ascii=False)
        for c in calls
    )
    return "[" + ",".join(canonical) + "]"


def format_calls(calls: Sequence[Mapping[str, Any]]) -> str:
    """Calls as the model should write them: compact JSON on one line."""
    clean = [{"name": c["name"], "arguments": dict(c["arguments"])} for c in calls]
    return json.dumps(clean, separators=(",", ":"), ensure_ascii=False)


def problem_key(query: str, calls: Sequence[Mapping[str, Any]]) -> str:
    """What makes two problems the same: the query and the multiset of expected calls."""
    canonical = sorted(
        json.dumps({"name": c["name"], "arguments": c["arguments"]}, sort_keys=True, ensure_ascii=False)
        for c in calls
    )
    return query + "\n" + "\n".join(canonical)


# ---------------------------------------------------------------------------------------------
# The seeded generator: a small tool library with query templates.


@dataclass(frozen=True)
class Tool:
    """One tool of the generator's library: its schema and how to draw a request for it."""

    name: str
    description: str
    params: tuple[tuple[str, str, str], ...]  # (argument, type, description)
    draw: Callable[[random.Random], tuple[str, dict[str, Any]]]  # rng -> (query, arguments)

    def schema(self) -> dict[str, Any]:
        """The tool in APIGen's schema format."""
        return {
            "name": self.name,
            "description": self.description,
            "parameters": {arg: {"type": kind, "description": text} for arg, kind, text in self.params},
        }

    def signature(self) -> str:
        """The compact form: `name(arg,arg)`."""
        return f"{self.name}({','.join(arg for arg, _, _ in self.params)})"


CITIES = ("Paris", "Rome", "Tokyo", "Berlin", "Madrid", "Oslo", "Cairo", "Lima", "Delhi", "Boston",
          "Dublin", "Vienna", "Prague", "Seoul", "Sydney", "Denver", "Austin", "Lagos", "Quito", "Hanoi",
          "Lisbon", "Zurich", "Miami", "Nairobi")
CURRENCIES = ("USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "CNY", "INR", "SEK")
SYMBOLS = ("AAPL", "MSFT", "GOOG", "AMZN", "TSLA", "NVDA", "META", "IBM", "INTC", "ORCL", "AMD", "NFLX",
           "ADBE", "CSCO", "PEP", "KO", "NKE", "DIS", "SAP", "UBER")
PHRASES = ("hello", "thank you", "good night", "see you soon", "how are you", "good morning", "yes please",
           "where is the station", "I am hungry", "happy birthday")
LANGUAGES = ("french", "german", "spanish", "italian", "dutch", "japanese", "korean", "polish")
PEOPLE = ("ann", "bob", "carl", "dana", "eve", "finn", "gina", "hugo", "ivy", "jack", "kim", "leo")
SUBJECTS = ("lunch", "meeting", "report", "invoice", "party", "trip", "budget", "review", "holiday",
            "contract", "launch", "dinner")
ARTISTS = ("Adele", "Queen", "Drake", "Muse", "Abba", "Coldplay", "Bjork", "Eminem", "Shakira", "Oasis",
           "Blur", "Sade", "Prince", "Madonna", "Rihanna", "Metallica")


def _pick(rng: random.Random, templates: Sequence[str], **values: Any) -> str:
    return rng.choice(templates).format(**values)


def _weather(rng: random.Random) -> tuple[str, dict[str, Any]]:
    city, unit = rng.choice(CITIES), rng.choice(("celsius", "fahrenheit"))
    q = _pick(rng, ("weather in {c} in {u}", "{c} weather in {u}", "how warm is {c} in {u}?"), c=city, u=unit)
    return q, {"city": city, "unit": unit}


def _add(rng: random.Random) -> tuple[str, dict[str, Any]]:
    a, b = rng.randint(0, 999), rng.randint(0, 999)
    return _pick(rng, ("add {a} and {b}", "{a} plus {b}", "sum of {a} and {b}"), a=a, b=b), {"a": a, "b": b}


def _multiply(rng: random.Random) -> tuple[str, dict[str, Any]]:
    a, b = rng.randint(0, 99), rng.randint(0, 99)
    q = _pick(rng, ("multiply {a} by {b}", "{a} times {b}", "product of {a} and {b}"), a=a, b=b)
    return q, {"a": a, "b": b}


def _convert(rng: random.Random) -> tuple[str, dict[str, Any]]:
    amount = rng.randint(1, 1000)
    src, dst = rng.sample(CURRENCIES, 2)
    templates = ("convert {n} {s} to {d}", "{n} {s} in {d}", "how much is {n} {s} in {d}?")
    q = _pick(rng, templates, n=amount, s=src, d=dst)
    return q, {"amount": amount, "from": src, "to": dst}


def _alarm(rng: random.Random) -> tuple[str, dict[str, Any]]:
    hour, minute = rng.randint(0, 23), rng.randint(0, 59)
    templates = ("set an alarm for {h}:{m:02d}", "wake me at {h}:{m:02d}", "alarm at {h}:{m:02d}")
    q = _pick(rng, templates, h=hour, m=minute)
    return q, {"hour": hour, "minute": minute}


def _timer(rng: random.Random) -> tuple[str, dict[str, Any]]:
    minutes = rng.randint(1, 120)
    q = _pick(rng, ("timer for {n} minutes", "set a {n} minute timer", "remind me in {n} minutes"), n=minutes)
    return q, {"minutes": minutes}


def _flights(rng: random.Random) -> tuple[str, dict[str, Any]]:
    origin, destination = rng.sample(CITIES, 2)
    date = f"2025-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"
    q = _pick(rng, ("flights from {o} to {d} on {t}", "fly {o} to {d} on {t}"), o=origin, d=destination, t=date)
    return q, {"origin": origin, "destination": destination, "date": date}


def _email(rng: random.Random) -> tuple[str, dict[str, Any]]:
    to, subject = f"{rng.choice(PEOPLE)}@example.com", rng.choice(SUBJECTS)
    q = _pick(rng, ("email {t} about {s}", "send {t} a mail about {s}", "write to {t} re {s}"), t=to, s=subject)
    return q, {"to": to, "subject": subject}


def _stock(rng: random.Random) -> tuple[str, dict[str, Any]]:
    symbol = rng.choice(SYMBOLS)
    return _pick(rng, ("price of {s}", "{s} stock price", "quote {s}"), s=symbol), {"symbol": symbol}


def _translate(rng: random.Random) -> tuple[str, dict[str, Any]]:
    text, lang = rng.choice(PHRASES), rng.choice(LANGUAGES)
    q = _pick(rng, ("translate '{t}' to {l}", "say '{t}' in {l}", "'{t}' in {l}"), t=text, l=lang)
    return q, {"text": text, "target_lang": lang}


def _time(rng: random.Random) -> tuple[str, dict[str, Any]]:
    city = rng.choice(CITIES)
    return _pick(rng, ("time in {c}", "what time is it in {c}?", "current time in {c}"), c=city), {"city": city}


def _music(rng: random.Random) -> tuple[str, dict[str, Any]]:
    artist = rng.choice(ARTISTS)
    return _pick(rng, ("play {a}", "play songs by {a}", "put on some {a}"), a=artist), {"artist": artist}


TOOL_LIBRARY: tuple[Tool, ...] = (
    Tool("get_weather", "Current weather in a city.",
         (("city", "str", "City name."), ("unit", "str", "celsius or fahrenheit.")), _weather),
    Tool("add", "Add two integers.", (("a", "int", "First number."), ("b", "int", "Second number.")), _add),
    Tool("multiply", "Multiply two integers.",
         (("a", "int", "First number."), ("b", "int", "Second number.")), _multiply),
    Tool("convert_currency", "Convert an amount between currencies.",
         (("amount", "int", "Amount to convert."), ("from", "str", "Currency code to convert from."),
          ("to", "str", "Currency code to convert to.")), _convert),
    Tool("set_alarm", "Set an alarm.",
         (("hour", "int", "Hour, 0-23."), ("minute", "int", "Minute, 0-59.")), _alarm),
    Tool("set_timer", "Start a countdown timer.", (("minutes", "int", "Length in minutes."),), _timer),
    Tool("search_flights", "Search flights between two cities on a date.",
         (("origin", "str", "Departure city."), ("destination", "str", "Arrival city."),
          ("date", "str", "Date, YYYY-MM-DD.")), _flights),
    Tool("send_email", "Send an email.",
         (("to", "str", "Recipient address."), ("subject", "str", "Subject line.")), _email),
    Tool("get_stock_price", "Latest price of a stock.", (("symbol", "str", "Ticker symbol."),), _stock),
    Tool("translate", "Translate text into a language.",
         (("text", "str", "Text to translate."), ("target_lang", "str", "Target language.")), _translate),
    Tool("get_time", "Current local time in a city.", (("city", "str", "City name."),), _time),
    Tool("play_music", "Play music by an artist.", (("artist", "str", "Artist name."),), _music),
)
TOOLS_BY_NAME: Mapping[str, Tool] = {tool.name: tool for tool in TOOL_LIBRARY}
assert len(TOOLS_BY_NAME) == len(TOOL_LIBRARY) == 12  # `num_tools` is bounded by this


def compact_prompt(tools: Sequence[Tool], query: str) -> str:
    """The short prompt for the character-level model: a tools line, then the query."""
    return f"tools: {' '.join(tool.signature() for tool in tools)}\nq: {query}\n"


def full_prompt(schemas: Sequence[Mapping[str, Any]], query: str) -> str:
    """The full prompt: the tools' JSON schemas, the query, and the expected answer shape."""
    return (
        f"tools: {json.dumps(list(schemas), ensure_ascii=False)}\n"
        f"query: {query}\n"
        'Answer with a JSON list of calls: [{"name": ..., "arguments": {...}}]\n'
    )


# ---------------------------------------------------------------------------------------------
# Loading APIGen files.


@dataclass(frozen=True)
class ApigenItem:
    """One APIGen example: the query, the tools offered (schemas), and the expected calls."""

    query: str
    tools: tuple[Mapping[str, Any], ...]
    answers: tuple[Call, ...]
    source_id: Any = None


def _json_field(record: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in record:
        raise ValueError(f"{where}: missing field {key!r}")
    value = record[key]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as error:
            raise ValueError(f"{where}: {key!r} is not valid JSON: {error}") from None
    return value


def parse_apigen_item(record: Any, where: str = "item") -> ApigenItem:
    """Validate one APIGen record (`tools`/`answers` as JSON strings or lists); `ValueError` if bad."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected an object with query, tools and answers, got {_type_name(record)}")
    query = record.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"{where}: 'query' must be a non-empty string")
    tools = _json_field(record, "tools", where)
    if not isinstance(tools, list):
        raise ValueError(f"{where}: 'tools' must be a list of tool schemas, got {_type_name(tools)}")
    for k, tool in enumerate(tools, start=1):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"]:
            raise ValueError(f"{where}: tool {k} must be an object with a non-empty 'name'")
    raw_answers = _json_field(record, "answers", where)
    if not isinstance(raw_answers, list):
        raise ValueError(f"{where}: 'answers' must be a list of calls, got {_type_name(raw_answers)}")
    answers = coerce_calls(raw_answers, f"{where}: answers")
    names = set(tool_names(tools))
    for k, call in enumerate(answers, start=1):
        if call["name"] not in names:
            raise ValueError(f"{where}: answer {k} calls {call['name']!r}, which is not among its tools")
    return ApigenItem(query, tuple(tools), tuple(answers), record.get("id"))


def load_apigen(path: str | Path) -> list[ApigenItem]:
    """Read a local APIGen file: a JSON list of records, or JSONL (one record per line).

    Errors name the file and the record (items and lines counted from 1).
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"function_call: APIGen file not found: {file}")
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{file}: cannot read: {error}") from None
    stripped = text.lstrip()
    if not stripped:
        raise ValueError(f"{file}: empty file, no APIGen items")
    records: list[tuple[str, Any]] = []
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except ValueError as error:
            raise ValueError(f"{file}: not valid JSON: {error}") from None
        records = [(f"{file}: item {k}", record) for k, record in enumerate(data, start=1)]
    else:
        for k, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    records.append((f"{file}: line {k}", json.loads(line)))
                except ValueError as error:
                    raise ValueError(f"{file}: line {k} is not valid JSON: {error}") from None
    if not records:
        raise ValueError(f"{file}: no APIGen items")
    return [parse_apigen_item(record, where) for where, record in records]


# ---------------------------------------------------------------------------------------------
# The task.


def _rng(seed: int, split: Split, index: int, attempt: int) -> random.Random:
    return seeded_rng("function_call", seed, split, index, attempt)


@TASKS.register("function_call")
class FunctionCallTask(Task):
    """Function calling (APIGen format): answer a request with the right tool calls, checked exactly."""

    name = "function_call"
    Config = FunctionCallConfig
    config: FunctionCallConfig

    def __init__(self, config: FunctionCallConfig | None = None) -> None:
        super().__init__(config)
        self.items: list[ApigenItem] | None = None
        self._split_items: dict[str, list[int]] = {}
        if self.config.path is not None:
            self.items = load_apigen(self.config.path)
            for split in SPLITS:
                self._split_items[split] = [
                    k
                    for k, item in enumerate(self.items)
                    if split_of(problem_key(item.query, item.answers), self.config.seed, self.config.test_fraction)
                    == split
                ]

    def size(self, split: Split) -> int | None:
        """How many distinct items a file-backed split has; None for the (unbounded) generator."""
        return None if self.items is None else len(self._split_items[split])

    def problem(self, split: Split, index: int) -> Problem:
        """The `index`-th problem of a split. File-backed splits wrap around (`index % size`)."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
        if index < 0:
            raise ValueError(f"index must be >= 0, got {index}")
        if self.items is not None:
            return self._file_problem(split, index)
        cfg = self.config
        for attempt in range(MAX_ATTEMPTS):
            rng = _rng(cfg.seed, split, index, attempt)
            query, calls = self._draw_request(rng)
            if split_of(problem_key(query, calls), cfg.seed, cfg.test_fraction) == split:
                return self._generated_problem(split, index, rng, query, calls)
        raise ValueError(
            f"no function_call problem for split {split!r} after {MAX_ATTEMPTS} draws: "
            f"check test_fraction ({cfg.test_fraction})"
        )

    def _draw_request(self, rng: random.Random) -> tuple[str, list[Call]]:
        """One or two requests joined by '; ', with their expected calls."""
        first = rng.choice(TOOL_LIBRARY)
        query, args = first.draw(rng)
        calls = [{"name": first.name, "arguments": args}]
        if rng.random() < self.config.two_call_fraction:
            second = rng.choice(TOOL_LIBRARY)
            for _ in range(20):  # a second request that is not the first one again
                query2, args2 = second.draw(rng)
                if second.name != first.name or _canon(args2) != _canon(args):
                    query += "; " + query2
                    calls.append({"name": second.name, "arguments": args2})
                    break
        return query, calls

    def _generated_problem(
        self, split: Split, index: int, rng: random.Random, query: str, calls: list[Call]
    ) -> Problem:
        needed = list(dict.fromkeys(call["name"] for call in calls))
        others = [tool.name for tool in TOOL_LIBRARY if tool.name not in needed]
        shown_names = needed + rng.sample(others, max(0, self.config.num_tools - len(needed)))
        rng.shuffle(shown_names)
        shown = [TOOLS_BY_NAME[n] for n in shown_names]
        if self.config.compact:
            prompt = compact_prompt(shown, query)
        else:
            prompt = full_prompt([tool.schema() for tool in shown], query)
        answer = format_calls(calls)
        return Problem(
            id=f"function_call-{split}-{index}",
            prompt=prompt,
            answer=answer,
            demonstration=(answer,),
            metadata={"query": query, "calls": calls, "tools": shown_names, "source": "generated"},
        )

    def _file_problem(self, split: Split, index: int) -> Problem:
        assert self.items is not None
        positions = self._split_items[split]
        if not positions:
            raise ValueError(
                f"function_call: no {split} items in {self.config.path} "
                f"({len(self.items)} items, test_fraction {self.config.test_fraction})"
            )
        position = positions[index % len(positions)]
        item = self.items[position]
        answer = format_calls(item.answers)
        return Problem(
            id=f"function_call-{split}-{index}",
            prompt=full_prompt(item.tools, item.query),
            answer=answer,
            demonstration=(answer,),
            metadata={
                "query": item.query,
                "calls": copy.deepcopy(list(item.answers)),
                "tools": tool_names(item.tools),
                "source": str(self.config.path),
                "item": position,
                "source_id": item.source_id,
            },
        )

    def verify(self, problem: Problem, text: str) -> Verdict:
        """Exact match of the calls; never raises on model text and never evaluates it as code."""
        return judge_calls(text, problem.metadata.get("calls"), problem.metadata.get("tools"))

    def answer_key(self, problem: Problem, text: str) -> str | None:
        """Votes go by the calls (`calls_key`), not by the last number the default would pick out of
        the JSON (two calls that differ only in a city would otherwise be one answer)."""
        return calls_key(text)

    def describe(self) -> str:
        cfg = self.config
        rules = (
            "The answer is a JSON list of calls [{\"name\": ..., \"arguments\": {...}}], checked by exact "
            "match of tool names and arguments (call order ignored, numbers by value, strings exactly)."
        )
        if self.items is not None:
            return (
                f"Function calling (APIGen format) from {cfg.path}: {len(self.items)} items "
                f"({self.size('train')} train / {self.size('test')} test), full JSON tool schemas in the "
                f"prompt. {rules}"
            )
        form = "a compact tools line" if cfg.compact else "full JSON tool schemas"
        return (
            f"Function calling (APIGen format), generated: {cfg.num_tools} tools shown per problem "
            f"(from a library of {len(TOOL_LIBRARY)}), {cfg.two_call_fraction:.0%} of requests need two "
            f"calls, prompts with {form}. {rules}"
        )
