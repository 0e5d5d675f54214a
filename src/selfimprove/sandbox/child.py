"""The sandbox's bootstrap: our own program, run by the host as a separate `python -I -S -B -c` process
(the host reads this file's source). It reads a marshalled spec on stdin, applies the isolation
(namespaces, mounts, seccomp, rlimits, cgroups), then forks the reaper (PID 1 of the new PID
namespace), which forks the worker that drops privileges and execs the untrusted program. Only
stdlib modules that load fast are used, and importing this module runs nothing.
"""

import os, sys, marshal  # noqa: F401  (sys: kept as in every bootstrap run so far)

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


if __name__ == "__main__":
    main()
