"""What this machine allows the sandbox (the plan: interpreter, namespaces, seccomp, what to hide,
cgroups), decided once per process, and the per-run uids."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from selfimprove.sandbox.cgroups import _cgroup_parents
from selfimprove.sandbox.types import _UID_BASE, _UID_SPAN

logger = logging.getLogger(__name__)


@dataclass
class _Plan:
    python: str
    alt_python: str | None  # used as root without namespaces when `python` is not reachable by others
    root: bool
    namespaces: bool  # try namespaces (as root, else in a user namespace)
    seccomp: bool
    hide: tuple[str, ...]
    expose: tuple[str, ...]
    cgroups: tuple[tuple[str, str], ...]  # (kind, parent dir): "v1-memory", "v1-pids" or "v2"
    logged: set[str] = field(default_factory=set)


_PLAN: _Plan | None = None
_PLAN_LOCK = threading.Lock()
_UIDS_IN_USE: set[int] = set()


def _base_python() -> str:
    """The real interpreter behind this one (a venv's python is a link to it); -I -S keeps it stdlib-only."""
    candidate = getattr(sys, "_base_executable", None) or sys.executable
    path = os.path.realpath(candidate)
    if not os.path.isfile(path):
        path = os.path.realpath(sys.executable)
    return path


def _world_traversable(path: str) -> bool:
    p = Path(path)
    for part in [p, *p.parents]:
        try:
            mode = part.stat().st_mode
        except OSError:
            return False
        if not mode & 0o001:
            return False
    return True


def _blocked_ancestor(path: str) -> str | None:
    """The topmost ancestor of `path` that other users cannot traverse, if any."""
    for part in reversed(Path(path).parents):
        if str(part) == "/":
            continue
        try:
            if not part.stat().st_mode & 0o001:
                return str(part)
        except OSError:
            return None
    return None


def _project_root() -> str | None:
    here = Path(__file__).resolve()
    if len(here.parents) > 3 and here.parents[2].name == "src" and (here.parents[3] / "pyproject.toml").exists():
        return str(here.parents[3])
    return None


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _make_plan() -> _Plan:
    python = _base_python()
    root = os.geteuid() == 0
    hide: set[str] = set()
    expose: list[str] = []
    for d in ("/root", "/home", "/run"):
        if os.path.isdir(d) and not os.path.islink(d):
            hide.add(d)
    project = _project_root()
    if project:
        hide.add(project)
    if sys.prefix != sys.base_prefix and os.path.isdir(sys.prefix):
        hide.add(os.path.realpath(sys.prefix))
    needed = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix), os.path.dirname(python)}
    for path in needed:
        blocked = _blocked_ancestor(path)
        if blocked:
            hide.add(blocked)
    hide = {h for h in hide if not any(h != o and _under(h, o) for o in hide)}
    # Everything under /tmp is hidden already by the sandbox's private /tmp (and a tmpfs cannot be
    # mounted there: the folder no longer exists once /tmp is replaced), e.g. a checkout in /tmp.
    hide = {h for h in hide if not _under(h, "/tmp")}
    hide -= needed
    for path in sorted(needed):
        covered = any(_under(path, h) for h in hide) or _under(path, "/tmp")
        if covered and not any(_under(path, e) for e in expose):
            expose.append(path)
    return _Plan(
        python=python,
        alt_python=_alt_python(python),
        root=root,
        namespaces=sys.platform == "linux",
        seccomp=sys.platform == "linux",
        hide=tuple(sorted(hide)),
        expose=tuple(expose),
        cgroups=_cgroup_parents(),
    )


def _alt_python(python: str) -> str | None:
    """An interpreter of the same version that other users can run (for root without namespaces)."""
    if _world_traversable(python):
        return None
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for d in ("/usr/local/bin", "/usr/bin", "/bin"):
        path = os.path.realpath(os.path.join(d, version))
        if os.path.isfile(path) and _world_traversable(path):
            return path
    return None


def _plan() -> _Plan:
    global _PLAN
    with _PLAN_LOCK:
        if _PLAN is None:
            _PLAN = _make_plan()
        return _PLAN


def _note_once(plan: _Plan, message: str) -> None:
    with _PLAN_LOCK:
        if message in plan.logged:
            return
        plan.logged.add(message)
    logger.warning("sandbox: %s", message)


def _allocate_uid() -> int:
    with _PLAN_LOCK:
        while True:
            uid = _UID_BASE + secrets.randbelow(_UID_SPAN)
            if uid not in _UIDS_IN_USE:
                _UIDS_IN_USE.add(uid)
                return uid


def _release_uid(uid: int | None) -> None:
    if uid is not None:
        with _PLAN_LOCK:
            _UIDS_IN_USE.discard(uid)


def _processes_of(uid: int) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    pids.append(int(name))
            except OSError:
                pass
    return pids


def _kill_uid(uid: int) -> None:
    """Kill every process of a per-run uid (fallback when there is no PID namespace)."""
    for _ in range(200):
        pids = _processes_of(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.005)
