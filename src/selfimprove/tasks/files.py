"""Read a user's data into a `datasets.Dataset`, with errors that name the file, the line and the fix.

Formats: JSON lines (`.jsonl`, `.ndjson`), JSON (`.json`: a list of objects, or JSON lines), CSV
(`.csv`), parquet (`.parquet`, `.pq`), and a folder written by `Dataset.save_to_disk` /
`DatasetDict.save_to_disk` (its `train` / `test` splits are kept).

JSON is read here line by line (UTF-8 checked per line, each line parsed on its own) because the
libraries' readers report a bad line as a position in a byte stream, or not at all; CSV and parquet are
read by pyarrow (the reader `datasets` itself uses) straight into an in-memory `Dataset`, so nothing is
written to a cache folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from selfimprove.errors import DataError

if TYPE_CHECKING:
    from datasets import Dataset

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}

__all__ = ["SUFFIXES", "read_json_records", "read_table", "read_tables", "read_utf8"]


def _decode(raw: bytes, path: Path, number: int) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(
            f"{path}: line {number} is not UTF-8 (byte {err.start + 1}: {raw[err.start:err.start + 1]!r}): "
            f"save the file as UTF-8"
        ) from None


def read_utf8(path: Path) -> str:
    """A text file's content; non-UTF-8 bytes raise `DataError` naming the line."""
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        for number, line in enumerate(raw.split(b"\n"), start=1):
            _decode(line, path, number)
        raise


def read_json_records(path: Path) -> list[dict[str, Any]]:
    """JSON lines (or a JSON list) as dicts; errors name the line."""
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte-order mark (Windows editors)
    if path.suffix.lower() == ".json" and raw.lstrip().startswith(b"["):
        text = _decode(raw, path, 1)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {err.lineno} is not valid JSON ({err.msg})") from None
        records = list(data)
        for number, record in enumerate(records, start=1):
            if not isinstance(record, dict):
                raise DataError(f"{path}: item {number} is not an object (got {type(record).__name__})")
        return records
    records = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        text = _decode(line, path, number).strip()
        if not text:
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}: line {number} is not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}: line {number} is not a JSON object (got {type(record).__name__})")
        records.append(record)
    return records


def _strings_where_mixed(records: list[dict[str, Any]], path: Path) -> list[dict[str, Any]]:
    """Write the scalar values of a column as text when rows disagree on its type (arrow needs one type
    per column); a column mixing objects and scalars cannot be read."""
    kinds: dict[str, set[type]] = {}
    for record in records:
        for key, value in record.items():
            if value is not None:
                kinds.setdefault(key, set()).add(type(value))
    mixed = {k for k, types in kinds.items() if len(types) > 1}
    for key in mixed:
        if kinds[key] & {dict, list}:
            raise DataError(f"{path}: column {key!r} mixes objects or lists with other values between rows")
    return [{k: (str(v) if k in mixed and v is not None else v) for k, v in record.items()} for record in records]


def dataset_from_records(records: list[dict[str, Any]]) -> "Dataset":
    """A `Dataset` of JSON records whose object and list columns (chat messages, tool schemas) are kept
    exactly as written (`datasets.Json`): arrow's struct inference would give every tool call the union
    of all calls' argument names, filled with nulls."""
    from datasets import Dataset, Features, Json

    nested = {k for r in records for k, v in r.items() if isinstance(v, (dict, list))}
    if not nested:
        return Dataset.from_list(records)
    plain = Dataset.from_list([{k: v for k, v in r.items() if k not in nested} for r in records]).features
    columns = list(dict.fromkeys(k for r in records for k in r))
    features = Features({k: Json() if k in nested else plain[k] for k in columns})
    return Dataset.from_list(records, features=features)


def _check_utf8_lines(path: Path) -> None:
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            _decode(line, path, number)


def _from_arrow(path: Path, kind: str) -> "Dataset":
    from datasets import Dataset

    try:
        if kind == "csv":
            _check_utf8_lines(path)
            import pyarrow.csv

            table = pyarrow.csv.read_csv(path)
        else:
            import pyarrow.parquet

            table = pyarrow.parquet.read_table(path)
    except DataError:
        raise
    except Exception as err:  # pyarrow's own message, kept to one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{path}: cannot read it as {kind} ({first})") from None
    return Dataset(table)


def read_tables(path: str | Path, field: str = "task.params.path") -> dict[str, "Dataset"]:
    """The data at `path` as `{"all": Dataset}`, or `{"train": ..., "test": ...}` for a saved
    `DatasetDict` that has those splits. Raises `DataError` for a missing, empty or unreadable file."""
    from datasets import DatasetDict, disable_progress_bars, load_from_disk

    disable_progress_bars()
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{field}: {path} does not exist")
    if path.is_dir():
        try:
            loaded = load_from_disk(str(path), keep_in_memory=True)
        except Exception as err:
            raise DataError(f"{field}: {path} is not a folder written by save_to_disk ({str(err).splitlines()[0]})") from None
        if isinstance(loaded, DatasetDict):
            if {"train", "test"} <= set(loaded):
                return {"train": loaded["train"], "test": loaded["test"]}
            if len(loaded) == 1:
                return {"all": next(iter(loaded.values()))}
            raise DataError(f"{field}: {path} holds splits {sorted(loaded)}; name train and test, or save one split")
        return {"all": loaded}
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise DataError(f"{field}: {path} has an unknown type {path.suffix!r} (use .jsonl, .json, .csv, .parquet or a saved dataset folder)")
    if path.stat().st_size == 0:
        raise DataError(f"{field}: {path} is empty (0 bytes)")
    if kind in ("jsonl", "json"):
        records = read_json_records(path)
        if not records:
            raise DataError(f"{field}: {path} has no records")
        try:
            data = dataset_from_records(records)
        except Exception:  # a column whose values differ in type between rows (`12` here, `"12"` there)
            data = dataset_from_records(_strings_where_mixed(records, path))
    else:
        data = _from_arrow(path, kind)
    if len(data) == 0:
        raise DataError(f"{field}: {path} has no records")
    return {"all": data}


def read_table(path: str | Path, field: str = "task.params.path") -> "Dataset":
    """One table (a saved `DatasetDict` with train and test splits is concatenated)."""
    tables = read_tables(path, field)
    if "all" in tables:
        return tables["all"]
    from datasets import concatenate_datasets

    return concatenate_datasets([tables["train"], tables["test"]])
