"""Run untrusted Python (model-written code) in a locked-down child process.

`run_python(code, stdin=..., limits=...)` (`run.py`) runs one program and returns a `SandboxResult`;
`run_tests(code, tests, limits)` runs a candidate solution followed by assert-based tests (MBPP
`test_list`, or a HumanEval `check(candidate)` module) in ONE sandbox run and says whether they all
passed, and if not, why. Nothing here imports, evaluates or parses the untrusted code in this process;
only our own bootstrap (`child.py`) and test harness (`harness.py`) run next to it. Both are real
Python files (linted and imported by the tests); the host reads their source and runs it. Many runs may go in parallel from
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

from selfimprove.sandbox.run import isolation_report, run_python
from selfimprove.sandbox.testing import TestReport, run_tests
from selfimprove.sandbox.types import Limits, SandboxError, SandboxResult, Status

__all__ = ["Limits", "SandboxError", "SandboxResult", "Status", "TestReport", "isolation_report", "run_python", "run_tests"]
