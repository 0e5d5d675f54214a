"""Grade-school math word problems: GSM8K-format files (`gsm8k`) and reasoning-gym's `gsm_symbolic`.

`gsm8k` reads local JSONL or parquet files with `question` and `answer` columns, the answer being a
worked solution that ends with `#### N` (the GSM8K format). Without a path it uses a small built-in
sample (`data/gsm8k_sample.jsonl`, 32 problems written for this package, with a `split` column for a
fixed 24/8 split when `split_field: split` is set). Train and test come from a column
(`split_field`), from two files (`path` for train, `test_path` for test, as GSM8K is distributed;
train rows whose question is also in the test file are dropped), or from a hash of the question;
positions of each split are computed once, so access is random. Files are finite: indices wrap
around, so a training run can go on for as many steps as it likes, and `distinct_problems` says
clearly when a split has fewer problems than asked.

`gsm_symbolic` generates GSM-like problems with reasoning-gym (no download): an endless stream split
by a hash of the question (see `rgym.EntryStream`), with the entry's worked solution as the
demonstration. Its answers are judged by our own `judge_numeric`, never by reasoning-gym's scorer.

Demonstrations are the solution's lines with the `<<48/2=24>>` calculator annotations removed, the
last line being `#### N`; answers are checked numerically (`answers.judge_numeric`).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping

from pydantic import field_validator, model_validator

from selfimprove.tasks.answers import NumericConfig, format_number, judge_numeric, parse_number
from selfimprove.tasks.base import SPLITS, Problem, Split, SplitPositions, Task, Verdict, calculator_score, register_task
from selfimprove.tasks.rgym import EntryStream, template_fields
from selfimprove.tasks.files import read_utf8

SAMPLE_PATH = Path(__file__).parent / "data" / "gsm8k_sample.jsonl"
DEFAULT_TEMPLATE = "{question}\nEnd with: #### <number>\n"
RG_SUFFIX = " Give the result as your final answer. Do not include units."  # gsm_symbolic's own ending

_CALC = re.compile(r"<<[^<>\n]{0,200}>>")
FileFormat = Literal["jsonl", "json", "parquet"]


def strip_calculations(line: str) -> str:
    """`48/2 = <<48/2=24>>24` -> `48/2 = 24`: the annotations are GSM8K's calculator calls."""
    return _CALC.sub("", line)


def solution_lines(text: str) -> tuple[str, ...]:
    """The solution as steps: one per non-empty line, stripped, calculator annotations removed."""
    lines = (strip_calculations(line).strip() for line in text.splitlines())
    return tuple(line for line in lines if line)


def split_solution(answer: str) -> tuple[tuple[str, ...], str]:
    """A GSM8K answer field -> (demonstration lines ending in `#### N`, gold number as text).

    Raises ValueError when there is no `#### N` with a number after it.
    """
    body, hashes, tail = answer.rpartition("####")
    gold_text = tail.strip().splitlines()[0].strip() if hashes and tail.strip() else ""
    value = parse_number(gold_text) if gold_text else None
    if value is None:
        raise ValueError(f"the answer does not end with '#### <number>': ...{answer[-60:]!r}")
    gold = format_number(value)
    return solution_lines(body) + (f"#### {gold}",), gold


def check_template(template: str) -> str:
    """A prompt template may only use `{question}` (ValueError otherwise)."""
    unknown = [name for name in template_fields(template) if name != "question"]
    if unknown:
        raise ValueError(f"prompt_template may only use {{question}}, got {{{unknown[0]}}}")
    if "question" not in template_fields(template):
        raise ValueError("prompt_template must contain {question}")
    return template


# ---------------------------------------------------------------------------------------------
# Files.


@dataclass(frozen=True)
class Row:
    """One usable problem of a file: its row number, question, demonstration, gold and split label."""

    row: int
    question: str
    demonstration: tuple[str, ...]
    answer: str
    label: str | None
    solution: str = ""  # the worked solution as written, calculator annotations included


def file_format(path: Path) -> FileFormat:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    if suffix == ".json":
        return "json"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    raise ValueError(f"{path}: unknown file type {suffix!r} (use .jsonl, .json or .parquet)")


def _read_json(path: Path, fmt: FileFormat) -> list[Any]:
    text = read_utf8(path)
    if fmt == "json" and text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: invalid JSON: {error}") from None
        return list(data)
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: line {number} is not valid JSON: {error}") from None
    return records


def _read_parquet(path: Path) -> list[Any]:
    try:
        import pandas as pd

        frame = pd.read_parquet(path)
    except ImportError as error:
        raise ImportError(
            f"reading {path} needs pandas and pyarrow (pip install pandas pyarrow): {error}"
        ) from None
    return frame.to_dict("records")


def read_records(path: Path) -> list[Any]:
    """The file's records as dicts (JSON lines, a JSON list, or parquet rows)."""
    if not path.is_file():
        raise FileNotFoundError(f"GSM8K file not found: {path}")
    fmt = file_format(path)
    return _read_parquet(path) if fmt == "parquet" else _read_json(path, fmt)


def rows_from_records(records: Iterable[Any], source: str, split_field: str | None) -> tuple[Row, ...]:
    """Check the columns and turn records into rows; ValueError names the first bad record."""
    needed = ["question", "answer"] + ([split_field] if split_field else [])
    rows: list[Row] = []
    for number, record in enumerate(records):
        if not isinstance(record, Mapping):
            raise ValueError(f"{source}: record {number} is not an object with fields {needed}")
        missing = [name for name in needed if name not in record]
        if missing:
            raise ValueError(
                f"{source}: record {number} has no column(s) {', '.join(map(repr, missing))} "
                f"(has: {', '.join(map(str, record))}); GSM8K files need {needed}"
            )
        question = str(record["question"]).strip()
        try:
            demonstration, gold = split_solution(str(record["answer"]))
        except ValueError as error:
            raise ValueError(f"{source}: record {number}: {error}") from None
        label = str(record[split_field]).strip().lower() if split_field else None
        rows.append(Row(number, question, demonstration, gold, label, str(record["answer"])))
    if not rows:
        raise ValueError(f"{source}: no records")
    return tuple(rows)


@lru_cache(maxsize=8)
def _load(resolved: str, mtime_ns: int, size: int, split_field: str | None) -> tuple[Row, ...]:
    """Rows of a file, cached by its identity and modification (several tasks may share one file)."""
    return rows_from_records(read_records(Path(resolved)), resolved, split_field)


def load_rows(path: str | os.PathLike[str], split_field: str | None = None) -> tuple[Row, ...]:
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise FileNotFoundError(f"GSM8K file not found: {path}")
    stat = resolved.stat()
    return _load(str(resolved), stat.st_mtime_ns, stat.st_size, split_field)


# ---------------------------------------------------------------------------------------------
# gsm8k.


class GSM8KConfig(NumericConfig):
    """Which file, how to split it, and how to prompt."""

    path: str | None = None
    """JSONL / JSON / parquet with `question` and `answer` (ending `#### N`); None: the built-in sample."""
    test_path: str | None = None
    """A separate test file (GSM8K's test.jsonl); train rows whose question is in it are dropped."""
    split_field: str | None = None
    """A column holding `train` or `test` per row (instead of a hash split or test_path)."""
    prompt_template: str = DEFAULT_TEMPLATE
    """The prompt, with {question}."""

    @field_validator("prompt_template")
    @classmethod
    def _check_template(cls, template: str) -> str:
        return check_template(template)

    @model_validator(mode="after")
    def _check_split_source(self) -> "GSM8KConfig":
        if self.test_path is not None and self.split_field is not None:
            raise ValueError("set test_path or split_field, not both")
        if self.test_path is not None and self.path is None:
            raise ValueError("test_path needs path (the training file)")
        return self


@register_task("gsm8k")
class GSM8KTask(Task):
    """GSM8K: grade-school math word problems from a local JSONL/parquet file, answers after ####."""

    numeric_answers = True  # `#### N` on the last line, read leniently (strict: the marker only)

    Config = GSM8KConfig
    config: GSM8KConfig

    def __init__(self, config: GSM8KConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self.source = cfg.path if cfg.path is not None else "built-in sample"
        self._rows = load_rows(cfg.path if cfg.path is not None else SAMPLE_PATH, cfg.split_field)
        if cfg.test_path is not None:
            self.source = f"{cfg.path} + {cfg.test_path}"
            test_rows = load_rows(cfg.test_path)
            held_out = {row.question for row in test_rows}
            positions = {
                "train": [i for i, row in enumerate(self._rows) if row.question not in held_out],
                "test": list(range(len(self._rows), len(self._rows) + len(test_rows))),
            }
            self._rows = self._rows + test_rows
            self._splits = SplitPositions(self.name, self.source, positions, "file")  # type: ignore[arg-type]
        elif cfg.split_field is not None:
            positions = {s: [i for i, row in enumerate(self._rows) if row.label == s] for s in SPLITS}
            self._splits = SplitPositions(self.name, self.source, positions, f"the {cfg.split_field!r} column")  # type: ignore[arg-type]
        else:
            keys = [row.question for row in self._rows]
            self._splits = SplitPositions.by_hash(self.name, self.source, keys, cfg.seed, cfg.test_fraction, key_name="question")

    def size(self, split: Split) -> int:
        """How many distinct problems a split has (indices wrap around after that)."""
        return self._splits.size(split)

    def make_problem(self, split: Split, index: int) -> Problem:
        position, offset = self._splits.locate(split, index)
        row = self._rows[position]
        return Problem(
            id=f"gsm8k-{split}-{offset}",
            prompt=self.config.prompt_template.format(question=row.question),
            answer=row.answer,
            demonstration=row.demonstration,
            metadata={"row": row.row, "source": self.source, "solution": row.solution},
        )

    def judge(self, problem: Problem, text: str) -> Verdict:
        """The number after `####` (or boxed / "answer is" / last number) against the gold, numerically."""
        return judge_numeric(text, float(problem.answer), abs_tol=self.config.abs_tol, rel_tol=self.config.rel_tol, partial=self.config.partial_reward)

    def _split_by(self) -> str:
        return self._splits.split_by

    def tool_score(self, prompt: str, text: str, finished: bool) -> float | None:
        """A calculator on the equations the text writes (0 if one is wrong, else undecided): it checks
        the arithmetic, not the reasoning (a partial gold-free check)."""
        return calculator_score(text)

    def describe(self) -> str:
        cfg = self.config
        return (
            f"GSM8K: grade-school math word problems from {self.source} ({self.size('train')} train, "
            f"{self.size('test')} test, split by {self._split_by()}); the solution is worked line by line "
            f"and ends with '#### <number>', judged numerically ({cfg.tolerance_text()})."
        )


# ---------------------------------------------------------------------------------------------
# gsm_symbolic.


def _rg_question(entry: Mapping[str, Any]) -> str:
    question = str(entry["question"])
    return question[: -len(RG_SUFFIX)] if question.endswith(RG_SUFFIX) else question


class GSMSymbolicConfig(NumericConfig):
    """Prompt template for reasoning-gym's GSM-symbolic problems."""

    prompt_template: str = DEFAULT_TEMPLATE
    """The prompt, with {question}."""

    @field_validator("prompt_template")
    @classmethod
    def _check_template(cls, template: str) -> str:
        return check_template(template)


@register_task("gsm_symbolic")
class GSMSymbolicTask(Task):
    """GSM-symbolic: GSM-like word problems generated by reasoning-gym, with worked solutions."""

    numeric_answers = True  # `#### N` on the last line, read leniently (strict: the marker only)

    Config = GSMSymbolicConfig
    config: GSMSymbolicConfig

    def __init__(self, config: GSMSymbolicConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        self._stream = EntryStream("gsm_symbolic", {}, cfg.seed, cfg.test_fraction, key=_rg_question)

    def make_problem(self, split: Split, index: int) -> Problem:
        position = self._stream.locate(split, index)
        entry = self._stream.entry(position)
        question = _rg_question(entry)
        answer = format_number(float(entry["answer"]))
        meta = entry.get("metadata") or {}
        demonstration: tuple[str, ...] | None = None
        cot = meta.get("answer_cot")
        if isinstance(cot, str):
            lines = solution_lines(cot)
            if lines and judge_numeric("\n".join(lines), float(answer), abs_tol=0.0).correct:
                demonstration = lines
        return Problem(
            id=f"gsm_symbolic-{split}-{index}",
            prompt=self.config.prompt_template.format(question=question),
            answer=answer,
            demonstration=demonstration,
            metadata={"position": position, "source_index": meta.get("source_index")},
        )

    def judge(self, problem: Problem, text: str) -> Verdict:
        """Numerically, with our own extraction (reasoning-gym's scorer is never used here)."""
        return judge_numeric(text, float(problem.answer), abs_tol=self.config.abs_tol, rel_tol=self.config.rel_tol, partial=self.config.partial_reward)

    def tool_score(self, prompt: str, text: str, finished: bool) -> float | None:
        """A calculator on the equations the text writes (0 if one is wrong, else undecided): it checks
        the arithmetic, not the reasoning (a partial gold-free check)."""
        return calculator_score(text)

    def describe(self) -> str:
        cfg = self.config
        return (
            f"GSM-symbolic: GSM-like word problems generated by reasoning-gym (no download), train and "
            f"test split by a hash of the question (test fraction {cfg.test_fraction}); worked solutions "
            f"end with '#### <number>', judged numerically ({cfg.tolerance_text()})."
        )
