"""Where a training step's time goes: named phases timed where they run, read once per step.

Any layer wraps its work in `phase("generate")`, `phase("score")`, ... ; the driver calls `take()` at
the end of each step and logs the totals as `time/<phase>` seconds beside the step clock. Phases are
per thread, so the rollout thread of asynchronous RL (whose sampling is off the step's path) does not
add to the learner's step. A phase inside another counts in both: keep phases that are summed disjoint
(the ones below are). Hand-written because it is a dictionary and a clock; profilers cost too much to
leave on in every run.

Phases used by the library (a bench sums them against the step clock):
    generate   the engine sampling tokens (whole conversations' model turns included)
    score      the task's verifier or reward functions, and an environment's turns (tools included)
    reference  the frozen reference's log-probs (a KL term)
    old_logprobs  the proximal log-probs and values ahead of the update (several epochs or minibatches, PPO)
    advantages the estimator
    forward_backward  the update's forward and backward passes
    optimizer  gradient clipping, the optimizer and the schedule, pushing weights to an engine
    rollouts   writing the step's episodes to the run's buffer
    eval       periodic evaluation inside a step
    rollout_wait  asynchronous RL: waiting for the rollout thread's batch (its sampling is off this thread)
    log, checkpoint  the driver writing the metrics line and the checkpoint (counted in the next step's record)
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Iterator

_local = threading.local()


def _totals() -> dict[str, float]:
    totals = getattr(_local, "totals", None)
    if totals is None:
        totals = _local.totals = {}
    return totals


@contextmanager
def phase(name: str) -> Iterator[None]:
    """Add the wall time of the block to this thread's total for `name`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        totals = _totals()
        totals[name] = totals.get(name, 0.0) + time.perf_counter() - start


def take() -> dict[str, float]:
    """This thread's totals since the last call (seconds per phase), and reset them."""
    totals = _totals()
    out = dict(totals)
    totals.clear()
    return out
