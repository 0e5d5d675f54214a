"""Per-run cgroups (memory and pids) under our own parent cgroup, where the machine lets us write them;
all best effort (a run without them relies on rlimits)."""

from __future__ import annotations

import logging
import os
import signal
import time
from pathlib import Path
from typing import Callable

from selfimprove.sandbox.types import _CGROUP_PARENT, Limits

logger = logging.getLogger(__name__)


def _cgroup_parents() -> tuple[tuple[str, str], ...]:
    found: list[tuple[str, str]] = []
    base = Path("/sys/fs/cgroup")
    for ctrl in ("memory", "pids"):
        d = base / ctrl
        if (d / "cgroup.procs").exists() and os.access(d, os.W_OK):
            try:
                (d / _CGROUP_PARENT).mkdir(exist_ok=True)
                found.append((f"v1-{ctrl}", str(d / _CGROUP_PARENT)))
            except OSError:
                pass
    if not found and (base / "cgroup.controllers").exists() and os.access(base, os.W_OK):
        try:
            enabled = (base / "cgroup.subtree_control").read_text().split()
            parent = base / _CGROUP_PARENT
            parent.mkdir(exist_ok=True)
            if "memory" in enabled and "pids" in enabled:
                (parent / "cgroup.subtree_control").write_text("+memory +pids")
                found.append(("v2", str(parent)))
        except OSError:
            pass
    for _, parent in found:
        _remove_stale_cgroups(Path(parent))
    return tuple(found)


def _remove_stale_cgroups(parent: Path) -> None:
    """Per-run cgroups left by processes that died mid-run (named `<pid>-<hex>`): empty and remove them."""
    try:
        children = [d for d in parent.iterdir() if d.is_dir()]
    except OSError:
        return
    for d in children:
        owner = d.name.split("-", 1)[0]
        if not owner.isdigit() or Path(f"/proc/{owner}").exists():
            continue
        try:
            for pid in (d / "cgroup.procs").read_text().split():
                os.kill(int(pid), signal.SIGKILL)
            d.rmdir()
        except (OSError, ValueError):
            pass


class _Cgroups:
    """Per-run cgroups (memory and pids) under our parent cgroup; all best effort."""

    def __init__(self, parents: tuple[tuple[str, str], ...], name: str, limits: Limits, note: Callable[[str], None]) -> None:
        self.dirs: list[tuple[str, Path]] = []
        total_memory = (limits.memory_mb + limits.disk_mb + 64) << 20
        tasks = limits.max_processes + 4  # the bootstrap and the reaper are inside too
        for kind, parent in parents:
            d = Path(parent) / name
            try:
                d.mkdir()
                if kind == "v1-memory":
                    (d / "memory.limit_in_bytes").write_text(str(total_memory))
                elif kind == "v1-pids":
                    (d / "pids.max").write_text(str(tasks))
                else:
                    (d / "memory.max").write_text(str(total_memory))
                    (d / "memory.swap.max").write_text("0")
                    (d / "pids.max").write_text(str(tasks))
                self.dirs.append((kind, d))
            except OSError as e:
                note(f"cgroup {kind} unusable ({e}); memory/process limits are per process only")
                try:
                    d.rmdir()
                except OSError:
                    pass

    @property
    def has_pids(self) -> bool:
        return any(kind in ("v1-pids", "v2") for kind, _ in self.dirs)

    @property
    def procs_files(self) -> list[tuple[str, str]]:
        return [(kind, str(d / "cgroup.procs")) for kind, d in self.dirs]

    def oom_killed(self) -> bool:
        for kind, d in self.dirs:
            try:
                if kind == "v1-memory":
                    for line in (d / "memory.oom_control").read_text().splitlines():
                        if line.startswith("oom_kill ") and int(line.split()[1]) > 0:
                            return True
                elif kind == "v2":
                    for line in (d / "memory.events").read_text().splitlines():
                        if line.startswith("oom_kill ") and int(line.split()[1]) > 0:
                            return True
            except (OSError, ValueError):
                pass
        return False

    def pids_hit(self) -> bool:
        for kind, d in self.dirs:
            if kind in ("v1-pids", "v2"):
                try:
                    for line in (d / "pids.events").read_text().splitlines():
                        if line.startswith("max ") and int(line.split()[1]) > 0:
                            return True
                except (OSError, ValueError):
                    pass
        return False

    def destroy(self) -> None:
        for _, d in self.dirs:
            for attempt in range(200):
                try:
                    pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
                except OSError:
                    pids = []
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.002 if attempt < 50 else 0.02)
            else:
                logger.warning("sandbox: could not remove cgroup %s", d)
