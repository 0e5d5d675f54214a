"""Helpers shared by the resume tests: a simulated crash after a given step."""

from __future__ import annotations

from typing import Any, Callable


class Crash(RuntimeError):
    """Raised by `crash_at` to stop a run as a crash would (after its metrics were logged)."""


def crash_at(step: int) -> Callable[[int, dict[str, Any]], None]:
    """An `on_step` callback that crashes the run when step `step` is done."""

    def on_step(done: int, metrics: dict[str, Any]) -> None:
        if done == step:
            raise Crash(f"simulated crash at step {done}")

    return on_step


def sampling_job(method: Any, policy: Any, task: Any, run_dir: Any) -> Any:
    """A `Job` for calling a method's collection phase directly (no learner: collecting needs none)."""
    from selfimprove.train.job import Job

    return Job(policy, None, task, method.make_stream(), method.State(), run_dir)  # type: ignore[arg-type]
