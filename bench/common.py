"""What the long benchmarks share: timestamped log lines, a progress callback that prints a line at
most every `every` seconds (a log file, not a terminal, is where these runs report), and the standard
error of a mean over seeds."""

from __future__ import annotations

import atexit
import contextlib
import datetime
import fcntl
import json
import math
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path, PurePath
from typing import Any, Callable, Iterator, Sequence

BEGAN = time.time()
ROOT = Path(__file__).resolve().parent.parent  # the repository
# Where a benchmark writes its table, JSON and plot: bench/results (committed), or the folder in
# $SELFIMPROVE_BENCH_RESULTS (`selfimprove reproduce --quick` keeps its smoke runs out of the repository).
RESULTS = Path(os.environ.get("SELFIMPROVE_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")

__all__ = ["BEGAN", "RESULTS", "ROOT", "line_bar", "log", "repo_relative", "repo_relative_paths", "run_logged", "set_args",
           "stderr", "union_minutes", "keep_span", "write_result", "chain_task", "interpolate", "claim"]


def repo_relative(path: str | os.PathLike[str]) -> str:
    """`path` as a committed report names it: relative to the repository root (`runs/reproduce/search/seed0`)
    when it lies inside the repository, never one machine's absolute path; a path outside it stays as given.
    A relative path counts from the working directory."""
    given = os.fspath(path)
    full = Path(os.path.abspath(given))
    for candidate in (full, full.resolve()):  # resolved too: a checkout reached through a symlink
        if candidate.is_relative_to(ROOT):
            return candidate.relative_to(ROOT).as_posix()
    return given


def repo_relative_paths(value: Any) -> Any:
    """A report's data (dicts, lists, strings, numbers) with every absolute path in it, and every `Path`, named
    by `repo_relative`: strings that are absolute paths, or options written `--name=/a/path`. Other strings
    are kept (a relative string need not be a path)."""
    if isinstance(value, dict):
        return {k: repo_relative_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [repo_relative_paths(v) for v in value]
    if isinstance(value, PurePath):
        return repo_relative(value)
    if isinstance(value, str):
        if os.path.isabs(value):
            return repo_relative(value)
        option, eq, rest = value.partition("=")
        if option.startswith("-") and eq and os.path.isabs(rest):
            return f"{option}={repo_relative(rest)}"
    return value


def log(message: str) -> None:
    print(f"[{time.time() - BEGAN:7.1f}s] {message}", flush=True)


@contextlib.contextmanager
def line_bar(description: str, total: int | None, keys: Sequence[str] = ("train/loss", "train/reward", "eval/accuracy"),
             every: float = 30.0) -> Iterator[Callable[[int, dict[str, Any]], None]]:
    """A progress callback: step (of `total`, with an ETA; None for a run that a budget ends), seconds,
    and the metrics named in `keys`."""
    start = time.time()
    state: dict[str, Any] = {"last": 0.0, "first": None}

    def on_step(step: int, metrics: dict[str, Any]) -> None:
        now = time.time()
        if state["first"] is None:
            state["first"] = (step, now)  # a resumed stage starts past 0: its ETA counts from here
        if now - state["last"] < every and (total is None or step < total):
            return
        state["last"] = now
        first_step, first_time = state["first"]
        rate = (step - first_step) / max(now - first_time, 1e-9)
        eta = f", eta {(total - step) / rate:.0f}s" if total is not None and rate > 0 and step < total else ""
        shown = " ".join(f"{k.split('/')[-1]}={v:.3f}" for k, v in metrics.items() if k in keys and isinstance(v, (int, float)))
        where = f"{step}/{total}" if total is not None else f"step {step}"
        print(f"    {description}: {where} ({now - start:.0f}s{eta}) {shown}", flush=True)

    yield on_step


def stderr(values: Sequence[float]) -> float:
    """Standard error of the mean (nan for one value)."""
    return statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")


def interpolate(curve: list[tuple[float, float]], tokens: float) -> float:
    """Accuracy of a (tokens, accuracy) curve at `tokens`, linear in log-tokens; nan outside it."""
    curve = sorted(curve)
    for (t0, a0), (t1, a1) in zip(curve, curve[1:]):
        if t0 <= tokens <= t1:
            return a0 if t1 == t0 else a0 + (a1 - a0) * (math.log(tokens) - math.log(t0)) / (math.log(t1) - math.log(t0))
    return float("nan")


def keep_span(span: Path, every: float = 30.0) -> None:
    """Keep this invocation's "start end" in `span` up to date (a thread, every `every` seconds and at
    exit), so an interrupted invocation still counts the time it ran."""
    def write() -> None:
        span.write_text(f"{BEGAN:.0f} {time.time():.0f}\n")

    def loop() -> None:
        while True:
            write()
            time.sleep(every)

    threading.Thread(target=loop, daemon=True, name="span").start()
    atexit.register(write)


def union_minutes(folder: Path) -> float:
    """Wall time of work done in several invocations, some side by side: the union of the spans in `folder`
    (one file each, "start end" in seconds since the epoch), in minutes; 0 when there are none."""
    spans = sorted(tuple(map(float, p.read_text().split()[:2])) for p in folder.glob("*") if p.is_file())
    total, end = 0.0, -math.inf
    for start, stop in spans:
        if stop > end:
            total += stop - max(start, end)
            end = stop
    return total / 60


def chain_task(steps: int) -> dict[str, Any]:
    """The arithmetic-chain task of the R^3 and tools benches: `steps` operations on digits 1..9 with + - *."""
    return {"name": "chain", "params": {"num_steps": steps, "min_number": 1, "max_number": 9, "ops": "+-*"}}


def set_args(fields: dict[str, Any]) -> list[str]:
    """Recipe overrides as the CLI's `--set key=value` arguments."""
    return [arg for key, value in fields.items() for arg in ("--set", f"{key}={value}")]


@contextlib.contextmanager
def claim(path: Path) -> Iterator[bool]:
    """Hold `path` as a claim while the block runs: yields True when this process holds it, False when
    another live process does. An advisory lock (`fcntl.flock`), so the kernel frees the claim of a
    process that dies and a restarted worker takes the command up again: processes started at different
    times share one queue of resumable commands, where a fixed split leaves one idle while the other works."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)


def run_logged(command: Sequence[object], log_file: Path, env: dict[str, str], cwd: Path) -> None:
    """Run a command (each of ours resumes itself) with its output appended to `log_file`; a failure
    raises with the log's path, and rerunning resumes."""
    with log_file.open("a") as out:
        out.write(f"$ {' '.join(map(str, command))}\n")
        out.flush()
        done = subprocess.run(list(map(str, command)), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"`{' '.join(map(str, list(command)[2:5]))} ...` exited {done.returncode}: see {log_file}, then rerun to resume")


def write_result(name: str, title: str, data: dict[str, Any], table: Sequence[str], argv: Sequence[str] | None = None) -> Path:
    """Commit-ready `RESULTS/<name>.md` and `.json`: the figures in `data`, the markdown `table` lines, and
    the setup that produced them (command, date, torch and its threads, the CPU's vector unit), paths
    named relative to the repository. Returns the JSON's path."""
    import torch

    command = " ".join([".venv/bin/python", repo_relative(sys.argv[0]), *(sys.argv[1:] if argv is None else argv)])
    setup = {"command": command, "date": datetime.date.today().isoformat(), "torch": torch.__version__,
             "torch_threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
             "cpus": os.cpu_count()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(repo_relative_paths({"setup": setup, **data}), indent=2) + "\n")
    lines = [f"# {title}", "", f"`{command}` ({setup['date']}; torch {setup['torch']}, {setup['torch_threads']} threads, "
             f"{setup['cpus']} CPUs, {setup['cpu_capability']})", "", *table]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    return path
