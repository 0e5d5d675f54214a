"""Starting (or joining) Ray for the rollout pool, and cleaning up after a run that was killed.

Locally Ray starts with `num_cpus` = what the pool asks for, a small object store, no dashboard and no
auth token under the home folder (`RAY_AUTH_MODE=disabled`). A driver killed with SIGKILL cannot stop
the cluster it started: Ray's head processes notice and exit, but its dashboard and runtime-env agents
(about 180 MB, deaf to SIGTERM) stay, reparented to init, with `RAY_RAYLET_PID` naming a raylet that is
gone. `reap_strays` finds exactly those (this user's `ray::` processes whose raylet is dead) and kills
them; `ensure_ray` calls it before it starts a local cluster, so the next run cleans up after the last.
Written by hand: Ray has no API for processes of a session whose driver and raylet are gone.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
OBJECT_STORE_BYTES = 256 * 2**20  # weights of small models; a cluster started by the user sizes its own
PROC = Path("/proc")


def object_store_bytes(policy: Any) -> int:
    """An object store for a pool on `policy`: two snapshots of its weights as they are sent (the newest and a
    pinned one; float32 on the CPU, or only a LoRA adapter) and room for the calls' inputs and outputs, at
    least `OBJECT_STORE_BYTES`."""
    weights = sum(t.numel() * 4 for t in policy.weight_state().values())
    return max(OBJECT_STORE_BYTES, 2 * weights + 64 * 2**20)


def ensure_ray(address: str | None, num_cpus: float, store_bytes: int = OBJECT_STORE_BYTES) -> None:
    """Start (or join) Ray once per process; a local start first reaps what killed runs left. A cluster
    already running (a user's, or one an earlier pool of this process started) keeps its own store."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray 2.60 would write a token under the home folder
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    else:
        reaped = reap_strays()
        if reaped:
            logger.warning("killed %d Ray processes left by a run that was killed (their raylet was gone)", len(reaped))
        ray.init(num_cpus=max(1, int(round(num_cpus))), object_store_memory=store_bytes, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)
    _errors_to_log()


def _errors_to_log() -> None:
    """Ray's driver prints the raylet's error messages (a worker died, ...) to stdout in colour, whatever
    `log_to_driver` says; the pool handles those faults itself and ends a run with one line of its own.
    There is no setting for it, so the printer Ray's listener thread calls is replaced by one that logs
    (the `ray.errors` logger, at INFO: in a log file when one is configured, not on the terminal)."""
    try:
        from ray._private import worker
    except ImportError:  # pragma: no cover - Ray moved it: its own printing stays
        return
    if getattr(worker.print_to_stdstream, "_selfimprove", False) or not hasattr(worker, "print_to_stdstream"):
        return
    errors = logging.getLogger("ray.errors")

    def to_log(data: dict[str, Any], ignore_prefix: bool = False) -> None:
        for line in data.get("lines", []):
            errors.info("(%s) %s", data.get("pid", "ray"), ANSI.sub("", str(line)))

    to_log._selfimprove = True  # type: ignore[attr-defined]
    worker.print_to_stdstream = to_log


def free_cpus(needed: float, wait: float = 15.0) -> float:
    """The cluster's free CPUs, waiting up to `wait` seconds for them (killed actors free theirs a
    moment later)."""
    import ray

    deadline = time.time() + wait
    while True:
        free = float(ray.available_resources().get("CPU", 0.0))
        if free + 1e-9 >= needed or time.time() > deadline:
            return free
        time.sleep(0.2)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:  # gone, or not ours to read
        return None


def _state(pid: int) -> str | None:
    """A process's state letter from /proc/PID/stat (None when it is gone)."""
    stat = _read(PROC / str(pid) / "stat")
    if stat is None:
        return None
    return stat.rsplit(b")", 1)[-1].split()[0].decode()


def _is_live_raylet(pid: int) -> bool:
    if _state(pid) in (None, "Z", "X"):
        return False
    cmdline = _read(PROC / str(pid) / "cmdline") or b""
    return b"raylet" in cmdline


def _raylet_of(pid: int) -> int | None:
    environ = _read(PROC / str(pid) / "environ")
    if environ is None:
        return None
    for entry in environ.split(b"\0"):
        if entry.startswith(b"RAY_RAYLET_PID="):
            value = entry.split(b"=", 1)[1]
            return int(value) if value.isdigit() else None
    return None


def stray_ray_processes() -> list[int]:
    """This user's `ray::` processes (agents, workers) whose raylet is gone: what a SIGKILLed run left."""
    if not PROC.is_dir():
        return []
    me, found = os.getuid(), []
    for entry in PROC.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != me:
                continue
        except OSError:
            continue
        cmdline = _read(entry / "cmdline") or b""
        if not cmdline.startswith(b"ray::") or _state(int(entry.name)) in (None, "Z", "X"):
            continue
        raylet = _raylet_of(int(entry.name))
        if raylet is not None and not _is_live_raylet(raylet):
            found.append(int(entry.name))
    return sorted(found)


def reap_strays() -> list[int]:
    """Kill (SIGKILL: they ignore SIGTERM) the Ray processes a killed run left; return their pids."""
    strays = stray_ray_processes()
    for pid in strays:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return strays
