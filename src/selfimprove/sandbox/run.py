"""Running one untrusted program: `run_python` starts the bootstrap (`child.py`) with the run's spec,
enforces the wall-clock limit and the output cap while reading its output, and classifies how it
ended; it degrades step by step where namespaces cannot be set up."""

from __future__ import annotations

import logging
import marshal
import os
import secrets
import selectors
import signal
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from selfimprove.sandbox.cgroups import _Cgroups
from selfimprove.sandbox.plan import _PLAN_LOCK, _allocate_uid, _kill_uid, _note_once, _plan, _Plan, _release_uid
from selfimprove.sandbox.types import _MAX_REASON_CHARS, Limits, SandboxError, SandboxResult, Status

logger = logging.getLogger(__name__)

# The bootstrap program's source, run with `python -I -S -B -c`.
_BOOTSTRAP = (Path(__file__).parent / "child.py").read_text()


def _decode(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _last_line(text: str) -> str:
    for line in reversed(text.strip().splitlines()):
        if line.strip():
            return line.strip()[:_MAX_REASON_CHARS]
    return ""


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def run_python(code: str, *, stdin: str = "", limits: Limits = Limits()) -> SandboxResult:
    """Run untrusted Python source as a program in the sandbox and report what happened.

    Never raises because of what the program does; raises `SandboxError` only when the sandbox
    itself cannot start (e.g. the machine is out of processes).
    """
    plan = _plan()
    result = _run_once(plan, code, stdin, limits, namespaces=plan.namespaces)
    if result is None:  # the namespaces were entered but could not be set up: once more, then degrade
        result = _run_once(plan, code, stdin, limits, namespaces=plan.namespaces)
    if result is None:
        with _PLAN_LOCK:
            plan.namespaces = False
        logger.error("sandbox: namespace setup keeps failing; running without namespaces from now on")
        result = _run_once(plan, code, stdin, limits, namespaces=False)
        if result is None:
            raise SandboxError("the sandbox could not be set up even without namespaces")
    return result


def _run_once(plan: _Plan, code: str, stdin: str, limits: Limits, *, namespaces: bool) -> SandboxResult | None:
    uid = _allocate_uid() if plan.root else None  # the bootstrap uses it unless it cannot
    run_id = f"{os.getpid()}-{secrets.token_hex(6)}"
    cgroups = _Cgroups(plan.cgroups, run_id, limits, lambda message: _note_once(plan, message)) if plan.cgroups else None
    prog_dir = tempfile.mkdtemp(prefix="selfimprove-sandbox-")  # used only without namespaces
    status_r, status_w = os.pipe()
    open_fds = {status_r, status_w}  # closed exactly once: a double close would hit another thread's fd
    try:
        spec = {
            "code": code.encode("utf-8", "surrogatepass"),
            "stdin": stdin.encode("utf-8", "surrogatepass"),
            "python": plan.python,
            "alt_python": plan.alt_python,
            "uid": uid,
            "namespaces": namespaces,
            "hide": list(plan.hide),
            "expose": list(plan.expose),
            "prog_dir": prog_dir,
            "cgroups": cgroups.procs_files if cgroups else [],
            "pids_cgroup": bool(cgroups and cgroups.has_pids),
            "status_fd": status_w,
            "seccomp": plan.seccomp,
            "memory_bytes": limits.memory_mb << 20,
            "file_size_bytes": limits.file_size_mb << 20,
            "disk_mb": limits.disk_mb,
            "open_files": limits.open_files,
            "max_processes": limits.max_processes,
            "cpu_seconds": limits.cpu_limit,
        }
        return _execute(plan, spec, limits, status_r, status_w, open_fds, uid, cgroups, namespaces)
    finally:
        for fd in open_fds:
            os.close(fd)
        if cgroups:
            cgroups.destroy()
        shutil.rmtree(prog_dir, ignore_errors=True)
        _release_uid(uid)


def _execute(plan: _Plan, spec: dict, limits: Limits, status_r: int, status_w: int, open_fds: set[int],
             uid: int | None, cgroups: _Cgroups | None, namespaces: bool) -> SandboxResult | None:
    start = time.monotonic()
    deadline = start + limits.wall_seconds
    try:
        proc = subprocess.Popen(
            [plan.python, "-I", "-S", "-B", "-c", _BOOTSTRAP],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            pass_fds=(status_w,), start_new_session=True, cwd="/",
            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
        )
    except OSError as e:
        raise SandboxError(f"could not start the sandbox: {e}") from e
    open_fds.discard(status_w)
    os.close(status_w)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(marshal.dumps(spec))
    except OSError:  # the bootstrap died early; its stderr says why
        pass
    finally:
        try:
            proc.stdin.close()
        except OSError:
            pass
    out, err = bytearray(), bytearray()
    buffers = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    killed_for: str | None = None
    exited_at: float | None = None
    with selectors.DefaultSelector() as sel:
        for stream in (proc.stdout, proc.stderr):
            os.set_blocking(stream.fileno(), False)
            sel.register(stream.fileno(), selectors.EVENT_READ)
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                killed_for = "timeout"
                break
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > 0.2:
                break  # leftover processes hold the pipes (no PID namespace); they are killed below
            for key, _ in sel.select(timeout=min(deadline - now, 0.05)):
                try:
                    chunk = os.read(key.fd, 1 << 16)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                buffers[key.fd] += chunk
                if len(out) + len(err) > limits.output_bytes:
                    killed_for = "output_limit"
                    break
            if killed_for:
                break
        if not killed_for:  # what is still buffered in the pipes (the writers may be gone or stuck)
            for key in list(sel.get_map().values()):
                while len(out) + len(err) <= limits.output_bytes:
                    try:
                        chunk = os.read(key.fd, 1 << 16)
                    except BlockingIOError:
                        break
                    if not chunk:
                        break
                    buffers[key.fd] += chunk
            if len(out) + len(err) > limits.output_bytes:
                killed_for = "output_limit"
    if not killed_for and proc.poll() is None:
        try:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            killed_for = "timeout"
    if killed_for and proc.returncode is None:  # not reaped yet, so the group id cannot have been reused
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
    proc.wait()
    wall = time.monotonic() - start
    proc.stdout.close()
    proc.stderr.close()
    report = _read_status(status_r)
    applied = tuple(report.get("applied", ())) if report else ()
    if uid is not None and "pidns" not in applied:
        _kill_uid(uid)  # no PID namespace took the leftovers down (or we do not know): kill them by uid
    oom = cgroups.oom_killed() if cgroups else False
    setup_error = report.get("setup_error") if report else None
    if setup_error or (report is None and not killed_for and not oom):
        message = setup_error or _last_line(_decode(bytes(err))) or f"bootstrap exit code {proc.returncode}"
        if namespaces:
            _note_once(plan, f"namespace sandbox failed ({message}); falling back to the weaker mode")
            return None
        raise SandboxError(f"sandbox setup failed: {message}")
    for note in (report or {}).get("notes", ()):
        _note_once(plan, note)
    if report and "pidns" not in applied:
        _note_once(plan, "weak isolation without namespaces: " + ", ".join(applied)
                   + ("" if "uid" in applied else " (the program runs as this user: it can write this user's files"
                      " and signal this user's processes)"))
    cap = limits.output_bytes
    keep_err = len(err) if len(out) + len(err) <= cap else min(len(err), max(cap - len(out), cap // 4))
    stdout, stderr = _decode(bytes(out[: cap - keep_err])), _decode(bytes(err[:keep_err]))
    cpu = report.get("cpu") if report else None
    pids_hit = cgroups.pids_hit() if cgroups else False
    status, returncode, reason = _classify(report, killed_for, limits, stderr, cpu, oom, pids_hit)
    return SandboxResult(status, returncode, stdout, stderr, wall, reason, cpu, applied)


def _read_status(fd: int) -> dict | None:
    os.set_blocking(fd, False)
    data = b""
    while True:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    if not data:
        return None
    try:
        report = marshal.loads(data)
    except (ValueError, EOFError, TypeError):
        return None
    return report if isinstance(report, dict) else None


def _classify(report: dict | None, killed_for: str | None, limits: Limits, stderr: str, cpu: float | None,
              oom: bool, pids_hit: bool) -> tuple[Status, int | None, str]:
    raw = report.get("status") if report else None
    returncode = None if raw is None else os.waitstatus_to_exitcode(raw)
    if killed_for == "timeout":
        return "timeout", returncode, f"wall time limit of {limits.wall_seconds:g}s exceeded"
    if killed_for == "output_limit":
        return "output_limit", returncode, f"output limit of {limits.output_bytes} bytes exceeded"
    if returncode is None:  # the reaper died before reporting: only the cgroup OOM killer does that
        return "memory", None, "memory limit exceeded (killed by the cgroup OOM killer)"
    tail = _last_line(stderr)
    if oom:
        return "memory", returncode, "memory limit exceeded (killed by the cgroup OOM killer)"
    if returncode < 0:
        sig = -returncode
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu is not None and cpu >= limits.cpu_limit - 0.05):
            return "timeout", returncode, f"CPU time limit of {limits.cpu_limit}s exceeded"
        if sig == signal.SIGXFSZ:
            return "error", returncode, f"file size limit of {limits.file_size_mb} MiB exceeded"
        extra = " (process limit was hit)" if pids_hit else ""
        return "killed", returncode, f"killed by {_signal_name(sig)}{extra}"
    if returncode == 0:
        return "ok", 0, "exited normally"
    if "MemoryError" in tail or tail.startswith("MemoryError"):
        return "memory", returncode, f"memory limit of {limits.memory_mb} MiB exceeded ({tail})"
    reason = tail or f"exit code {returncode}"
    if pids_hit or "BlockingIOError" in tail and "Resource temporarily unavailable" in tail:
        reason += " (process limit was hit)"
    return "error", returncode, f"exit code {returncode}: {reason}"


def isolation_report() -> dict[str, object]:
    """What this machine allows, from a trivial run: applied layers, uid mode, cgroups and notes."""
    plan = _plan()
    result = run_python("print('ok')", limits=Limits(wall_seconds=10))
    return {
        "status": result.status,
        "applied": list(result.isolation),
        "root": plan.root,
        "namespaces": plan.namespaces,
        "cgroups": [kind for kind, _ in plan.cgroups],
        "python": plan.python,
        "hidden": list(plan.hide),
        "notes": sorted(plan.logged),
    }
