"""MATH-style problems: free-form answers in `\\boxed{}`, compared symbolically with math-verify.

`math_equal(text, gold)` decides whether a model's final answer equals the gold answer
(`\\frac{1}{2}` = `0.5`, `x=3` = `3`, `1,000` = `1000`, intervals, sets ...). Symbolic comparison can
take unbounded time on hostile input (`9^{9^{9^{9}}}` makes sympy build a number with ~10^8 digits,
in C, without ever returning to the interpreter), and math-verify's own time limit uses
`signal.alarm`, which only works in the main thread. So math-verify's timeouts are switched off
(`parsing_timeout=None`, `timeout_seconds=None`) and every comparison runs in a small pool of
persistent worker processes (`MathVerifierPool`): the caller waits at most `timeout` seconds for the
answer, and a worker that overruns is killed (SIGKILL, which works even inside a long C call) and
replaced on demand. Workers are plain subprocesses (`python -c`, speaking JSON lines over pipes), so
this works from any thread, from daemonic multiprocessing workers (which may not start
multiprocessing children) and whatever the caller's `__main__` looks like (POSIX: `select.poll`).
Plain integers and identical texts are decided in the caller without a worker.

The `math` task serves MATH-format problems (`problem`, `solution` with a final `\\boxed{}`, or an
explicit `answer`) from a local JSONL/parquet file, or a small built-in set when no path is given.
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import random
import re
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

from pydantic import Field

from selfimprove.tasks.base import SPLITS, TASKS, Problem, Split, Task, TaskConfig, Verdict, split_of

logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 200_000  # longer model texts are rejected outright (extraction is linear anyway)
MAX_ANSWER_CHARS = 2_000  # longest final answer (boxed content or gold) that is ever parsed
MAX_FREE_CHARS = 2_000  # without a \boxed{}, only this tail of the text is searched (require_boxed=False)
MAX_INT_DIGITS = 100  # plain integers up to this length are compared in-process, without a worker
DEFAULT_TIMEOUT = 5.0
MIN_TIMEOUT, MAX_TIMEOUT = 0.05, 600.0
STARTUP_TIMEOUT = 60.0  # a new worker must import math-verify and say "ready" within this
RETRY_AFTER_FAILED_START = 30.0  # after a worker failed to start, fail fast for this long
WORKER_MEMORY_BYTES = 4 * 2**30  # address-space limit of a worker (best effort, POSIX)
DEFAULT_WORKERS = 2

_BOX_MACROS = ("\\boxed", "\\fbox")
_TOKEN_RE = re.compile(r"[^\s$]+")  # the argument of `\boxed 5`
_INT_RE = re.compile(rf"[-+]?[0-9]{{1,{MAX_INT_DIGITS}}}")
_BUILTIN_DATA = "math_sample.jsonl"


# ---------------------------------------------------------------------------------------------
# Answer extraction (in the caller's process: pure string work, linear time).


@dataclass(frozen=True)
class Boxed:
    """The content of the last `\\boxed{...}` (or `\\fbox{...}`) of a text, or why there is none."""

    content: str | None
    problem: str | None = None


def last_boxed(text: str) -> Boxed:
    """The content of the last `\\boxed{...}` in `text` (braces balanced, `\\{` `\\}` skipped).

    Also accepts `\\boxed 5` (one token) and `\\fbox{...}`. A truncated last box (no closing brace)
    counts as no answer: the model did not finish it.
    """
    start, macro = max(((text.rfind(m), m) for m in _BOX_MACROS), key=lambda t: t[0])
    if start < 0:
        return Boxed(None, "no \\boxed{} answer")
    i = start + len(macro)
    if i < len(text) and text[i].isalpha():  # a longer macro name (\boxedfoo), not a box
        return Boxed(None, "no \\boxed{} answer")
    while i < len(text) and text[i] in " \t":
        i += 1
    if i >= len(text):
        return Boxed(None, f"empty {macro}")
    if text[i] != "{":
        token = _TOKEN_RE.match(text, i)
        return Boxed(token.group(0)) if token else Boxed(None, f"empty {macro}")
    depth = 0
    j = i
    while j < len(text):
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                content = text[i + 1 : j].strip()
                return Boxed(content) if content else Boxed(None, f"empty {macro}{{}}")
        j += 1
    return Boxed(None, f"unclosed {macro}{{")


def _clean_gold(gold: str) -> str:
    """A gold answer as given: stripped, and unwrapped if it came as `\\boxed{...}` or `$...$`."""
    gold = gold.strip()
    if any(m in gold for m in _BOX_MACROS):
        boxed = last_boxed(gold)
        if boxed.content is not None:
            gold = boxed.content
    if len(gold) >= 2 and gold[0] == "$" and gold[-1] == "$":
        gold = gold.strip("$").strip()
    return gold


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# The comparison itself (runs inside a worker process).


def _compare(request: Mapping[str, Any]) -> tuple[bool, str]:
    """Parse gold and prediction with math-verify (its timeouts off) and compare them."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify

    configs = [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]
    gold = str(request["gold"])
    gold_parsed = parse("\\boxed{" + gold + "}", extraction_config=configs, parsing_timeout=None)
    if not gold_parsed:
        return False, f"gold answer {_short(gold)!r} is unparsable"
    if request.get("boxed") is not None:
        pred = str(request["boxed"])
        pred_parsed = parse("\\boxed{" + pred + "}", extraction_config=configs, parsing_timeout=None)
    else:  # no \boxed{}: math-verify's own search ("final answer is ...", last expression)
        pred = str(request["text"])
        pred_parsed = parse(pred, parsing_timeout=None)
    if not pred_parsed:
        return False, f"unparsable answer {_short(pred)!r}"
    if verify(gold_parsed, pred_parsed, timeout_seconds=None):
        return True, "correct"
    return False, f"answer {_short(pred)!r} != {_short(gold)!r}"


def _limit_cpu(seconds: float) -> None:
    """Let the kernel end this worker (SIGXCPU) if one request burns `seconds` (+2) of CPU.

    The caller kills an overrunning worker anyway; this only matters for an orphan whose caller
    died mid-request while the worker is stuck in a C call that the watchdog thread cannot interrupt.
    """
    try:
        import resource

        usage = resource.getrusage(resource.RUSAGE_SELF)
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = math.ceil(usage.ru_utime + usage.ru_stime + seconds + 2.0)
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    except (ImportError, ValueError, OSError):
        pass


def _worker_main() -> None:
    """Entry point of a worker: answer one JSON request per line on stdin until EOF."""
    protocol = os.fdopen(os.dup(1), "wb", buffering=0)
    os.dup2(2, 1)  # stray prints from libraries go to stderr, never into the protocol
    logging.disable(logging.CRITICAL)  # math-verify warns that its timeouts are off: we know
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        if soft == resource.RLIM_INFINITY or soft > WORKER_MEMORY_BYTES:
            resource.setrlimit(resource.RLIMIT_AS, (WORKER_MEMORY_BYTES, hard))
    except (ImportError, ValueError, OSError):
        pass
    parent = os.getppid()

    def watchdog() -> None:  # an orphan (the caller died mid-request) must not compute forever
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watchdog, daemon=True).start()
    import math_verify  # noqa: F401  (import before saying ready, so requests are fast)

    protocol.write(b"ready\n")
    for line in sys.stdin.buffer:
        try:
            request = json.loads(line)
            _limit_cpu(float(request.get("limit", MAX_TIMEOUT)))
            equal, reason = _compare(request)
        except Exception as error:  # noqa: BLE001 (MemoryError and RecursionError included)
            equal, reason = False, f"verifier error: {type(error).__name__}"
        protocol.write(json.dumps({"equal": bool(equal), "reason": str(reason)}).encode() + b"\n")


# ---------------------------------------------------------------------------------------------
# The worker pool (in the caller's process).


class _WorkerDied(Exception):
    pass


def _bootstrap_code() -> str:
    """`python -c` code of a worker: import this module without running `selfimprove.tasks`'s
    `__init__` (which imports every task), using the caller's `sys.path`."""
    tasks_dir = str(Path(__file__).resolve().parent)
    paths = [p for p in sys.path if isinstance(p, str)]
    return (
        "import sys, types\n"
        f"sys.path[:] = {paths!r}\n"
        "pkg = types.ModuleType('selfimprove.tasks')\n"
        f"pkg.__path__ = [{tasks_dir!r}]\n"
        "sys.modules['selfimprove.tasks'] = pkg\n"
        "from selfimprove.tasks.mathqa import _worker_main\n"
        "_worker_main()\n"
    )


class _Worker:
    """One worker subprocess with a line-buffered reader that honours a deadline."""

    def __init__(self, startup_timeout: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _bootstrap_code()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C in a terminal goes to the trainer, not to the workers
        )
        self._buffer = b""
        try:
            line = self._read_line(time.monotonic() + startup_timeout)
        except BaseException:
            self.kill()
            raise
        if line != b"ready":
            self.kill()
            raise _WorkerDied(f"unexpected greeting {line[:80]!r}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def _read_line(self, deadline: float) -> bytes:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            poller = select.poll()  # not select.select: it fails for descriptors >= 1024
            poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
            if not poller.poll(max(1, math.ceil(remaining * 1000))):
                raise TimeoutError
            chunk = os.read(fd, 65536)
            if not chunk:
                raise _WorkerDied(f"worker exited with code {self.proc.poll()}")
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def ask(self, request: Mapping[str, Any], timeout: float) -> tuple[bool, str]:
        assert self.proc.stdin is not None
        # Requests are capped well below a pipe's buffer (64 KiB), so this write never blocks; ASCII
        # JSON also carries lone surrogates, which cannot be encoded as UTF-8.
        data = json.dumps(request).encode() + b"\n"
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as error:
            raise _WorkerDied(f"worker gone ({type(error).__name__})") from error
        reply = json.loads(self._read_line(time.monotonic() + timeout))
        return bool(reply["equal"]), str(reply["reason"])

    def kill(self) -> None:
        try:
            self.proc.kill()
        except OSError:
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:  # pragma: no cover (SIGKILL does not take 5 s)
            logger.warning("math worker %d did not exit after SIGKILL", self.proc.pid)


class MathVerifierPool:
    """At most `max_workers` persistent worker processes that run `math-verify` under a time limit.

    Thread-safe: concurrent callers each get their own worker, or wait for one to come free (at
    most the time limit of the comparisons in progress, since an overrunning worker is killed).
    Workers start on demand (about a second) and are killed at exit. After a `fork` the child
    starts its own workers instead of sharing the parent's pipes.
    """

    def __init__(self, max_workers: int = DEFAULT_WORKERS, startup_timeout: float = STARTUP_TIMEOUT) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.max_workers = max_workers
        self.startup_timeout = startup_timeout
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._cond = threading.Condition()
        self._idle: list[_Worker] = []
        self._count = 0  # idle + busy + starting
        self._closed = False
        self._failed_start: tuple[float, str] | None = None

    def compare(self, request: Mapping[str, Any], timeout: float) -> tuple[bool, str]:
        """Run one comparison in a worker; `(False, "timeout ...")` if it takes over `timeout` s."""
        try:
            worker = self._acquire()
        except Exception as error:  # noqa: BLE001
            return False, f"verifier unavailable: {error}"
        try:
            result = worker.ask(request, timeout)
        except TimeoutError:
            self._discard(worker)
            return False, f"timeout: no verdict within {timeout:g} s"
        except (_WorkerDied, ValueError, KeyError, OSError) as error:
            self._discard(worker)
            logger.warning("math worker failed: %s", error)
            return False, f"verifier error: {error}"
        except BaseException:  # e.g. KeyboardInterrupt mid-request: the worker's state is unknown
            self._discard(worker)
            raise
        self._release(worker)
        return result

    def _acquire(self) -> _Worker:
        if os.getpid() != self._pid:  # forked: the parent's workers and lock are not ours
            self._reset()
        with self._cond:
            while True:
                if self._closed:
                    raise RuntimeError("the pool is closed")
                while self._idle:
                    worker = self._idle.pop()
                    if worker.alive():
                        return worker
                    self._count -= 1
                    worker.kill()
                if self._failed_start is not None:
                    when, why = self._failed_start
                    if time.monotonic() - when < RETRY_AFTER_FAILED_START:
                        raise RuntimeError(why)
                    self._failed_start = None
                if self._count < self.max_workers:
                    self._count += 1
                    break
                self._cond.wait()
        try:
            return _Worker(self.startup_timeout)
        except BaseException as error:
            with self._cond:
                self._count -= 1
                if isinstance(error, Exception):
                    why = "worker did not start in time" if isinstance(error, TimeoutError) else str(error)
                    self._failed_start = (time.monotonic(), f"math worker failed to start: {why}")
                    logger.error("math worker failed to start: %s", why)
                self._cond.notify_all()  # every waiter should learn it now, not wait for a release
            raise

    def _release(self, worker: _Worker) -> None:
        with self._cond:
            if not self._closed:
                self._idle.append(worker)
                self._cond.notify()
                return
            self._count -= 1
        worker.kill()

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        with self._cond:
            self._count -= 1
            self._cond.notify()

    def close(self) -> None:
        """Kill the idle workers; busy ones are killed when their caller returns them."""
        if os.getpid() != self._pid:
            return
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
            self._cond.notify_all()
        for worker in idle:
            worker.kill()


_default_pool: MathVerifierPool | None = None
_default_lock = threading.Lock()


def default_pool() -> MathVerifierPool:
    """The process-wide pool used by `math_equal` (created on first use, closed at exit)."""
    global _default_pool
    with _default_lock:
        if _default_pool is None or _default_pool._pid != os.getpid():
            _default_pool = MathVerifierPool()
            atexit.register(_default_pool.close)
        return _default_pool


def _forget_default_pool() -> None:
    global _default_pool, _default_lock
    _default_pool = None
    _default_lock = threading.Lock()  # it may have been held by another thread at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_default_pool)


# ---------------------------------------------------------------------------------------------
# The public comparison.


def _bounded_timeout(timeout: object) -> float:
    try:
        value = float(timeout)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return DEFAULT_TIMEOUT
    if math.isnan(value):
        return DEFAULT_TIMEOUT
    return min(max(value, MIN_TIMEOUT), MAX_TIMEOUT)


def math_equal(
    pred_text: str,
    gold: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    require_boxed: bool = True,
    pool: MathVerifierPool | None = None,
) -> tuple[bool, str]:
    """Whether the final answer of `pred_text` equals `gold` (a LaTeX/plain answer), and why.

    The answer is the last `\\boxed{...}` of the text. Without one the text is wrong, unless
    `require_boxed=False`, in which case math-verify searches the text's tail for a final answer.
    Exact text matches and plain integers are decided here; everything else goes to a worker
    process of `pool` (default: `default_pool()`) and takes at most `timeout` seconds once a
    worker is free (a worker that overruns is killed). Never raises on any input.
    """
    try:
        if not isinstance(pred_text, str):
            return False, "not text"
        if not isinstance(gold, str):
            return False, "gold answer is not text"
        if len(pred_text) > MAX_TEXT_CHARS:
            return False, f"text too long ({len(pred_text)} > {MAX_TEXT_CHARS} characters)"
        gold = _clean_gold(gold)
        if not gold:
            return False, "empty gold answer"
        if len(gold) > MAX_ANSWER_CHARS:
            return False, f"gold answer too long ({len(gold)} > {MAX_ANSWER_CHARS} characters)"
        boxed = last_boxed(pred_text)
        request: dict[str, Any] = {"gold": gold}
        if boxed.content is not None:
            pred = boxed.content
            if len(pred) > MAX_ANSWER_CHARS:
                return False, f"answer too long ({len(pred)} > {MAX_ANSWER_CHARS} characters)"
            if pred == gold:
                return True, "correct"
            if _INT_RE.fullmatch(pred) and _INT_RE.fullmatch(gold):
                equal = int(pred) == int(gold)
                return equal, "correct" if equal else f"answer {_short(pred)!r} != {_short(gold)!r}"
            request["boxed"] = pred
        elif require_boxed or boxed.problem != "no \\boxed{} answer":
            return False, boxed.problem or "no \\boxed{} answer"
        else:
            request["text"] = pred_text[-MAX_FREE_CHARS:]
        limit = _bounded_timeout(timeout)
        request["limit"] = limit
        return (pool or default_pool()).compare(request, limit)
    except Exception as error:  # noqa: BLE001 (a verifier bug must not stop a training run)
        logger.exception("math_equal failed")
        return False, f"verifier error: {type(error).__name__}"


# ---------------------------------------------------------------------------------------------
# The task.


class MathConfig(TaskConfig):
    """Where the problems come from and how answers are judged."""

    path: str | None = None  # JSONL / JSON / parquet with `problem` and `solution` and/or `answer`
    timeout: float = Field(DEFAULT_TIMEOUT, gt=0.0, le=MAX_TIMEOUT)  # seconds per comparison
    require_boxed: bool = True  # an answer without \boxed{} is wrong


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
    text = path.read_text(encoding="utf-8")
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
                answer=_clean_gold(answer),
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


@TASKS.register("math")
class MathTask(Task):
    """MATH: competition-style problems with free-form answers in \\boxed{}, checked symbolically."""

    name = "math"
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

    def problem(self, split: Split, index: int) -> Problem:
        """The `index`-th problem of a seeded shuffle of the split; each pass over it reshuffles."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r} (known: {', '.join(SPLITS)})")
        if index < 0:
            raise ValueError(f"index must be >= 0, got {index}")
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

    def verify(self, problem: Problem, text: str) -> Verdict:
        """Compare the last \\boxed{} of the text with the gold answer (math-verify, time-limited)."""
        try:
            equal, reason = math_equal(
                text, problem.answer, timeout=self.config.timeout, require_boxed=self.config.require_boxed
            )
        except Exception:  # noqa: BLE001 (math_equal never raises; belt and braces)
            logger.exception("math verifier failed")
            return Verdict.wrong("verifier error")
        return Verdict.right(reason) if equal else Verdict.wrong(reason)

    def describe(self) -> str:
        return (
            f"MATH: free-form math problems from {self.source} ({self.size('train')} train, "
            f"{self.size('test')} test). The answer is the last \\boxed{{}} of the text, compared with "
            f"the gold answer by math-verify (fractions, radicals, intervals, sets, x=3 vs 3) in a worker "
            f"process under a {self.config.timeout:g} s limit."
        )
