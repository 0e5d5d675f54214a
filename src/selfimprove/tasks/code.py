"""Code: write a Python function that passes unit tests, checked by running it in the sandbox.

Problems come from a local JSONL file in MBPP format (`text` or `prompt`, `code`, `test_list`, optional
`test_setup_code` / `test_imports`, `task_id`) or HumanEval format (`prompt`, `canonical_solution`,
`test`, `entry_point`, `task_id`), or from a small built-in set (`tasks/data/code_sample.jsonl`) when no
path is given. Problems go to train or test by a hash of their id, and are served in a seeded order
with random access (indices wrap around the finite set).

The answer is Python code, in a ```python fence or bare. It is never evaluated here: the candidate and
the tests run together in one sandboxed process (`selfimprove.sandbox.run_tests`), and the score
is 1 only when every test ran and passed; otherwise the reason names the first failing test (with the
value the solution returned), the exception, the timeout or the limit that was hit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Sequence

from pydantic import Field

from selfimprove.tasks.base import SPLITS, UNDECIDED, Problem, Split, Task, TaskConfig, Verdict, register_task, split_of
from selfimprove.sandbox import Limits, run_tests
from selfimprove.tasks.files import read_utf8

logger = logging.getLogger(__name__)

CodeFormat = Literal["mbpp", "humaneval", "auto"]

END_MARKERS = ("<eos>", "<|end|>", "</s>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<pad>")
SAMPLE_FILE = "code_sample.jsonl"

_FENCE_RE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)(?:```|\Z)", re.S)
_PYTHON_TAGS = {"", "python", "python3", "py"}


class CodeConfig(TaskConfig):
    """Where the problems come from, how they are shown, and the sandbox limits for checking answers."""

    path: str | None = None
    """A JSONL file of MBPP- or HumanEval-style problems; None: the built-in sample."""
    format: CodeFormat = "auto"
    """Record format: mbpp, humaneval, or auto (by the columns)."""
    test_fraction: float = Field(0.25, ge=0.0, le=1.0)
    """Share of problems held out for the test split (the built-in sample is small)."""
    show_tests: int = Field(1, ge=0, le=20)
    """MBPP: how many of the tests the prompt shows as a hint."""
    timeout_seconds: float = Field(5.0, gt=0.0, le=600.0)
    """Wall-clock seconds per answer (candidate and tests)."""
    cpu_seconds: float | None = Field(None, gt=0.0, le=600.0)
    """CPU seconds per answer; None: timeout_seconds."""
    memory_mb: int = Field(512, ge=64, le=65536)
    """Memory limit of the sandbox, MB."""
    max_processes: int = Field(16, ge=1, le=4096)
    """Process limit of the sandbox."""
    max_output_bytes: int = Field(1 << 20, ge=1024, le=1 << 30)
    """Output kept from the sandbox, bytes."""
    max_answer_chars: int = Field(20000, ge=100, le=10_000_000)
    """Longer answers are wrong without running them."""

    def limits(self) -> Limits:
        return Limits(
            wall_seconds=self.timeout_seconds,
            cpu_seconds=self.cpu_seconds,
            memory_mb=self.memory_mb,
            max_processes=self.max_processes,
            output_bytes=self.max_output_bytes,
        )


@dataclass(frozen=True)
class CodeProblem:
    """One problem in a common shape, whichever format it came from."""

    key: str  # what identifies it (task id, else the text): decides the split
    format: Literal["mbpp", "humaneval"]
    prompt: str
    reference: str  # the reference solution (HumanEval: the function body that follows the prompt)
    tests: tuple[str, ...] | str  # MBPP: assert statements; HumanEval: the test module
    setup: str = ""
    entry_point: str | None = None


def _record_format(record: dict[str, Any], fmt: CodeFormat, where: str) -> Literal["mbpp", "humaneval"]:
    if fmt != "auto":
        return fmt
    if "entry_point" in record and "test" in record:
        return "humaneval"
    if "test_list" in record:
        return "mbpp"
    raise ValueError(f"{where}: cannot tell the format (need test_list for MBPP, or test and entry_point for "
                     f"HumanEval); keys: {', '.join(sorted(record))}")


def _text(value: Any, name: str, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{where}: field {name!r} must be non-empty text")
    return value.replace("\r\n", "\n")


def parse_record(record: dict[str, Any], fmt: CodeFormat = "auto", where: str = "record") -> CodeProblem:
    """Turn one MBPP or HumanEval record into a `CodeProblem` (clear errors name the record)."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object")
    kind = _record_format(record, fmt, where)
    task_id = record.get("task_id")
    if kind == "humaneval":
        for name in ("prompt", "canonical_solution", "test", "entry_point"):
            if name not in record:
                raise ValueError(f"{where}: HumanEval record lacks {name!r}")
        entry = _text(record["entry_point"], "entry_point", where).strip()
        if not entry.isidentifier():
            raise ValueError(f"{where}: entry_point {entry!r} is not a Python name")
        prompt = _text(record["prompt"], "prompt", where)
        return CodeProblem(
            key=str(task_id) if task_id is not None else prompt,
            format="humaneval",
            prompt=prompt,
            reference=_text(record["canonical_solution"], "canonical_solution", where).rstrip() + "\n",
            tests=_text(record["test"], "test", where),
            entry_point=entry,
        )
    text = record.get("text", record.get("prompt"))
    description = _text(text, "text", where).strip()
    tests = record.get("test_list")
    if not isinstance(tests, list) or not tests or not all(isinstance(t, str) and t.strip() for t in tests):
        raise ValueError(f"{where}: test_list must be a non-empty list of test statements")
    setup_parts = [record.get("test_setup_code") or "", *(record.get("test_imports") or [])]
    return CodeProblem(
        key=str(task_id) if task_id is not None else description,
        format="mbpp",
        prompt=description,
        reference=_text(record.get("code"), "code", where).strip("\n") + "\n",
        tests=tuple(t.replace("\r\n", "\n").strip() for t in tests),
        setup="\n".join(p.replace("\r\n", "\n") for p in setup_parts if p.strip()),
    )


def load_problems(path: str | Path | None, fmt: CodeFormat = "auto") -> list[CodeProblem]:
    """Read a JSONL file (None = the built-in sample); duplicate keys keep the first record."""
    if path is None:
        text = resources.files("selfimprove.tasks").joinpath("data").joinpath(SAMPLE_FILE).read_text(encoding="utf-8")
        name = SAMPLE_FILE
    else:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"code task: no such file {str(p)!r}")
        text, name = read_utf8(p), str(p)
    problems: list[CodeProblem] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{name} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where}: not JSON ({e.msg})") from None
        problem = parse_record(record, fmt, where)
        if problem.key not in seen:
            seen.add(problem.key)
            problems.append(problem)
    if not problems:
        raise ValueError(f"{name}: no problems")
    return problems


def extract_code(text: str) -> str:
    """The code in an answer: the first Python fence (preferring one that defines a function), else the text.

    Text after an end marker is ignored; an unclosed fence runs to the end.
    """
    cut = min((i for i in (text.find(m) for m in END_MARKERS) if i >= 0), default=len(text))
    text = text[:cut]
    blocks = [(tag.lower(), body) for tag, body in _FENCE_RE.findall(text)]
    python = [body for tag, body in blocks if tag in _PYTHON_TAGS]
    if python:
        with_def = [b for b in python if re.search(r"^\s*def\s", b, re.M)]
        return (with_def or python)[0].strip("\n") + "\n"
    if "```" in text:  # a fence of another language only: take the text before it
        text = text[: text.find("```")]
    return text.strip("\n") + "\n"


def _order_key(seed: int, key: str) -> bytes:
    return hashlib.sha256(f"code-order:{seed}:{key}".encode()).digest()


@register_task("code")
class CodeTask(Task):
    """Code: write a Python function that passes unit tests (MBPP/HumanEval JSONL), run in a sandbox."""

    Config = CodeConfig
    config: CodeConfig

    def __init__(self, config: CodeConfig | None = None) -> None:
        super().__init__(config)
        cfg = self.config
        problems = load_problems(cfg.path, cfg.format)
        self._splits: dict[Split, list[CodeProblem]] = {s: [] for s in SPLITS}
        for p in problems:
            self._splits[split_of(p.key, cfg.seed, cfg.test_fraction)].append(p)
        for items in self._splits.values():
            items.sort(key=lambda p: _order_key(cfg.seed, p.key))
        self._limits = cfg.limits()

    def size(self, split: Split) -> int:
        return len(self._splits[split])

    def make_problem(self, split: Split, index: int) -> Problem:
        pool = self._splits[split]
        if not pool:
            raise ValueError(f"code: the {split} split is empty (test_fraction={self.config.test_fraction})")
        cp = pool[index % len(pool)]
        return Problem(
            id=f"code-{split}-{index}",
            prompt=self._prompt(cp),
            answer=cp.reference,
            demonstration=tuple(cp.reference.rstrip("\n").split("\n")),
            metadata={
                "key": cp.key,
                "format": cp.format,
                "tests": list(cp.tests) if isinstance(cp.tests, tuple) else cp.tests,
                "setup": cp.setup,
                "entry_point": cp.entry_point,
            },
        )

    def _prompt(self, cp: CodeProblem) -> str:
        if cp.format == "humaneval":
            return cp.prompt  # the signature and docstring; the answer continues the function
        shown = list(cp.tests)[: self.config.show_tests]
        if not shown:
            return cp.prompt + "\n"
        head = "Your code should pass this test:" if len(shown) == 1 else "Your code should pass these tests:"
        return f"{cp.prompt}\n{head}\n" + "\n".join(shown) + "\n"

    def candidate_code(self, problem: Problem, text: str) -> str:
        """The program to test: the extracted code (HumanEval: after the prompt unless it defines the function)."""
        code = extract_code(text)
        entry = problem.metadata.get("entry_point")
        if problem.metadata.get("format") == "humaneval" and entry:
            if not re.search(rf"^\s*def\s+{re.escape(entry)}\s*\(", code, re.M):
                code = problem.prompt + code
        return code

    def answer_key(self, problem: Problem, text: str) -> str | None:
        """Votes go by the program that would be tested (`candidate_code`: the fenced or bare code,
        HumanEval completions joined to their prompt) with all whitespace runs collapsed to one space,
        so the same program in another layout or with other surrounding prose is one answer; the
        default (the last number in the text) would merge unrelated programs. No program -> None.
        Never runs the code."""
        if not isinstance(text, str) or len(text) > self.config.max_answer_chars:
            return None
        code = self.candidate_code(problem, text)
        if not code.strip() or code.strip() == problem.prompt.strip():
            return None
        return " ".join(code.split())

    def judge(self, problem: Problem, text: str) -> Verdict:
        """Run the answer and the problem's tests in the sandbox; 1 only if every test passes (a sandbox
        failure is a verifier error, caught by `verify`)."""
        if len(text) > self.config.max_answer_chars:
            return Verdict.wrong(f"too long ({len(text)} > {self.config.max_answer_chars} characters)")
        code = self.candidate_code(problem, text)
        if not code.strip() or code.strip() == problem.prompt.strip():
            return Verdict.wrong("empty answer")
        meta = problem.metadata
        tests = meta["tests"]
        report = run_tests(
            code,
            tests if isinstance(tests, str) else list(tests),
            self._limits,
            entry_point=meta.get("entry_point") if meta.get("format") == "humaneval" else None,
            setup_code=meta.get("setup") or "",
        )
        if report.passed:
            return Verdict.right(report.reason)
        return Verdict.wrong(report.reason)

    def tool_score(self, prompt: str, text: str, finished: bool) -> float | None:
        """The tests the prompt shows (MBPP's `assert` lines), run with the answer in the sandbox: 0 if
        one fails, undecided if they pass or the prompt shows none (hidden tests may still fail), and
        undecided for an unfinished answer."""
        shown = [line.strip() for line in prompt.splitlines() if line.strip().startswith("assert ")]
        if not finished or not shown or len(text) > self.config.max_answer_chars:
            return UNDECIDED
        code = extract_code(text)
        if not code.strip():
            return 0.0
        return UNDECIDED if run_tests(code, shown, self._limits).passed else 0.0

    def verify_many(self, problems: Sequence[Problem], texts: Sequence[str], max_workers: int = 8) -> list[Verdict]:
        """`verify` for many answers at once, in parallel sandboxes (each its own process and directory)."""
        if len(problems) != len(texts):
            raise ValueError(f"{len(problems)} problems but {len(texts)} texts")
        if not problems:
            return []
        with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(problems)))) as pool:
            return list(pool.map(self.verify, problems, texts))

    def describe(self) -> str:
        cfg = self.config
        source = cfg.path or f"the built-in sample ({SAMPLE_FILE})"
        return (
            f"Code: write a Python function that passes unit tests; problems from {source} "
            f"({self.size('train')} train / {self.size('test')} test). Answers (a ```python block "
            f"or bare code) run with the tests in a sandbox (timeout {cfg.timeout_seconds:g}s, "
            f"{cfg.memory_mb} MiB, no network, stdlib only); score 1 only if every test passes."
        )
