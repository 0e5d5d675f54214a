"""Run untrusted Python (model-written code) in a locked-down child process.

`run_python(code, stdin=..., limits=...)` runs one program and returns a `SandboxResult`;
`run_tests(code, tests, limits)` runs a candidate solution followed by assert-based tests (MBPP
`test_list`, or a HumanEval `check(candidate)` module) in ONE sandbox run and says whether they all
passed, and if not, why. Nothing here imports, evaluates or parses the untrusted code in this process;
only our own bootstrap and harness (below, as text) run next to it. Many runs may go in parallel from
threads: each has its own processes, uid, namespaces, cgroup and directories, and no `preexec_fn` is used.

Layers (each applied when the machine allows it; `SandboxResult.isolation` lists what was applied and
anything weaker is logged once):

* A fresh `python -I -S` bootstrap (started with `start_new_session=True`) reads a marshalled spec on
  stdin and enters new mount, network, PID, IPC and UTS namespaces (`unshare(2)` through ctypes) -- as
  root directly, otherwise inside a new user namespace (unprivileged user namespaces):
  - network: an empty namespace (not even loopback is up), so every connection fails;
  - mounts: every mount is bind-remounted read-only (always MS_BIND, never a superblock remount, so
    the host is untouched); `/tmp` becomes a small private tmpfs holding the program and an empty
    working directory; home directories, `/run`, the project tree and the venv are covered by empty
    tmpfs mounts (the interpreter's own prefix is bound back in where it lives under one of them);
  - PID: the bootstrap's child is PID 1 of the namespace (a tiny reaper); when the program ends, the
    reaper exits and the kernel kills every process left, so nothing outlives a run.
* The program runs under a fresh unprivileged uid/gid (as root: random per run, so RLIMIT_NPROC counts
  only this run's processes and parallel runs never share a quota; in a user namespace RLIMIT_NPROC
  counts that namespace's processes), with rlimits on CPU time, address space, processes, file size,
  open files and core dumps (0), `PR_SET_NO_NEW_PRIVS`, a parent-death signal, and a seccomp filter
  refusing non-Unix sockets, new namespaces, ptrace, mount, bpf, io_uring and similar calls.
* Where cgroups are writable (v1 memory/pids, or v2), each run gets its own cgroup: a total memory
  limit (all processes and the tmpfs) and a task limit; leftovers are killed through it.
* The parent enforces the wall-clock limit and an output cap while reading stdout/stderr
  incrementally, and on either kills the whole process group (which takes the PID namespace down).
* The environment is scrubbed to PATH/LANG/HOME/TMPDIR; the interpreter is the base (non-venv)
  interpreter with `-I -S`, so the program sees only the standard library.

Without any namespaces the sandbox degrades: a root parent still drops to the per-run uid (with an
interpreter that other users can run, or it refuses to run at all) and kills leftovers by uid; a
non-root parent relies on rlimits (processes counted on top of its own), seccomp (else a socket-blocking
startup shim), a private temporary directory and the process group. There the program can write to
world-writable places and, as the same user, signal the caller; a warning says so.
"""

from __future__ import annotations

import ast
import logging
import marshal
import math
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal, Sequence

logger = logging.getLogger(__name__)

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


# ---------------------------------------------------------------------------------------------
# The bootstrap: our own code, run as a separate `python -I -S -c` process. It applies the
# isolation, then forks the reaper (PID 1 of the new PID namespace), which forks the worker that
# drops privileges and execs the untrusted program. Only stdlib modules that load fast are used.

_BOOTSTRAP = r'''
import os, sys, marshal

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REMOUNT = 1, 2, 4, 8, 32
MS_BIND, MS_REC, MS_PRIVATE = 4096, 16384, 1 << 18
PR_SET_PDEATHSIG, PR_SET_SECCOMP, PR_SET_CHILD_SUBREAPER, PR_SET_NO_NEW_PRIVS = 1, 22, 36, 38
SETUP_FAILED = 121


def die(message):
    os.write(2, ("selfimprove-sandbox: " + message + "\n").encode("utf-8", "replace"))
    os._exit(SETUP_FAILED)


class Libc:
    def __init__(self):
        import ctypes
        self.ctypes = ctypes
        c = self.c = ctypes.CDLL(None, use_errno=True)
        c.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
        c.unshare.argtypes = [ctypes.c_int]
        c.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        c.sethostname.argtypes = [ctypes.c_char_p, ctypes.c_size_t]

    def check(self, result, what):
        if result != 0:
            err = self.ctypes.get_errno()
            raise OSError(err, os.strerror(err) + " (" + what + ")")

    def unshare(self, flags):
        self.check(self.c.unshare(flags), "unshare")

    def mount(self, source, target, fstype, flags, data=None):
        if flags & MS_REMOUNT and not flags & MS_BIND:
            raise ValueError("refusing a superblock remount")  # it would change the host's mount
        enc = lambda s: None if s is None else s.encode("utf-8", "surrogateescape")
        self.check(self.c.mount(enc(source), enc(target), enc(fstype), flags, enc(data)), "mount " + target)

    def prctl(self, option, a=0, b=0, c=0, d=0):
        self.check(self.c.prctl(option, a, b, c, d), "prctl %d" % option)


def mountpoints():
    import codecs
    with open("/proc/self/mountinfo", "rb") as f:
        lines = f.read().splitlines()
    for line in lines:
        fields = line.split()
        yield codecs.escape_decode(fields[4])[0].decode("utf-8", "surrogateescape"), fields[5].decode()


def setup_mounts(libc, spec, notes):
    libc.mount(None, "/", None, MS_REC | MS_PRIVATE)
    exposed = [(p, os.open(p, os.O_PATH | os.O_DIRECTORY)) for p in spec["expose"]]
    for target, options in list(mountpoints()):
        flags = MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID
        opts = options.split(",")
        if "nodev" in opts or not (target == "/dev" or target.startswith("/dev/")):
            flags |= MS_NODEV
        if "noexec" in opts:
            flags |= MS_NOEXEC
        for name, bit in (("noatime", 1024), ("nodiratime", 2048), ("relatime", 1 << 21), ("strictatime", 1 << 24)):
            if name in opts:
                flags |= bit
        try:
            libc.mount(None, target, None, flags)
        except OSError as e:
            notes.append("could not make %s read-only: %s" % (target, e))
    libc.mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "size=%dm,mode=755" % spec["disk_mb"])
    for d in spec["hide"]:
        libc.mount("tmpfs", d, "tmpfs", MS_NOSUID | MS_NODEV, "size=256k,mode=755")
    for path, fd in exposed:
        os.makedirs(path, exist_ok=True)
        libc.mount("/proc/self/fd/%d" % fd, path, None, MS_BIND | MS_REC)
        libc.mount(None, path, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
        os.close(fd)
    for d in spec["hide"]:
        libc.mount(None, d, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)
    if os.path.isdir("/dev/shm"):
        libc.mount("tmpfs", "/dev/shm", "tmpfs", MS_NOSUID | MS_NODEV,
                   "size=%dm,mode=1777" % min(16, spec["disk_mb"]))


SYSCALLS = {
    # machine: (audit arch, x32 bit, {blocked syscall numbers}, socket, clone, clone3)
    "x86_64": (0xC000003E, True, {101, 165, 166, 155, 161, 272, 308, 310, 311, 321, 298, 323, 250, 248,
                                  249, 425, 426, 427, 246, 320, 175, 313, 176, 169, 167, 168, 163, 303,
                                  304, 428, 429, 430, 431, 432, 433, 442, 172, 173}, 41, 56, 435),
    "aarch64": (0xC00000B7, False, {117, 40, 39, 41, 51, 97, 268, 270, 271, 280, 241, 282, 219, 217,
                                    218, 425, 426, 427, 104, 294, 105, 273, 106, 142, 224, 225, 89, 264,
                                    265, 428, 429, 430, 431, 432, 433, 442}, 198, 220, 435),
}


def install_seccomp(libc, no_fork):
    """Refuse non-Unix sockets, namespaces, ptrace, mount, bpf, io_uring, module loading, ...

    With `no_fork` (nothing else bounds the process count) new processes are refused too; threads
    are still allowed (they are bounded by the address-space limit).
    """
    machine = os.uname().machine
    if machine not in SYSCALLS:
        raise OSError("seccomp: no syscall table for " + machine)
    arch, x32, blocked, nr_socket, nr_clone, nr_clone3 = SYSCALLS[machine]
    LD, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
    ALLOW, ERRNO = 0x7FFF0000, 0x00050000
    EPERM, EACCES, ENOSYS, AF_UNIX, NS_FLAGS = 1, 13, 38, 1, 0x7E020000
    prog = [(LD, 0, 0, 4), (JEQ, 1, 0, arch), (RET, 0, 0, ERRNO | ENOSYS), (LD, 0, 0, 0)]
    if x32:
        prog.append((JGE, "eperm", 0, 0x40000000))
    for nr in sorted(blocked):
        prog.append((JEQ, "eperm", 0, nr))
    if no_fork and machine == "x86_64":
        prog += [(JEQ, "eagain", 0, 57), (JEQ, "eagain", 0, 58)]  # fork, vfork
    prog += [(JEQ, "enosys", 0, nr_clone3), (JEQ, "socket", 0, nr_socket), (JEQ, "clone", 0, nr_clone),
             (RET, 0, 0, ALLOW)]
    labels = {"socket": len(prog)}
    prog += [(LD, 0, 0, 16), (JEQ, 0, 1, AF_UNIX), (RET, 0, 0, ALLOW), (RET, 0, 0, ERRNO | EACCES)]
    labels["clone"] = len(prog)
    prog += [(LD, 0, 0, 16), (JSET, "eperm", 0, NS_FLAGS)]
    if no_fork:
        prog.append((JSET, 0, "eagain", 0x00010000))  # CLONE_THREAD: a thread, not a process
    prog.append((RET, 0, 0, ALLOW))
    labels["eperm"] = len(prog)
    prog.append((RET, 0, 0, ERRNO | EPERM))
    labels["eagain"] = len(prog)
    prog.append((RET, 0, 0, ERRNO | 11))
    labels["enosys"] = len(prog)
    prog.append((RET, 0, 0, ERRNO | ENOSYS))
    ct = libc.ctypes

    class Filter(ct.Structure):
        _fields_ = [("code", ct.c_ushort), ("jt", ct.c_ubyte), ("jf", ct.c_ubyte), ("k", ct.c_uint32)]

    class Program(ct.Structure):
        _fields_ = [("len", ct.c_ushort), ("filter", ct.POINTER(Filter))]

    jump = lambda i, t: labels[t] - i - 1 if isinstance(t, str) else t
    array = (Filter * len(prog))(*[Filter(c, jump(i, jt), jump(i, jf), k) for i, (c, jt, jf, k) in enumerate(prog)])
    fprog = Program(len(prog), array)
    libc.prctl(PR_SET_SECCOMP, 2, ct.addressof(fprog))


SHIM = """
import sys
def _si_start():
    import socket, _socket
    def refuse(*args, **kwargs):
        raise PermissionError(1, "network access is disabled in the sandbox")
    for module in (socket, _socket):
        for name in ("socket", "SocketType", "create_connection", "create_server", "fromfd", "socketpair",
                     "getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
            if hasattr(module, name):
                setattr(module, name, refuse)
    path = sys.argv[1]
    sys.argv[:] = [path]
    with open(path, "rb") as f:
        source = f.read()
    main = sys.modules["__main__"]
    for name in ("_si_start",):
        main.__dict__.pop(name, None)
    main.__dict__["__file__"] = path
    return compile(source, path, "exec"), main.__dict__
_si_code, _si_globals = _si_start()
del _si_start
exec(_si_code, _si_globals)
"""


def count_processes(uid):
    n = 0
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat("/proc/" + name).st_uid == uid:
                    n += 1
            except OSError:
                pass
    return n


def worker(libc, spec, run, prog_dir, stdin_fd, errpipe):
    import resource
    try:
        os.dup2(stdin_fd, 0)
        os.close(stdin_fd)
        workdir = prog_dir + "/work"
        os.chdir(workdir)
        uid = run["uid"]
        nproc = spec["max_processes"]
        if uid is None and not run["ns"]:
            nproc += count_processes(os.getuid())  # the user's own processes count too
        for res, value in ((resource.RLIMIT_CORE, 0), (resource.RLIMIT_AS, spec["memory_bytes"]),
                           (resource.RLIMIT_FSIZE, spec["file_size_bytes"]),
                           (resource.RLIMIT_NOFILE, spec["open_files"]), (resource.RLIMIT_NPROC, nproc)):
            resource.setrlimit(res, (value, value))
        resource.setrlimit(resource.RLIMIT_CPU, (spec["cpu_seconds"], spec["cpu_seconds"] + 1))
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        libc.prctl(PR_SET_PDEATHSIG, 9)
        libc.prctl(PR_SET_NO_NEW_PRIVS, 1)
        shim = not run["ns"]
        if spec["seccomp"]:
            try:
                install_seccomp(libc, run["no_fork"])
                shim = False
            except OSError:
                if run["no_fork"]:
                    raise  # nothing else would bound the number of processes: refuse to run
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "HOME": workdir, "TMPDIR": workdir}
        py = run["python"]
        argv = [py, "-I", "-S", "-B", "-X", "utf8"]
        argv += ["-c", SHIM, prog_dir + "/main.py"] if shim else [prog_dir + "/main.py"]
        os.closerange(3, errpipe)
        os.closerange(errpipe + 1, 1 << 16)
        os.execve(py, argv, env)
    except BaseException as e:
        try:
            os.write(errpipe, ("worker setup failed: %s: %s" % (type(e).__name__, e)).encode("utf-8", "replace"))
        finally:
            os._exit(SETUP_FAILED)


def reaper(libc, spec, run, prog_dir, status_fd, applied, notes):
    ns = run["ns"]
    try:
        libc.prctl(PR_SET_PDEATHSIG, 9)
        if ns:
            try:
                libc.mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
                applied.append("private-proc")
            except OSError as e:
                notes.append("no private /proc: %s" % e)
            try:
                libc.check(libc.c.sethostname(b"sandbox", 7), "sethostname")
            except OSError:
                pass
        else:
            libc.prctl(PR_SET_CHILD_SUBREAPER, 1)
        stdin_fd = os.memfd_create("stdin", 0)
        data = spec["stdin"]
        while data:
            data = data[os.write(stdin_fd, data):]
        os.lseek(stdin_fd, 0, 0)
        r, w = os.pipe()
    except BaseException as e:
        die("reaper setup failed: %s: %s" % (type(e).__name__, e))
    pid = os.fork()
    if pid == 0:
        os.close(r)
        worker(libc, spec, run, prog_dir, stdin_fd, w)
    os.close(w)
    os.close(stdin_fd)
    error = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        error += chunk
    os.close(r)
    status, rusage = None, None
    while True:
        try:
            child, st, ru = os.wait4(-1, 0)
        except ChildProcessError:
            break
        if child == pid:
            status, rusage = st, ru
            break
    if not ns:  # no PID namespace to tear down: kill whatever the program left behind (we are subreaper)
        me = str(os.getpid())
        for _ in range(1000):
            children = []
            for name in os.listdir("/proc"):
                if name.isdigit():
                    try:
                        with open("/proc/%s/stat" % name, "rb") as f:
                            stat = f.read()
                        if stat[stat.rindex(b")") + 2:].split()[1].decode() == me:
                            children.append(int(name))
                    except (OSError, ValueError, IndexError):
                        pass
            if not children:
                break
            for child in children:
                try:
                    os.kill(child, 9)
                except OSError:
                    pass
            while True:
                try:
                    if os.waitpid(-1, os.WNOHANG)[0] == 0:
                        break
                except ChildProcessError:
                    break
    report = {"status": status, "applied": applied, "notes": notes,
              "setup_error": error.decode("utf-8", "replace") or None}
    if rusage is not None:
        report["cpu"] = rusage.ru_utime + rusage.ru_stime
        report["maxrss_kb"] = rusage.ru_maxrss
    os.write(status_fd, marshal.dumps(report))
    os._exit(0)


def traversable(path):
    """Can a user other than the owner reach and run `path` (every ancestor has o+x)?"""
    while True:
        try:
            if not os.stat(path).st_mode & 0o001:
                return False
        except OSError:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


def enter_namespaces(libc, spec, notes):
    """'root' (namespaces as real root), 'user' (inside a new user namespace) or None."""
    flags = CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS
    if not spec["namespaces"]:
        return None
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        try:
            libc.unshare(flags)
            return "root"
        except OSError as e:
            notes.append("namespaces as root unavailable (%s); trying a user namespace" % e)
    try:
        libc.unshare(flags | 0x10000000)  # CLONE_NEWUSER: we become root of our own namespaces only
        for name, text in (("setgroups", "deny"), ("uid_map", "0 %d 1" % uid), ("gid_map", "0 %d 1" % gid)):
            with open("/proc/self/" + name, "w") as f:
                f.write(text)
        return "user"
    except OSError as e:
        notes.append("user namespaces unavailable: %s" % e)
        return None


def main():
    data = b""
    while True:
        chunk = os.read(0, 1 << 20)
        if not chunk:
            break
        data += chunk
    spec = marshal.loads(data)
    status_fd = spec["status_fd"]
    applied, notes = [], []
    for kind, procs in spec["cgroups"]:
        try:
            with open(procs, "w") as f:
                f.write(str(os.getpid()))
            applied.append("cgroup-" + kind)
        except OSError as e:
            notes.append("cgroup %s unusable: %s" % (procs, e))
    real_root = os.getuid() == 0
    libc = Libc()
    mode = enter_namespaces(libc, spec, notes)
    prog_dir = spec["prog_dir"]
    run = {"ns": mode is not None, "uid": None, "python": spec["python"]}
    try:
        if mode:
            setup_mounts(libc, spec, notes)
            prog_dir = "/tmp"
            applied += ["netns", "pidns", "ipcns", "utsns", "mountns", "readonly-root", "private-tmp"]
            if mode == "user":
                applied.append("userns")
            if spec["hide"]:
                applied.append("hidden:" + ",".join(spec["hide"]))
        if mode == "root":
            run["uid"] = spec["uid"]
        elif mode is None and real_root:
            # no mount namespace: the per-run uid needs an interpreter that other users can reach
            if traversable(spec["python"]):
                run["uid"] = spec["uid"]
            elif spec["alt_python"] and traversable(spec["alt_python"]):
                run["uid"], run["python"] = spec["uid"], spec["alt_python"]
                notes.append("no namespaces: using %s, which other users can run" % spec["alt_python"])
            else:
                die("refusing to run untrusted code as root without namespaces: %s is not reachable by "
                    "other users and no other interpreter is" % spec["python"])
        # RLIMIT_NPROC binds every uid but the real root; else only a pids cgroup, or no new processes
        run["no_fork"] = real_root and run["uid"] is None and not spec["pids_cgroup"]
        with open(prog_dir + "/main.py", "wb") as f:
            f.write(spec["code"])
        os.chmod(prog_dir + "/main.py", 0o444)
        os.mkdir(prog_dir + "/work", 0o700)
        if run["uid"] is not None:
            os.chown(prog_dir + "/work", run["uid"], run["uid"])
            os.chmod(prog_dir, 0o755)
            applied.append("uid")
        applied += ["rlimits", "no-new-privs"]
        if spec["seccomp"]:
            applied.append("seccomp-no-fork" if run["no_fork"] else "seccomp")
        elif run["no_fork"]:
            die("no way to bound the number of processes (real root, no uid, no pids cgroup, no seccomp)")
    except BaseException as e:
        die("setup failed: %s: %s" % (type(e).__name__, e))
    pid = os.fork()
    if pid == 0:
        reaper(libc, spec, run, prog_dir, status_fd, applied, notes)
    os.close(status_fd)
    _, status = os.waitpid(pid, 0)
    os._exit(0 if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else SETUP_FAILED)


main()
'''


# ---------------------------------------------------------------------------------------------
# Parent side: the plan (what this machine allows), per-run resources, and the run itself.


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


class _Cgroups:
    """Per-run cgroups (memory and pids) under our parent cgroup; all best effort."""

    def __init__(self, plan: _Plan, name: str, limits: Limits) -> None:
        self.dirs: list[tuple[str, Path]] = []
        total_memory = (limits.memory_mb + limits.disk_mb + 64) << 20
        tasks = limits.max_processes + 4  # the bootstrap and the reaper are inside too
        for kind, parent in plan.cgroups:
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
                _note_once(plan, f"cgroup {kind} unusable ({e}); memory/process limits are per process only")
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
    cgroups = _Cgroups(plan, run_id, limits) if plan.cgroups else None
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


# ---------------------------------------------------------------------------------------------
# Tests inside the sandbox: a harness (our code) loads the candidate, then runs the tests, and
# reports through lines tagged with a per-run secret (the nonce) that only the harness knows: it
# arrives on stdin and is read before the candidate runs, so printing fake results, exiting early
# (sys.exit / os._exit) or killing itself can never look like passing tests. Asserts are rewritten so
# that comparisons refuse objects whose comparison/truth methods were written by the candidate (the
# "always equal" hack), and the tests run with a snapshot of the builtins taken before the candidate
# ran (tampering with builtins or AssertionError does not help it).

_HARNESS = r'''
def _si_run(cand_src, chunks, entry_point):
    import os, sys, builtins, types, operator, reprlib
    read, write, exit_, dup = os.read, os.write, os._exit, os.dup
    AE, BE, SE, FT, isinst, typ, strf = AssertionError, BaseException, SystemExit, types.FunctionType, isinstance, type, str
    nonce = read(0, 256).decode("ascii", "replace").strip()
    out = dup(1)
    real_out, real_err = sys.stdout, sys.stderr
    snapshot = dict(builtins.__dict__)
    mro_of = type.__dict__["__mro__"].__get__
    dict_of = type.__dict__["__dict__"].__get__
    stdlib = os.path.dirname(os.__file__) + "/"
    native = (types.BuiltinFunctionType, types.WrapperDescriptorType, types.MethodDescriptorType,
              types.MethodWrapperType, types.ClassMethodDescriptorType)
    leaf = frozenset((int, float, complex, str, bytes, bool, type(None)))
    dunders = ("__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__", "__bool__", "__len__",
               "__contains__", "__hash__")
    shortrepr = reprlib.Repr()
    shortrepr.maxstring = shortrepr.maxother = 80
    shortrepr.maxlist = shortrepr.maxtuple = shortrepr.maxdict = shortrepr.maxset = 12
    total = sum(1 for counted, _, _ in chunks if counted) + (1 if entry_point else 0)

    def emit(line):
        try:
            write(out, ("\n" + nonce + " " + line + "\n").encode("utf-8", "replace"))
        except BE:
            pass

    def finish(passed, reason):
        for stream in (real_out, real_err):
            try:
                stream.flush()
            except BE:
                pass
        emit("END %d %d %s" % (passed, total, reason[:1500].encode("utf-8", "replace").hex()))
        exit_(0)

    def safe(f, *args):
        try:
            return strf(f(*args))[:300]
        except BE:
            return "?"

    def describe(e):
        if isinst(e, MemoryError):
            return "MemoryError (memory limit exceeded)"
        t = typ(e)
        name = safe(lambda: t.__name__)
        message = safe(strf, e)
        return name + (": " + message if message else "")

    def where(e):
        tb, found = e.__traceback__, None
        while tb is not None:
            if tb.tb_frame.f_code.co_filename == "solution.py":
                found = tb.tb_lineno
            tb = tb.tb_next
        if found is None:
            return ""
        lines = cand_src.splitlines()
        text = lines[found - 1].strip() if 0 < found <= len(lines) else ""
        return " (solution.py line %d: %s)" % (found, text[:120])

    def foreign(t):
        mro = mro_of(t)
        for name in dunders:
            for klass in mro:
                d = dict_of(klass)
                if name in d:
                    f = d[name]
                    if isinst(f, (staticmethod, classmethod)):
                        f = f.__func__
                    if f is None or isinst(f, native):
                        break
                    if typ(f) is FT and f.__code__.co_filename.startswith(stdlib):
                        break
                    return safe(lambda: klass.__name__) + "." + name
        return None

    def untrusted(value):
        stack, seen, budget = [value], set(), 20000
        while stack:
            x = stack.pop()
            t = typ(x)
            if t in leaf:
                continue
            budget -= 1
            if budget < 0:
                return None
            bad = foreign(t)
            if bad:
                return "the solution returned an object whose %s is defined by the solution" % bad
            if id(x) in seen:
                continue
            if isinst(x, dict):
                seen.add(id(x))
                stack.extend(dict.keys(x))
                stack.extend(dict.values(x))
            elif isinst(x, (list, tuple, set, frozenset)):
                seen.add(id(x))
                base = list if isinst(x, list) else tuple if isinst(x, tuple) else set if isinst(x, set) else frozenset
                stack.extend(base.__iter__(x))
        return None

    class Untrusted(Exception):
        pass

    class Marker:
        def __init__(self, src, user):
            self.src, self.user = src, user

    last = [None]
    ops = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
           ">=": operator.ge, "is": operator.is_, "is not": operator.is_not,
           "in": lambda a, b: operator.contains(b, a), "not in": lambda a, b: not operator.contains(b, a)}

    def check_cmp(op, a, b):
        for side in (a, b):
            why = untrusted(side)
            if why:
                raise Untrusted(why)
        last[0] = (op, a, b)
        return ops[op](a, b)

    def check_chain(names, *values):
        for i, op in enumerate(names):
            if not check_cmp(op, values[i], values[i + 1]):
                return False
        return True

    def check_truth(value):
        last[0] = None
        why = untrusted(value)
        if why:
            raise Untrusted(why)
        return bool(value)

    def failure(e, src):
        args = e.args
        if args and isinst(args[0], Marker):
            m = args[0]
            text = m.src
            if m.user is not None:
                text += " (" + safe(strf, m.user) + ")"
            if last[0] is not None:
                op, a, b = last[0]
                got = safe(shortrepr.repr, a)
                if op == "==":
                    text += " -- got " + got + ", expected " + safe(shortrepr.repr, b)
                else:
                    text += " -- left side " + got + ", right side " + safe(shortrepr.repr, b)
            return text
        return src + (" -- AssertionError: " + safe(strf, args[0]) if args else " -- AssertionError")

    helpers = {"_sandbox_cmp": check_cmp, "_sandbox_chain": check_chain, "_sandbox_truth": check_truth,
               "_sandbox_msg": lambda src, user=None: Marker(src, user)}
    compiled = []
    for i, (counted, orig, src) in enumerate(chunks):
        try:
            compiled.append((counted, orig, compile(src, "<test %d>" % (i + 1), "exec")))
        except BE as e:
            finish(0, "the tests do not compile: " + describe(e))
    try:
        code = compile(cand_src, "solution.py", "exec")
    except SyntaxError as e:
        finish(0, "syntax error in the solution at line %s: %s" % (e.lineno, safe(lambda: e.msg)))
    except BE as e:
        finish(0, "the solution does not compile: " + describe(e))
    ns = {"__name__": "solution", "__builtins__": builtins}
    try:
        exec(code, ns)
    except SE as e:
        finish(0, "the solution exited (SystemExit %s) before the tests ran" % safe(repr, e.code))
    except BE as e:
        finish(0, "the solution raised " + describe(e) + " while loading" + where(e))
    if entry_point and entry_point not in ns:
        finish(0, "the solution does not define %s" % entry_point)
    env = dict(ns)
    env["__builtins__"] = dict(snapshot)
    env.update(helpers)
    if entry_point:
        compiled.append((True, "check(%s)" % entry_point, compile("check(%s)" % entry_point, "<check>", "exec")))
    passed, index = 0, 0
    for counted, orig, code in compiled:
        label = "test %d/%d" % (index + 1, total) if counted else "test setup"
        if counted:
            emit("START %d" % index)
        last[0] = None
        try:
            exec(code, env)
        except AE as e:
            finish(passed, label + " failed: " + failure(e, orig))
        except Untrusted as e:
            finish(passed, label + " failed: " + strf(e.args[0]) + " (" + orig + ")")
        except SE as e:
            finish(passed, label + ": the solution exited (SystemExit %s) during %s" % (safe(repr, e.code), orig))
        except BE as e:
            finish(passed, label + " raised " + describe(e) + where(e) + " in " + orig)
        if counted:
            passed += 1
            index += 1
    finish(passed, "all tests passed (%d/%d)" % (passed, total))
'''

_OPS = {ast.Eq: "==", ast.NotEq: "!=", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=", ast.Is: "is",
        ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}


class _AssertRewriter(ast.NodeTransformer):
    """Route assert conditions through the harness's checked comparisons (our test code only)."""

    def __init__(self, source: str) -> None:
        self.source = source

    def visit_Assert(self, node: ast.Assert) -> ast.Assert:
        src = " ".join((ast.get_source_segment(self.source, node) or ast.unparse(node)).split())
        args: list[ast.expr] = [ast.Constant(src[:300])]
        if node.msg is not None:
            args.append(node.msg)
        message = ast.Call(ast.Name("_sandbox_msg", ast.Load()), args, [])
        return ast.copy_location(ast.Assert(self._truth(node.test), message), node)

    def _truth(self, e: ast.expr) -> ast.expr:
        if isinstance(e, ast.Compare):
            names = [_OPS[type(op)] for op in e.ops]
            if len(names) == 1:
                return ast.Call(ast.Name("_sandbox_cmp", ast.Load()), [ast.Constant(names[0]), e.left,
                                                                      e.comparators[0]], [])
            return ast.Call(ast.Name("_sandbox_chain", ast.Load()),
                            [ast.Tuple([ast.Constant(n) for n in names], ast.Load()), e.left, *e.comparators], [])
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.Not):
            return ast.UnaryOp(ast.Not(), self._truth(e.operand))
        if isinstance(e, ast.BoolOp):
            return ast.BoolOp(e.op, [self._truth(v) for v in e.values])
        return ast.Call(ast.Name("_sandbox_truth", ast.Load()), [e], [])


def _rewrite(source: str) -> str:
    try:
        tree = ast.parse(source)
    except SyntaxError as e:
        raise ValueError(f"test code does not parse: {e}") from e
    tree = ast.fix_missing_locations(_AssertRewriter(source).visit(tree))
    return ast.unparse(tree)


def _chunks(tests: Sequence[str] | str, setup_code: str) -> list[tuple[bool, str, str]]:
    """(counted, original text, rewritten source) for each piece of test code, in order."""
    chunks: list[tuple[bool, str, str]] = []
    if setup_code.strip():
        chunks.append((False, "test setup", _rewrite(setup_code)))
    if isinstance(tests, str):
        try:
            tree = ast.parse(tests)
        except SyntaxError as e:
            raise ValueError(f"test code does not parse: {e}") from e
        pending: list[str] = []
        for stmt in tree.body:
            text = ast.get_source_segment(tests, stmt) or ast.unparse(stmt)
            if isinstance(stmt, ast.Assert):
                if pending:
                    chunks.append((False, "test setup", _rewrite("\n".join(pending))))
                    pending = []
                chunks.append((True, " ".join(text.split())[:300], _rewrite(text)))
            else:
                pending.append(ast.unparse(stmt))
        if pending:
            chunks.append((False, "test setup", _rewrite("\n".join(pending))))
    else:
        for test in tests:
            if not isinstance(test, str) or not test.strip():
                raise ValueError(f"each test must be non-empty code, got {test!r}")
            chunks.append((True, " ".join(test.split())[:300], _rewrite(test.strip())))
    return chunks


@dataclass(frozen=True)
class TestReport:
    """The outcome of `run_tests`: passed only if every test ran and passed, with the reason why not."""

    __test__ = False  # not a pytest test class

    passed: bool
    reason: str
    tests_passed: int
    tests_total: int
    result: SandboxResult

    @property
    def score(self) -> float:
        return 1.0 if self.passed else 0.0

    @property
    def correct(self) -> bool:
        return self.passed


def run_tests(
    code: str,
    tests: Sequence[str] | str,
    limits: Limits = Limits(),
    *,
    entry_point: str | None = None,
    setup_code: str = "",
) -> TestReport:
    """Run a candidate solution and its tests in one sandbox run.

    `tests` is a list of test statements (MBPP `test_list`: one assert each; each counts as one test)
    or one test module (HumanEval `test`: its top-level asserts count as tests, other statements set
    up; with `entry_point`, `check(<entry_point>)` is called at the end and counts as one test).
    Raises ValueError if the tests themselves do not parse or there are none (our data, not the model).
    """
    if entry_point is not None and not entry_point.isidentifier():
        raise ValueError(f"entry_point must be an identifier, got {entry_point!r}")
    chunks = _chunks(tests, setup_code)
    total = sum(1 for counted, _, _ in chunks if counted) + (1 if entry_point else 0)
    if total == 0:
        raise ValueError("no tests to run")
    nonce = secrets.token_hex(16)
    program = f"{_HARNESS}\n_si_run({code!r}, {chunks!r}, {entry_point!r})\n"
    result = run_python(program, stdin=nonce + "\n", limits=limits)
    started, end, ends = -1, None, 0
    kept: list[str] = []
    for line in result.stdout.split("\n"):
        if line.startswith(nonce + " "):
            parts = line.split(" ")
            if len(parts) >= 3 and parts[1] == "START":
                started = int(parts[2])
            elif len(parts) >= 5 and parts[1] == "END":
                ends += 1
                try:
                    end = (int(parts[2]), int(parts[3]), bytes.fromhex(parts[4]).decode("utf-8", "replace"))
                except ValueError:
                    end = None
            continue
        kept.append(line)
    clean = replace(result, stdout="\n".join(kept).strip("\n") + ("\n" if kept and any(kept) else ""))
    if ends > 1:  # only a solution that forks can make the harness report twice
        return TestReport(False, "the tests reported more than once (the solution forked?)", 0, total, clean)
    if end is not None and result.status == "ok":
        passed_count, reported_total, reason = end
        ok = passed_count == total == reported_total
        return TestReport(ok, reason if ok or reason else "tests failed", passed_count, total, clean)
    where = _test_position(chunks, started, total)
    if result.status == "timeout":
        reason = f"timed out {where} ({result.reason})"
    elif result.status == "memory":
        reason = f"memory limit exceeded {where} ({result.reason})"
    elif result.status == "output_limit":
        reason = f"too much output {where} ({result.reason})"
    elif result.status == "killed":
        reason = f"the program was {result.reason} {where}"
    elif result.status == "ok":
        reason = f"the program exited (code 0) {where} without finishing the tests"
    else:
        reason = f"the program ended {where} before the tests finished ({result.reason})"
    passed_before = max(0, started)
    return TestReport(False, reason[:_MAX_REASON_CHARS * 2], passed_before, total, clean)


def _test_position(chunks: list[tuple[bool, str, str]], started: int, total: int) -> str:
    if started < 0:
        return "before the tests started (while loading the solution)"
    counted = [orig for c, orig, _ in chunks if c]
    label = counted[started] if started < len(counted) else "check(...)"
    return f"in test {started + 1}/{total} ({label})"
