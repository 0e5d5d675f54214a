"""Large per-run buffers (kept traces, preference pairs, trees) as JSONL files in the run directory.

A checkpoint records each buffer's length instead of its contents; on resume the driver cuts every
buffer back to the length of the checkpoint it resumes from, so records appended after that
checkpoint (by steps that will run again) are not counted twice. `state.json` stays small.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable

__all__ = ["JsonlBuffer"]


class JsonlBuffer:
    """An append-only list of JSON records in one file, with its length kept in memory."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._records: list[Any] | None = None

    def _load(self) -> list[Any]:
        if self._records is None:
            records = []
            if self.path.is_file():
                for line in self.path.read_text().splitlines():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError:
                        break  # a line cut short by a crash: everything before it is whole
            self._records = records
        return self._records

    def __len__(self) -> int:
        return len(self._load())

    def read(self) -> list[Any]:
        return list(self._load())

    def extend(self, records: Iterable[Any]) -> None:
        records = list(records)
        if not records:
            return
        current = self._load()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write("".join(json.dumps(r) + "\n" for r in records))
            f.flush()
            os.fsync(f.fileno())
        current.extend(records)

    def truncate(self, length: int) -> None:
        """Keep the first `length` records (what a checkpoint counted)."""
        current = self._load()
        if length > len(current):
            raise ValueError(f"{self.path} holds {len(current)} records, the checkpoint counted {length}")
        del current[length:]
        tmp = self.path.with_suffix(".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text("".join(json.dumps(r) + "\n" for r in current))
        os.replace(tmp, self.path)
