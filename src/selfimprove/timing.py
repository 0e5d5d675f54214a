"""Where a training step's time goes: named phases timed where they run, read once per step.

Any layer wraps its work in `phase("generate")`, `phase("score")`, ... ; the driver calls `take()` at
the end of each step and logs the totals as `time/<phase>` seconds beside the step clock. Phases are
per thread, so the rollout thread of asynchronous RL (whose sampling is off the step's path) does not
add to the learner's step. Phases are exclusive: a phase opened inside another pauses it (evaluation's
scoring is `score`, not also `eval`), so the totals of a span never add up to more than the span.
Hand-written because it is a dictionary and a clock; profilers cost too much to leave on in every run.

Phases used by the library (a bench sums them against the step clock):
    generate   an engine sampling tokens (`generate_ids` of every engine)
    score      the task's verifier or reward functions, and an environment's turns (tools included)
    reference  the frozen reference's log-probs (a KL term)
    old_logprobs  the proximal log-probs and values ahead of the update (several epochs or minibatches, PPO)
    advantages the estimator
    forward_backward  the update's forward and backward passes
    optimizer  gradient clipping, the optimizer and the schedule, pushing weights to an engine
    rollouts   writing the step's episodes to the run's buffer
    eval       periodic evaluation inside a step (less its own generating and scoring)
    rollout_wait  asynchronous RL: waiting for the rollout thread's batch (its sampling is off this thread)
    log, checkpoint  the driver writing the metrics line and the checkpoint (counted in the next step's record)
"""

from __future__ import annotations

import functools
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

clock: Callable[[], float] = time.perf_counter  # tests put a made-up clock here
_local = threading.local()


def _state() -> tuple[dict[str, float], list[list]]:
    if not hasattr(_local, "totals"):
        _local.totals, _local.open = {}, []
    return _local.totals, _local.open


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Add the wall time of the block to this thread's total for `name`, less the phases inside it."""
    totals, open_ = _state()
    now = clock()
    if open_:  # the enclosing phase pauses: what it ran so far is its own
        outer = open_[-1]
        totals[outer[0]] = totals.get(outer[0], 0.0) + now - outer[1]
    open_.append([name, now])
    try:
        yield
    finally:
        end = clock()
        _, began = open_.pop()
        totals[name] = totals.get(name, 0.0) + end - began
        if open_:  # the enclosing phase resumes
            open_[-1][1] = end


def timed(name: str) -> Callable[[F], F]:
    """A decorator: every call of the function is `phase(name)`."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def inner(*args: Any, **kwargs: Any) -> Any:
            with phase(name):
                return fn(*args, **kwargs)

        return inner  # type: ignore[return-value]

    return wrap


def take() -> dict[str, float]:
    """This thread's totals since the last call (seconds per phase), and reset them."""
    totals, _ = _state()
    out = dict(totals)
    totals.clear()
    return out
