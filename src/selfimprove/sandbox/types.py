"""What a sandbox run is given (`Limits`) and what it reports (`SandboxResult`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Status = Literal["ok", "error", "timeout", "memory", "output_limit", "killed"]

SETUP_FAILED = 121  # the bootstrap's exit code when it could not set the sandbox up
_UID_BASE = 1_900_000_000  # per-run uids come from [_UID_BASE, _UID_BASE + _UID_SPAN), below 2**31
_UID_SPAN = 200_000_000
_CGROUP_PARENT = "selfimprove-sandbox"
_MAX_REASON_CHARS = 500


class SandboxError(RuntimeError):
    """The sandbox itself could not run (never the program's fault)."""


@dataclass(frozen=True)
class Limits:
    """Resource limits for one run. Sizes in MiB; `cpu_seconds` defaults to the wall limit."""

    wall_seconds: float = 5.0
    cpu_seconds: float | None = None
    memory_mb: int = 512  # address space per process (RLIMIT_AS); the run's cgroup gets this + disk
    max_processes: int = 16  # processes + threads of the run (RLIMIT_NPROC / pids cgroup)
    file_size_mb: int = 16  # largest file the program may write (RLIMIT_FSIZE)
    disk_mb: int = 64  # size of the private /tmp (program, working directory, temp files)
    output_bytes: int = 1 << 20  # stdout + stderr together; more kills the run
    open_files: int = 256

    def __post_init__(self) -> None:
        if not self.wall_seconds > 0:
            raise ValueError(f"wall_seconds must be > 0, got {self.wall_seconds}")
        if self.cpu_seconds is not None and not self.cpu_seconds > 0:
            raise ValueError(f"cpu_seconds must be > 0, got {self.cpu_seconds}")
        for name, low in (("memory_mb", 32), ("max_processes", 1), ("file_size_mb", 1), ("disk_mb", 1),
                          ("output_bytes", 1), ("open_files", 16)):
            if getattr(self, name) < low:
                raise ValueError(f"{name} must be >= {low}, got {getattr(self, name)}")

    @property
    def cpu_limit(self) -> int:
        """Whole seconds of CPU time (RLIMIT_CPU has one-second resolution)."""
        return max(1, math.ceil(self.cpu_seconds if self.cpu_seconds is not None else self.wall_seconds))


@dataclass(frozen=True)
class SandboxResult:
    """What happened to one program. `returncode` is negative for death by a signal (None if unknown)."""

    status: Status
    returncode: int | None
    stdout: str
    stderr: str
    wall_seconds: float
    reason: str
    cpu_seconds: float | None = None
    isolation: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "ok"
