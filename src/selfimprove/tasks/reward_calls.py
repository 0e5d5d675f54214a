"""Users' reward functions called as TRL's GRPOTrainer calls them: once per batch, every column a list.

`fn(prompts=[...], completions=[...], **columns) -> one value per completion`, where a value is a number
(int, float, bool, numpy or torch scalar) or None ("no opinion on this completion", TRL's convention),
and the result a list, tuple, numpy array or 1-D torch tensor. A list of functions is combined as TRL
combines `reward_funcs` with `reward_weights`: the weighted sum over the functions that gave a value (a
completion no function scored gets 0). `async def` functions of one batch run concurrently on one event
loop kept for the process (in a thread of its own), while the plain ones run one after another on the
calling thread, as TRL runs them; every call has a time limit.

A call that raises, runs out of time or returns something else (a wrong length, a string, inf) *fails*:
its completions get no value from it, the failure is logged once per call with the function's name, and
each completion records which functions failed for it. When every call of a batch fails the batch
raises `RewardError` (the run stops with one line; the CLI writes the traceback to a log file).

Written by hand: TRL's calling code lives inside its trainer; this is the same contract, applied to any
task's batch. On the main thread a plain function's time limit is SIGALRM (so signal-using libraries,
math_verify's timeouts, work as in TRL); off it (the asynchronous rollout thread) the call runs in a
daemon thread that is abandoned at the limit, and the function is not called again while that runs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from selfimprove.errors import RewardError

logger = logging.getLogger(__name__)

__all__ = ["RewardBatch", "RewardFunctions", "RewardSpec"]


@dataclass(frozen=True)
class RewardSpec:
    """One reward function: where it came from, its name in metrics, its weight."""

    path: str
    name: str
    fn: Callable[..., Any]
    weight: float = 1.0

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)


@dataclass
class RewardBatch:
    """A batch's rewards: the combined reward per completion, each function's values, and failures."""

    totals: list[float]
    values: dict[str, list[float | None]]
    failed: dict[str, str] = field(default_factory=dict)  # function name -> why its call failed

    def parts(self, i: int) -> dict[str, float | None]:
        return {name: values[i] for name, values in self.values.items()}


class _Failed(Exception):
    """A call that did not give one number (or None) per completion."""


def _values(result: Any, n: int) -> list[float | None]:
    """The call's result as n floats or Nones; `_Failed` saying why when it is not that."""
    if hasattr(result, "tolist") and not isinstance(result, (list, tuple)):  # numpy array, torch tensor
        if getattr(result, "ndim", 1) != 1:
            raise _Failed(f"returned an array of shape {tuple(getattr(result, 'shape', ()))}, not one value per completion")
        result = result.tolist()
    if not isinstance(result, (list, tuple)):
        raise _Failed(f"returned {type(result).__name__}, not a list of one number per completion")
    if len(result) != n:
        raise _Failed(f"returned {len(result)} value{'s' * (len(result) != 1)} for {n} completion{'s' * (n != 1)}")
    out: list[float | None] = []
    for i, value in enumerate(result):
        if value is None:
            out.append(None)
            continue
        if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy / torch scalar
            value = value.item()
        if not isinstance(value, (int, float)):  # bool is an int: 1.0 / 0.0, as torch.tensor makes it
            raise _Failed(f"returned {type(value).__name__} {value!r:.40} for completion {i}: return numbers (or None)")
        number = float(value)
        if math.isnan(number):
            out.append(None)  # TRL turns None into NaN: the same "no value"
        elif math.isinf(number):
            raise _Failed(f"returned {number} for completion {i}: rewards must be finite")
        else:
            out.append(number)
    return out


class _Loop:
    """One event loop in a daemon thread for the process's `async def` reward functions: kept across
    batches, so module-level async clients (httpx, aiohttp, OpenAI's) keep their loop."""

    _loop: asyncio.AbstractEventLoop | None = None
    _lock = threading.Lock()

    @classmethod
    def submit(cls, coroutine: Any) -> Any:
        with cls._lock:
            if cls._loop is None or cls._loop.is_closed():
                cls._loop = asyncio.new_event_loop()
                threading.Thread(target=cls._loop.run_forever, name="reward-loop", daemon=True).start()
            return asyncio.run_coroutine_threadsafe(coroutine, cls._loop)


class _TimedOut(BaseException):  # not an Exception: a function's own `except Exception` does not swallow it
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _TimedOut()


def _call_in_main_thread(fn: Callable[[], Any], timeout: float) -> Any:
    """`fn()` on this (the main) thread, stopped by SIGALRM after `timeout` seconds: libraries that use
    signals themselves (math_verify's timeouts) work, as they do in TRL's single-threaded calls."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return fn()
    except _TimedOut:
        raise TimeoutError(f"took more than {timeout:g} s") from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class RewardFunctions:
    """The recipe's reward functions (see the module docstring), called once per batch."""

    def __init__(self, specs: Sequence[RewardSpec], timeout: float = 60.0) -> None:
        if not specs:
            raise ValueError("no reward functions")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"reward functions need distinct names, got {names}")
        self.specs = list(specs)
        self.timeout = timeout
        self._stuck: dict[str, threading.Thread] = {}  # off the main thread: calls that outlived their limit

    def _call(self, spec: RewardSpec, kwargs: Mapping[str, Any]) -> Any:
        """A plain function's call with the time limit: on the main thread, stopped by SIGALRM; elsewhere
        (the asynchronous rollout thread, a Ray actor's thread) in a daemon thread that is abandoned at the
        limit, and the function is not called again until that call has ended."""
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer"):
            return _call_in_main_thread(lambda: spec.fn(**kwargs), self.timeout)
        stuck = self._stuck.get(spec.name)
        if stuck is not None and stuck.is_alive():
            raise TimeoutError("its previous call, past the time limit, is still running")
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["result"] = spec.fn(**kwargs)
            except BaseException as err:  # noqa: BLE001 - handed back below
                box["error"] = err

        thread = threading.Thread(target=target, name=f"reward-{spec.name}", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            self._stuck[spec.name] = thread
            raise TimeoutError(f"took more than {self.timeout:g} s")
        if "error" in box:
            raise box["error"]
        return box.get("result")

    @property
    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def score(self, prompts: Sequence[str], completions: Sequence[str], columns: Mapping[str, Sequence[Any]]) -> RewardBatch:
        """Call every function once on the batch; combine; raise `RewardError` when every call failed."""
        n = len(completions)
        kwargs = {"prompts": list(prompts), "completions": list(completions), **{k: list(v) for k, v in columns.items()}}
        results: dict[str, Any] = {}
        began = time.monotonic()
        pending = {}  # async functions run concurrently on the loop, beside the plain ones below
        for spec in self.specs:
            if spec.is_async:
                try:
                    pending[spec.name] = _Loop.submit(spec.fn(**kwargs))
                except Exception as err:  # noqa: BLE001 - making the coroutine failed
                    results[spec.name] = err
        for spec in self.specs:
            if not spec.is_async:
                try:
                    results[spec.name] = self._call(spec, kwargs)
                except Exception as err:  # noqa: BLE001 - this call's failure
                    results[spec.name] = err
        for name, future in pending.items():
            try:  # a coroutine that blocks its loop still times out here, on this side
                results[name] = future.result(timeout=max(0.0, began + self.timeout - time.monotonic()))
            except concurrent.futures.TimeoutError:
                future.cancel()
                results[name] = TimeoutError(f"took more than {self.timeout:g} s")
            except Exception as err:  # noqa: BLE001
                results[name] = err
        values: dict[str, list[float | None]] = {}
        failed: dict[str, str] = {}
        errors: dict[str, BaseException] = {}
        for spec in self.specs:
            result = results.get(spec.name, TimeoutError("no result"))
            try:
                if isinstance(result, BaseException):
                    raise result
                values[spec.name] = _values(result, n)
            except Exception as err:  # noqa: BLE001
                why = str(err) if isinstance(err, _Failed) else f"raised {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
                failed[spec.name] = why
                errors[spec.name] = err
                values[spec.name] = [None] * n
                logger.warning("reward function %s (%s) %s: %d completions got no value from it", spec.name, spec.path, why, n)
        if n and len(failed) == len(self.specs):
            name = self.specs[0].name
            raise RewardError(f"every reward function failed on a batch of {n} completions; {name} "
                              f"({self.specs[0].path}) {failed[name]}") from errors[name]
        totals = [sum(s.weight * v for s in self.specs if (v := values[s.name][i]) is not None) for i in range(n)]
        return RewardBatch(totals, values, failed)
