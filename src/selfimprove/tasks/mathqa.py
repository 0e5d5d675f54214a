"""MATH-style problems: free-form answers in `\\boxed{}`, compared symbolically with math-verify.

The `math` task serves MATH-format problems (`problem`, `solution` with a final `\\boxed{}`, or an
explicit `answer`) from a local JSONL/parquet file, or a small built-in set when no path is given.
Answers are judged by `math_pool.math_equal` (math-verify in worker processes with our own time
limit, so it is safe from any thread).
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

from pydantic import Field

from selfimprove.tasks.answers import last_boxed
from selfimprove.tasks.base import SPLITS, Problem, Split, Task, TaskConfig, Verdict, register_task, split_of
from selfimprove.tasks.math_pool import DEFAULT_TIMEOUT, MAX_ANSWER_CHARS, MAX_TIMEOUT, MathVerifierPool, clean_gold, math_equal
from selfimprove.tasks.files import read_utf8

__all__ = ["MAX_ANSWER_CHARS", "MathConfig", "MathTask", "MathVerifierPool", "last_boxed", "math_equal"]

logger = logging.getLogger(__name__)

_BUILTIN_DATA = "math_sample.jsonl"


# ---------------------------------------------------------------------------------------------
# The task.


class MathConfig(TaskConfig):
    """Where the problems come from and how answers are judged."""

    path: str | None = None
    """JSONL / JSON / parquet with `problem` and `solution` and/or `answer` columns; None: the built-in sample."""
    timeout: float = Field(DEFAULT_TIMEOUT, gt=0.0, le=MAX_TIMEOUT)
    """Seconds per math-verify comparison."""
    require_boxed: bool = True
    """An answer without \\boxed{} is wrong."""


@dataclass(frozen=True)
class MathRecord:
    row: int
    problem: str
    answer: str
    solution: str | None
    extra: Mapping[str, Any]


_PROBLEM_COLUMNS = ("problem", "question")
_EXTRA_COLUMNS = ("level", "type", "subject", "unique_id", "id", "source")


def _read_rows(path: Path) -> list[Mapping[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"math: data file {str(path)!r} not found")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as error:
            raise ImportError(f"math: reading {path} needs pyarrow (pip install pyarrow)") from error
        return pq.read_table(path).to_pylist()
    text = read_utf8(path)
    if suffix == ".json" and text.lstrip().startswith("["):
        rows = json.loads(text)
        if not isinstance(rows, list):
            raise ValueError(f"math: {path} must hold a JSON list of objects")
        return rows
    if suffix not in (".jsonl", ".json"):
        raise ValueError(f"math: unsupported file type {suffix!r} for {path} (use .jsonl, .json or .parquet)")
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise ValueError(f"math: {path} line {number} is not JSON: {error}") from error
    return rows


def _records(rows: Iterable[Mapping[str, Any]], source: str) -> list[MathRecord]:
    records: list[MathRecord] = []
    skipped: list[int] = []
    for row_number, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"math: row {row_number} of {source} is not an object")
        problem = next((row[c] for c in _PROBLEM_COLUMNS if isinstance(row.get(c), str)), None)
        if problem is None or not problem.strip():
            raise ValueError(
                f"math: row {row_number} of {source} has no 'problem' text (columns: {', '.join(map(str, row))})"
            )
        solution = row.get("solution") if isinstance(row.get("solution"), str) else None
        answer = row.get("answer")
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            answer = str(answer)
        if not isinstance(answer, str) or not answer.strip():
            answer = last_boxed(solution).content if solution else None
        if answer is None:
            skipped.append(row_number)
            continue
        records.append(
            MathRecord(
                row=row_number,
                problem=problem.strip(),
                answer=clean_gold(answer),
                solution=solution,
                extra={k: row[k] for k in _EXTRA_COLUMNS if k in row and row[k] is not None},
            )
        )
    if skipped:
        logger.warning(
            "math: skipped %d rows of %s without an answer column or \\boxed{} solution (rows %s%s)",
            len(skipped), source, ", ".join(map(str, skipped[:5])), " ..." if len(skipped) > 5 else "",
        )
    if not records:
        raise ValueError(f"math: {source} has no usable problems (need 'problem' and 'answer' or a \\boxed{{}} solution)")
    return records


def _demonstration(record: MathRecord) -> tuple[str, ...] | None:
    if not record.solution:
        return None
    lines = [line.strip() for line in record.solution.strip().splitlines() if line.strip()]
    if last_boxed(record.solution).content is None:
        lines.append(f"The final answer is $\\boxed{{{record.answer}}}$.")
    return tuple(lines)


@register_task("math")
class MathTask(Task):
    """MATH: competition-style problems with free-form answers in \\boxed{}, checked symbolically."""

    Config = MathConfig
    config: MathConfig
    INSTRUCTION = "Put the final answer in \\boxed{}."

    def __init__(self, config: MathConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        if cfg.path is None:
            source = f"the built-in {_BUILTIN_DATA}"
            data = resources.files("selfimprove.tasks").joinpath("data", _BUILTIN_DATA).read_text("utf-8")
            rows = [json.loads(line) for line in data.splitlines() if line.strip()]
        else:
            source = cfg.path
            rows = _read_rows(Path(cfg.path).expanduser())
        records = _records(rows, source)
        self.source = source
        self._splits: dict[Split, list[MathRecord]] = {s: [] for s in SPLITS}
        for record in records:
            self._splits[split_of(record.problem, cfg.seed, cfg.test_fraction)].append(record)
        self._orders: dict[tuple[Split, int], tuple[int, ...]] = {}

    def size(self, split: Split) -> int:
        """How many problems (rows) a split holds; indices past it wrap around, reshuffled."""
        return len(self._splits[split])

    def _order(self, split: Split, epoch: int) -> tuple[int, ...]:
        """A seeded permutation of the split for one pass (cached: consecutive indices share it)."""
        key = (split, epoch)
        order = self._orders.get(key)
        if order is None:
            shuffled = list(range(len(self._splits[split])))
            random.Random(f"math:{self.config.seed}:{split}:{epoch}").shuffle(shuffled)
            if len(self._orders) >= 8:
                self._orders.clear()
            order = self._orders[key] = tuple(shuffled)
        return order

    def make_problem(self, split: Split, index: int) -> Problem:
        """The `index`-th problem of a seeded shuffle of the split; each pass over it reshuffles."""
        records = self._splits[split]
        if not records:
            raise ValueError(
                f"math: no {split} problems in {self.source} (test_fraction={self.config.test_fraction})"
            )
        epoch, position = divmod(index, len(records))
        record = records[self._order(split, epoch)[position]]
        return Problem(
            id=f"math-{split}-{index}",
            prompt=f"{record.problem}\n{self.INSTRUCTION}\n",
            answer=record.answer,
            demonstration=_demonstration(record),
            metadata={"row": record.row, **record.extra},
        )

    def judge(self, problem: Problem, text: str) -> Verdict:
        """Compare the last \\boxed{} of the text with the gold answer (math-verify, time-limited)."""
        equal, reason = math_equal(text, problem.answer, timeout=self.config.timeout, require_boxed=self.config.require_boxed)
        return Verdict.right(reason) if equal else Verdict.wrong(reason)

    def describe(self) -> str:
        return (
            f"MATH: free-form math problems from {self.source} ({self.size('train')} train, "
            f"{self.size('test')} test). The answer is the last \\boxed{{}} of the text, compared with "
            f"the gold answer by math-verify (fractions, radicals, intervals, sets, x=3 vs 3) in a worker "
            f"process under a {self.config.timeout:g} s limit."
        )
