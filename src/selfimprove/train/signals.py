"""SIGTERM as a preemption-safe stop: a cluster scheduler (Slurm, Kubernetes) sends SIGTERM, waits a
grace period, then kills. Inside the driver's step loop the signal only sets a flag; the driver
finishes the step, writes a checkpoint and raises `Terminated` (a KeyboardInterrupt, so the CLI ends
with the same line as Ctrl-C). Outside the loop (loading, search, evaluation) it raises at once, and
a second SIGTERM always does. Ctrl-C keeps Python's immediate KeyboardInterrupt.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Iterator

from selfimprove.errors import Terminated

__all__ = ["StopFlag", "Terminated", "stop_at_step_end", "terminate_as_interrupt"]


class StopFlag:
    """Set when SIGTERM arrived inside a `stop_at_step_end` section."""

    def __init__(self) -> None:
        self.requested = False


_sections: list[StopFlag] = []


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    if _sections and not _sections[-1].requested:
        _sections[-1].requested = True
        return
    raise Terminated()


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Install the SIGTERM handler for the duration (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def stop_at_step_end() -> Iterator[StopFlag]:
    """A section (the driver's step loop) in which SIGTERM waits for the end of the current step."""
    flag = StopFlag()
    _sections.append(flag)
    try:
        yield flag
    finally:
        _sections.remove(flag)
