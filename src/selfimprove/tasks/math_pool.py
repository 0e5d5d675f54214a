"""`math_equal`: is a model's final answer equal to a gold answer, decided by math-verify in a pool of
worker processes with our own time limit.

Symbolic comparison can take unbounded time on hostile input (`9^{9^{9^{9}}}` makes sympy build a
number with ~10^8 digits, in C, without ever returning to the interpreter), and math-verify's own time
limit uses `signal.alarm`, which only works in the main thread. So math-verify's timeouts are switched
off (`parsing_timeout=None`, `timeout_seconds=None`) and every comparison runs in a small pool of
persistent worker processes (`MathVerifierPool`): the caller waits at most `timeout` seconds for the
answer, and a worker that overruns is killed (SIGKILL, which works even inside a long C call) and
replaced on demand. Workers are plain subprocesses (`python -c`, speaking JSON lines over pipes), so
this works from any thread, from daemonic multiprocessing workers (which may not start
multiprocessing children) and whatever the caller's `__main__` looks like (POSIX: `select.poll`).
Plain integers and identical texts are decided in the caller without a worker. The final answer is
the last `\\boxed{}` (`answers.last_boxed`, strict).
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping

from selfimprove.tasks.answers import last_boxed
from selfimprove.tasks.math_worker import MAX_TIMEOUT, _short

logger = logging.getLogger(__name__)

MAX_TEXT_CHARS = 200_000  # longer model texts are rejected outright (extraction is linear anyway)
MAX_ANSWER_CHARS = 2_000  # longest final answer (boxed content or gold) that is ever parsed
MAX_FREE_CHARS = 2_000  # without a \boxed{}, only this tail of the text is searched (require_boxed=False)
MAX_INT_DIGITS = 100  # plain integers up to this length are compared in-process, without a worker
DEFAULT_TIMEOUT = 5.0
MIN_TIMEOUT = 0.05
STARTUP_TIMEOUT = 60.0  # a new worker must import math-verify and say "ready" within this
RETRY_AFTER_FAILED_START = 30.0  # after a worker failed to start, fail fast for this long
DEFAULT_WORKERS = 2

_INT_RE = re.compile(rf"[-+]?[0-9]{{1,{MAX_INT_DIGITS}}}")


def clean_gold(gold: str) -> str:
    """A gold answer as given: stripped, and unwrapped if it came as `\\boxed{...}` or `$...$`."""
    gold = gold.strip()
    if "\\boxed" in gold or "\\fbox" in gold:
        boxed = last_boxed(gold)
        if boxed.content is not None:
            gold = boxed.content
    if len(gold) >= 2 and gold[0] == "$" and gold[-1] == "$":
        gold = gold.strip("$").strip()
    return gold


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
        "from selfimprove.tasks.math_worker import _worker_main\n"
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
        gold = clean_gold(gold)
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
