"""Loading APIGen files (Salesforce xlam-function-calling-60k): `query`, `tools`, `answers`, the last two
often JSON strings; one JSON list or JSON lines."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from selfimprove.tasks.function_call.judge import Call, coerce_calls, tool_names, type_name
from selfimprove.tasks.files import read_utf8


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
        raise ValueError(f"{where}: expected an object with query, tools and answers, got {type_name(record)}")
    query = record.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"{where}: 'query' must be a non-empty string")
    tools = _json_field(record, "tools", where)
    if not isinstance(tools, list):
        raise ValueError(f"{where}: 'tools' must be a list of tool schemas, got {type_name(tools)}")
    for k, tool in enumerate(tools, start=1):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or not tool["name"]:
            raise ValueError(f"{where}: tool {k} must be an object with a non-empty 'name'")
    raw_answers = _json_field(record, "answers", where)
    if not isinstance(raw_answers, list):
        raise ValueError(f"{where}: 'answers' must be a list of calls, got {type_name(raw_answers)}")
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
    text = read_utf8(file)
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


