"""The run folder's guards: usable before anything is written, one run at a time, one recipe per run.

- `check_run_dir`: the folder (or the nearest existing parent) is a writable directory, not a file;
- `run_lock`: an advisory lock (`fcntl.flock` on `RUN_DIR/.lock`, released by the kernel when the
  process dies, so a crash never leaves a stale lock) that a second run on the same folder fails to
  take, with a line naming the holder's pid; re-entrant within one process (a method made of several
  runs may lock its root and its stages);
- `check_same_recipe`: a resumed run must be the run that was started. The resolved recipe saved in
  `config.yaml` is compared with the new one; keys that only extend or re-schedule a run (`steps`,
  `max_sampled_tokens`, `schedule.*`, `eval.*`) may change, any other change is refused with the list
  of changed keys unless `allow_changed_recipe()` is in effect (the CLI's `--allow-changed-recipe`).
"""

from __future__ import annotations

import contextvars
import fcntl
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import yaml

from selfimprove.errors import RunDirError

LOCK = ".lock"
CONFIG = "config.yaml"
EXTENDABLE = ("steps", "max_sampled_tokens", "schedule.", "eval.")

_allow_changes: contextvars.ContextVar[bool] = contextvars.ContextVar("allow_changed_recipe", default=False)
_held: dict[str, tuple[int, int]] = {}  # resolved lock path -> (fd, depth)


def check_run_dir(run_dir: str | Path) -> None:
    """Refuse a run folder that is a file, or that cannot be created or written."""
    path = Path(run_dir).expanduser()
    if path.exists() and not path.is_dir():
        raise RunDirError(f"run_dir {path} is a file, not a folder: choose another run_dir")
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise RunDirError(f"run_dir {path}: {existing} is a file, so the folder cannot be created")
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == path else f"cannot be created ({existing} is not writable)"
        raise RunDirError(f"run_dir {path} {what}: choose a folder you can write to")


@contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold the run folder's lock (creating the folder) for the duration."""
    folder = Path(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = str((folder / LOCK).resolve())
    if path in _held:
        fd, depth = _held[path]
        _held[path] = (fd, depth + 1)
    else:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirError(
                f"run_dir {folder} is in use by another run (pid {holder}): wait for it to finish, or use another run_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        _held[path] = (fd, 1)
    try:
        yield
    finally:
        fd, depth = _held[path]
        if depth > 1:
            _held[path] = (fd, depth - 1)
        else:
            del _held[path]
            os.close(fd)  # closing releases the lock; the file stays (removing it would race a new locker)


def clear_run_dir(run_dir: str | Path) -> None:
    """Empty a run folder for a fresh start, keeping its lock file (the lock stays held)."""
    folder = Path(run_dir)
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        if child.name == LOCK:
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


@contextmanager
def allow_changed_recipe(allow: bool = True) -> Iterator[None]:
    """Let resumed runs continue although their recipe changed (the user asked for it)."""
    token = _allow_changes.set(allow)
    try:
        yield
    finally:
        _allow_changes.reset(token)


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: data}


def same_value(a: Any, b: Any) -> bool:
    """Equal recipe values, or two spellings (relative, absolute) of one existing file or folder: a run
    resumed from another working directory, or by a driver that writes absolute paths, is the same run."""
    if a == b:
        return True
    if isinstance(a, str) and isinstance(b, str) and a and b:
        try:
            return Path(a).exists() and Path(b).exists() and Path(a).samefile(b)
        except OSError:
            return False
    return False


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(dotted key, old value, new value) for every leaf that differs (`same_value`), sorted by key."""
    a, b = _flatten(old), _flatten(new)
    missing = object()
    return [(k, a.get(k, missing), b.get(k, missing)) for k in sorted(set(a) | set(b))
            if not same_value(a.get(k, missing), b.get(k, missing))]


def _extendable(key: str) -> bool:
    return any(key == e or (e.endswith(".") and key.startswith(e)) for e in EXTENDABLE)


def _show(value: Any) -> str:
    text = "(absent)" if not isinstance(value, (str, int, float, bool, list, dict, type(None))) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_same_recipe(run_dir: str | Path, recipe: dict[str, Any]) -> None:
    """Refuse to resume `run_dir` with a recipe that differs from the saved one in a key that is not
    extendable (see the module docstring)."""
    saved = Path(run_dir) / CONFIG
    if _allow_changes.get() or not saved.is_file():
        return
    try:
        old = yaml.safe_load(saved.read_text()) or {}
    except yaml.YAMLError:
        return  # a damaged record cannot be compared; the checkpoint itself is verified separately
    # A section added to recipes since the run began (absent then, None now, e.g. `env`) changes nothing.
    before = _flatten(old)
    changes = [(k, a, b) for k, a, b in changed_keys(old, recipe) if not _extendable(k) and not (k not in before and b is None)]
    if not changes:
        return
    shown = ", ".join(f"{k} {_show(a)} -> {_show(b)}" for k, a, b in changes[:6])
    more = f" and {len(changes) - 6} more" if len(changes) > 6 else ""
    raise RunDirError(
        f"run_dir {run_dir} holds a run started with another recipe (changed: {shown}{more}): rerun with the "
        f"original recipe, use a new run_dir, or pass --allow-changed-recipe to continue anyway"
    )
