"""Progress reporting: library code takes a `StageBar` (a context manager per stage that yields an
`on_step(step, metrics)` callback) and never prints; the CLI passes `step_bar` (rich bars with ETA),
tests and scripts the silent `no_bar`."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, ContextManager, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)

OnStep = Callable[[int, dict[str, Any]], None]
StageBar = Callable[[str, int], ContextManager[OnStep]]


@contextmanager
def no_bar(description: str, total: int) -> Iterator[OnStep]:
    """A `StageBar` that shows nothing."""
    yield lambda step, metrics: None

SHOWN = ("train/loss", "train/reward", "eval/accuracy")


def _short(metrics: dict[str, Any]) -> str:
    parts = []
    for key in SHOWN:
        if key in metrics:
            parts.append(f"{key.split('/')[-1]}={metrics[key]:.3f}")
    return " ".join(parts)


@contextmanager
def step_bar(description: str, total: int, start: int = 0) -> Iterator[Callable[[int, dict[str, Any]], None]]:
    """Yield an `on_step(step, metrics)` callback that drives one progress bar."""
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[info]}"),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(description, total=total, completed=start, info="")
        last: dict[str, Any] = {}

        def on_step(step: int, metrics: dict[str, Any]) -> None:
            last.update({k: v for k, v in metrics.items() if k in SHOWN})
            progress.update(task, completed=step, info=_short(last))

        yield on_step
