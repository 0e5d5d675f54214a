"""How the CLI ends when something goes wrong: one line on stderr and an exit code.

- a user's mistake (`errors.UserError`: recipe, data, model folder, run folder) -> its line(s), exit 2;
- a full disk -> one line saying so, exit 2 (the rerun resumes; old checkpoints are pruned first);
- Ctrl-C (exit 130) or SIGTERM (exit 143) -> the same line: rerun to resume from the last checkpoint
  (the driver writes one on SIGTERM before it stops: `train.signals`);
- a known failure of a run (`errors.RunFailure`: a rollout pool that cannot recover, data-parallel ranks
  that disagree) -> one line saying what failed and a log file, exit 1;
- anything else -> one line naming the exception and a log file that holds the full traceback, exit 1.
"""

from __future__ import annotations

import datetime
import errno
import os
import sys
import tempfile
import traceback
from pathlib import Path

from selfimprove.errors import ConfigError, DiskFullError, RunFailure, Terminated, UserError

INTERRUPTED = "interrupted (rerun the same command to resume from the last checkpoint)"


def say(line: str) -> None:
    print(f"selfimprove: {line}", file=sys.stderr)


def is_disk_full(err: BaseException) -> bool:
    """ENOSPC, also when a library wraps it (torch's writer raises RuntimeError 'file write failed')."""
    if isinstance(err, DiskFullError):
        return True
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(err, RuntimeError) and "write failed" in str(err)


def log_traceback(err: BaseException) -> Path:
    """Write the traceback to a fresh log file (in $SELFIMPROVE_LOG_DIR or the temp folder)."""
    folder = Path(os.environ.get("SELFIMPROVE_LOG_DIR") or tempfile.gettempdir())
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f"selfimprove-{stamp}-", suffix=".log", dir=folder)
        with os.fdopen(handle, "w") as f:
            f.write(f"selfimprove {' '.join(sys.argv[1:])}\n\n")
            f.write("".join(traceback.format_exception(err)))
        return Path(name)
    except OSError:  # the disk may be full: the traceback goes to stderr instead
        traceback.print_exception(err)
        return Path("<stderr>")


def report(err: BaseException) -> int:
    """Print the line(s) for `err` and return the exit code."""
    if isinstance(err, ConfigError):
        for line in str(err).splitlines():
            say(f"config error: {line}")
        return 2
    if is_disk_full(err) and not isinstance(err, UserError):
        say(f"disk full: {err} (free space and rerun the same command: it prunes old checkpoints first and resumes)")
        return 2
    if isinstance(err, UserError):
        lines = str(err).splitlines() or [type(err).__name__]
        if getattr(err, "log_traceback", False):  # the user's own code failed: its traceback helps
            lines[-1] += f" (traceback in {log_traceback(err)})"
        for line in lines:
            say(f"{err.kind}: {line}")
        return 2
    if isinstance(err, FileNotFoundError):
        say(str(err))
        return 2
    if isinstance(err, KeyboardInterrupt):
        say(INTERRUPTED)
        return 143 if isinstance(err, Terminated) else 130
    path = log_traceback(err)
    message = str(err).splitlines()[0] if str(err) else ""
    if isinstance(err, RunFailure):
        say(f"{err.kind}: {message} (traceback in {path})")
        return 1
    say(f"unexpected {type(err).__name__}: {message} (traceback in {path})")
    return 1
