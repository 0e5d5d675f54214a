"""Progress reporting: library code takes a `StageBar` (a context manager per stage that yields an
`on_step(step, metrics)` callback) and never prints; the CLI passes `step_bar` (rich bars with ETA),
tests and scripts the silent `no_bar`."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Callable, ContextManager, Iterator, Sequence

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

console = Console(stderr=True, soft_wrap=True)  # progress and messages; text lines never cut or folded at 80 columns
output = Console(soft_wrap=True)  # results (tables) on standard output

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

        def stage(name: str, done: int, of: int) -> None:
            """A phase after the steps (the final evaluation): the bar counts its items instead."""
            progress.update(task, description=f"{description}: {name}", completed=done, total=of)

        on_step.stage = stage  # type: ignore[attr-defined]
        on_step.note = lambda text: progress.console.print(text)  # type: ignore[attr-defined]
        yield on_step


def stage(on_step: Any, name: str, done: int, of: int) -> None:
    """Tell a progress callback that supports it (`step_bar`'s) about a phase after the steps."""
    report = getattr(on_step, "stage", None)
    if report is not None:
        report(name, done, of)


def note(on_step: Any, text: str) -> None:
    """A one-line message through a progress callback that shows text (`step_bar`'s); otherwise logged."""
    show = getattr(on_step, "note", None)
    if show is not None:
        show(text)
    else:
        logging.getLogger("selfimprove").info(text)


def show_table(title: str | None, header: Sequence[str], rows: Sequence[Sequence[Any]], *, left: int = 1) -> None:
    """A results table on standard output: a rich table on a terminal (cells fold, never cut), plain
    Markdown when the output is a pipe or a file (full width, readable and pasteable; `|` in a cell
    escaped). The first `left` columns are left aligned, the others right aligned."""
    cells = [[str(c) for c in row] for row in rows]
    if output.is_terminal:
        from rich.table import Table

        table = Table(title=title)
        for i, name in enumerate(header):
            table.add_column(name, justify="left" if i < left else "right", overflow="fold")
        for row in cells:
            table.add_row(*row)
        output.print(table)
        return
    lines = [f"{title}", ""] if title else []
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(":---" if i < left else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    output.print("\n".join(lines), markup=False, highlight=False)
