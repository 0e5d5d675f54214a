"""SIGTERM and Ctrl-C as safe stops: a cluster scheduler (Slurm, Kubernetes) sends SIGTERM, waits a
grace period, then kills; a user presses Ctrl-C. Inside the driver's step loop either signal only sets
a flag; the driver finishes the step, writes a checkpoint and raises `Terminated` (SIGTERM, exit 143)
or `KeyboardInterrupt` (Ctrl-C, exit 130). Outside the loop (loading, search, evaluation) they raise at
once, and a second signal always does.
"""

from __future__ import annotations

import logging
import signal
import threading
from contextlib import contextmanager
from types import FrameType
from typing import Iterator

from selfimprove.errors import Terminated

__all__ = ["StopFlag", "Terminated", "stop_at_step_end", "terminate_as_interrupt"]

logger = logging.getLogger(__name__)


class StopFlag:
    """Set when SIGTERM or SIGINT arrived inside a `stop_at_step_end` section; `interrupt()` is the
    exception to stop with."""

    def __init__(self) -> None:
        self.requested = False
        self.signal: int | None = None

    def interrupt(self) -> KeyboardInterrupt:
        return KeyboardInterrupt() if self.signal == signal.SIGINT else Terminated()


_sections: list[StopFlag] = []


def _on_signal(signum: int, frame: FrameType | None) -> None:
    if _sections and not _sections[-1].requested:
        _sections[-1].requested = True
        _sections[-1].signal = signum
        if signum == signal.SIGINT:
            logger.warning("Ctrl-C: finishing this step and saving a checkpoint (press Ctrl-C again to stop at once)")
        return
    raise KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Install the SIGTERM handler for the duration (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def stop_at_step_end() -> Iterator[StopFlag]:
    """A section (the driver's step loop) in which SIGTERM and Ctrl-C wait for the end of the current step."""
    flag = StopFlag()
    _sections.append(flag)
    try:
        yield flag
    finally:
        _sections.remove(flag)
