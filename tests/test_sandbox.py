"""The sandbox: correct and wrong programs, hostile programs (all bounded by small limits), parallel runs.

Every hostile program here runs only through `run_python`/`run_tests` with limits of a few seconds, a
few processes and a few hundred MiB, so a bug in the sandbox fails a test instead of harming the machine.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from selfimprove.sandbox import Limits, SandboxError, TestReport, run_python, run_tests
from selfimprove.sandbox import plan as sandbox

FAST = Limits(wall_seconds=2.0, cpu_seconds=1.0, memory_mb=256, max_processes=8)
PROJECT = Path(__file__).resolve().parents[1]


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _ours_or_orphaned(pid: int) -> bool:
    """Started under this process, or left to init: not a live run of another test process (pytest-xdist
    runs two at once, and the other one's programs are its own business)."""
    parent = _parent(pid)
    if parent in (0, 1):
        return True
    for _ in range(64):
        if parent == os.getpid():
            return True
        if parent in (0, 1):
            return False
        parent = _parent(parent)
    return False


def _sandbox_processes(uids: set[int]) -> set[int]:
    """Processes that look like sandboxed programs: by a per-run uid this process handed out, or by the
    worker's command line when they were started under this process or orphaned."""
    found = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            uid = os.stat(f"/proc/{name}").st_uid
            with open(f"/proc/{name}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        worker = b"-B" in argv and b"-S" in argv and any(a.endswith(b"/main.py") for a in argv)
        if uid in uids or (worker and _ours_or_orphaned(int(name))):
            found.add(int(name))
    return found


def _assert_no_strays(before: set[int], uids: set[int]) -> None:
    deadline = time.monotonic() + 3.0
    while True:
        left = _sandbox_processes(uids) - before
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert not left, f"sandboxed processes survived the run: {sorted(left)}"


@pytest.fixture()
def no_strays(monkeypatch: pytest.MonkeyPatch):
    from selfimprove.sandbox import run as sandbox_run

    uids: set[int] = set()
    allocate = sandbox_run._allocate_uid

    def recorded() -> int:
        uid = allocate()
        uids.add(uid)
        return uid

    monkeypatch.setattr(sandbox_run, "_allocate_uid", recorded)
    before = _sandbox_processes(uids)
    yield
    _assert_no_strays(before, uids)


# ---------------------------------------------------------------------------------------------
# Ordinary programs.


def test_ok_program_reports_output_and_isolation():
    r = run_python("print('hello'); import sys; print(sys.version_info[:2])", limits=FAST)
    assert r.status == "ok" and r.ok and r.returncode == 0
    assert r.stdout.splitlines()[0] == "hello"
    assert r.stderr == ""
    assert "rlimits" in r.isolation and "no-new-privs" in r.isolation


def test_error_program_reports_the_exception():
    r = run_python("def f():\n    return 1 / 0\nf()\n", limits=FAST)
    assert r.status == "error" and r.returncode == 1
    assert "ZeroDivisionError" in r.reason
    assert "ZeroDivisionError" in r.stderr


def test_stdin_reaches_the_program_and_nonzero_exit_code():
    r = run_python("import sys\ndata = sys.stdin.read()\nprint(data.upper())\nsys.exit(3)", stdin="abc", limits=FAST)
    assert r.status == "error" and r.returncode == 3
    assert r.stdout == "ABC\n"


def test_only_the_standard_library_is_importable():
    r = run_python("import pydantic", limits=FAST)
    assert r.status == "error" and "ModuleNotFoundError" in r.reason


def test_working_directory_is_empty_private_and_writable():
    code = "import os\nprint(os.listdir('.'))\nopen('out.txt', 'w').write('x')\nprint(open('out.txt').read())"
    r = run_python(code, limits=FAST)
    assert r.ok, r
    assert r.stdout == "[]\nx\n"


def test_environment_is_scrubbed(monkeypatch):
    secret = "s3cr3t-" + secrets.token_hex(8)
    monkeypatch.setenv("SELFIMPROVE_SECRET", secret)
    code = (
        "import os\n"
        "print(sorted(os.environ))\n"
        "print('SELFIMPROVE_SECRET' in os.environ)\n"
        "print(open('/proc/self/environ', 'rb').read())\n"
    )
    r = run_python(code, limits=FAST)
    assert r.ok, r
    assert "SELFIMPROVE_SECRET" not in r.stdout.replace("print('SELFIMPROVE_SECRET'", "")
    assert secret not in r.stdout
    assert r.stdout.splitlines()[1] == "False"


def test_limits_are_validated():
    with pytest.raises(ValueError):
        Limits(wall_seconds=0)
    with pytest.raises(ValueError):
        Limits(memory_mb=1)
    assert Limits(wall_seconds=2.5).cpu_limit == 3
    assert Limits(wall_seconds=9, cpu_seconds=1.2).cpu_limit == 2


# ---------------------------------------------------------------------------------------------
# Hostile programs.


def test_infinite_loop_hits_a_time_limit(no_strays):
    r = run_python("while True:\n    pass\n", limits=FAST)
    assert r.status == "timeout", r
    assert "time limit" in r.reason


def test_sleeping_program_hits_the_wall_limit(no_strays):
    r = run_python("import time\ntime.sleep(60)\n", limits=Limits(wall_seconds=1.0))
    assert r.status == "timeout" and "wall time limit" in r.reason


@pytest.mark.parametrize(
    "code",
    [
        "x = bytearray(10**10)\n",
        "x = []\nwhile True:\n    x.append(' ' * 10**6)\n",
    ],
    ids=["bytearray", "growing-list"],
)
def test_memory_bomb_hits_the_memory_limit(code, no_strays):
    r = run_python(code, limits=FAST)
    assert r.status == "memory", r
    assert "memory limit" in r.reason


def test_memory_spread_over_processes_is_bounded(no_strays):
    code = (
        "import os\n"
        "for _ in range(3):\n"
        "    os.fork()\n"
        "x = bytearray(200 * 2**20)\n"
        "for i in range(0, len(x), 4096):\n"
        "    x[i] = 1\n"
        "import time\ntime.sleep(0.5)\n"
    )
    r = run_python(code, limits=Limits(wall_seconds=4, memory_mb=256, max_processes=16))
    assert r.status in ("memory", "killed", "error"), r  # the cgroup OOM killer, or per-process limits


def test_fork_bomb_is_contained(no_strays):
    r = run_python("import os\nwhile True:\n    os.fork()\n", limits=FAST)
    assert r.status != "ok", r
    assert r.reason


def test_persistent_fork_bomb_is_contained(no_strays):
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    r = run_python(code, limits=FAST)
    assert r.status == "timeout", r


def test_process_count_is_limited(no_strays):
    code = (
        "import os, time\n"
        "n = 0\n"
        "for _ in range(100):\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "        n += 1\n"
        "    except OSError:\n"
        "        break\n"
        "print(n)\n"
    )
    r = run_python(code, limits=FAST)
    assert r.ok, r
    assert int(r.stdout) < FAST.max_processes  # the sleeping children are killed with the run


def test_daemonized_child_does_not_survive(no_strays):
    code = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\nprint('parent done')\n"
    r = run_python(code, limits=FAST)
    assert r.ok and r.stdout == "parent done\n"


def test_output_flood_is_capped_and_killed_fast(no_strays):
    limits = Limits(wall_seconds=5, output_bytes=100_000)
    r = run_python("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", limits=limits)
    assert r.status == "output_limit", r  # killed for the cap, not by the 5 s wall limit
    assert len(r.stdout) + len(r.stderr) <= limits.output_bytes


def test_stderr_flood_is_capped(no_strays):
    r = run_python("import sys\nwhile True:\n    sys.stderr.write('e' * 4096)\n", limits=Limits(output_bytes=50_000))
    assert r.status == "output_limit"
    assert len(r.stderr) <= 50_000


def test_writing_outside_the_working_directory_fails():
    name = f"/tmp/sandbox_escape_{secrets.token_hex(8)}"
    project_file = PROJECT / f"sandbox_escape_{secrets.token_hex(8)}"
    code = (
        "import os\n"
        f"for path in [{name!r}, {str(project_file)!r}, os.path.expanduser('~/x'), '/etc/sandbox_escape']:\n"
        "    try:\n"
        "        with open(path, 'w') as f:\n"
        "            f.write('escaped')\n"
        "        print('wrote', path)\n"
        "    except OSError as e:\n"
        "        print('refused', path, type(e).__name__)\n"
    )
    r = run_python(code, limits=FAST)
    assert r.ok, r
    assert not project_file.exists()
    assert not Path("/etc/sandbox_escape").exists()
    assert f"refused {project_file}" in r.stdout
    if "mountns" not in r.isolation:
        pytest.skip("no mount namespace on this machine: world-writable /tmp is reachable")
    assert not Path(name).exists()


def test_project_tree_is_not_visible():
    r = run_python(f"import os\nprint(os.path.exists({str(PROJECT / 'pyproject.toml')!r}))", limits=FAST)
    if "mountns" not in r.isolation:
        pytest.skip("no mount namespace on this machine")
    assert r.stdout == "False\n"


def test_network_is_blocked():
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.2)
    port = listener.getsockname()[1]
    code = (
        "import socket\n"
        f"for address in [('127.0.0.1', {port}), ('192.0.2.1', 80)]:\n"  # 192.0.2.1: TEST-NET, never routed
        "    try:\n"
        "        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n"
        "        s.settimeout(1)\n"
        "        s.connect(address)\n"
        "        print('connected', address)\n"
        "    except OSError as e:\n"
        "        print('blocked', address[0], type(e).__name__)\n"
    )
    try:
        r = run_python(code, limits=FAST)
        with pytest.raises(OSError):  # nothing ever reached our listener
            listener.accept()
    finally:
        listener.close()
    assert r.ok, r
    assert "connected" not in r.stdout
    assert r.stdout.count("blocked") == 2


def test_killing_the_parent_does_not_reach_us(no_strays):
    code = (
        "import os, signal\n"
        "for attempt in (lambda: os.kill(os.getppid(), 9), lambda: os.killpg(os.getpgid(0), 9),\n"
        "                lambda: os.kill(-1, 9), lambda: os.kill(1, 9)):\n"
        "    try:\n"
        "        attempt()\n"
        "    except OSError as e:\n"
        "        print(type(e).__name__, flush=True)\n"
        "print('still here')\n"
    )
    parent = os.getppid()  # already 1 when pytest runs under nohup from a shell that has exited
    r = run_python(code, limits=FAST)
    assert r.status in ("ok", "killed")  # killpg of its own group may kill the program itself
    assert os.getppid() == parent  # our parent still lives, and we are alive to check
    again = run_python("print('fine')", limits=FAST)
    assert again.ok


def test_parent_pid_and_other_processes_are_invisible():
    r = run_python(f"import os\nprint(os.path.exists('/proc/{os.getpid()}'))", limits=FAST)
    if "pidns" not in r.isolation:
        pytest.skip("no PID namespace on this machine")
    assert r.stdout == "False\n"


def test_core_dumps_and_big_files_are_refused():
    code = (
        "import resource\n"
        "print(resource.getrlimit(resource.RLIMIT_CORE))\n"
        "try:\n"
        "    with open('big', 'wb') as f:\n"
        "        f.write(b'x' * (3 * 2**20))\n"
        "    print('wrote')\n"
        "except OSError as e:\n"
        "    print('refused', e.errno)\n"
    )
    r = run_python(code, limits=Limits(file_size_mb=1))
    assert r.ok, r
    assert r.stdout.splitlines() == ["(0, 0)", "refused 27"]  # EFBIG


# ---------------------------------------------------------------------------------------------
# Parallel runs.


def test_parallel_runs_do_not_interfere(no_strays):
    def job(i: int):
        code = (
            "import os, time\n"
            f"open('mine.txt', 'w').write('{i}')\n"
            "time.sleep(0.2)\n"
            "print(open('mine.txt').read(), os.listdir('.'))\n"
        )
        return run_python(code, limits=FAST)

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(job, range(8)))
    for i, r in enumerate(results):
        assert r.ok, r
        assert r.stdout == f"{i} ['mine.txt']\n"


def test_parallel_hostile_and_honest_runs(no_strays):
    programs = ["print('a')", "while True: pass", "x = bytearray(10**10)", "print('b')"] * 2
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda c: run_python(c, limits=FAST), programs))
    assert [r.status for r in results] == ["ok", "timeout", "memory", "ok"] * 2
    assert [r.stdout for r in results if r.ok] == ["a\n", "b\n"] * 2


# ---------------------------------------------------------------------------------------------
# Degraded mode (no namespaces): still bounded, still no network.


def test_without_namespaces_limits_still_hold(monkeypatch, no_strays):
    plan = sandbox._plan()
    monkeypatch.setattr(sandbox, "_PLAN", dataclasses.replace(plan, namespaces=False, logged=set()))
    try:
        r = run_python("print('ok')", limits=FAST)
    except SandboxError as e:
        pytest.skip(f"this machine refuses to run without namespaces: {e}")
    assert r.ok and "pidns" not in r.isolation
    bomb = run_python("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n",
                      limits=FAST)
    assert bomb.status == "timeout"
    net = run_python("import socket\nsocket.socket().connect(('127.0.0.1', 9))", limits=FAST)
    assert net.status == "error"


# ---------------------------------------------------------------------------------------------
# Tests inside the sandbox.

ADD_TESTS = ["assert add(1, 2) == 3", "assert add(2, 2) == 4", "assert add(-1, 1) == 0"]


def _tests(code: str, tests=ADD_TESTS, limits=FAST, **kwargs) -> TestReport:
    return run_tests(code, tests, limits, **kwargs)


def test_correct_solution_passes():
    report = _tests("def add(a, b):\n    return a + b\n")
    assert report.passed and report.correct and report.score == 1.0
    assert (report.tests_passed, report.tests_total) == (3, 3)


def test_wrong_solution_fails_with_the_failing_assert():
    report = _tests("def add(a, b):\n    return a * b\n")
    assert not report.passed and report.score == 0.0
    assert "test 1/3 failed: assert add(1, 2) == 3" in report.reason
    assert "got 2" in report.reason


def test_partly_wrong_solution_names_the_first_failure():
    report = _tests("def add(a, b):\n    return a + b if a > 0 else 7\n")
    assert not report.passed
    assert report.tests_passed == 2
    assert "test 3/3 failed: assert add(-1, 1) == 0 -- got 7, expected 0" in report.reason


def test_exception_in_the_solution_is_reported():
    report = _tests("def add(a, b):\n    return a / 0\n")
    assert "ZeroDivisionError" in report.reason and "solution.py line 2" in report.reason


def test_syntax_error_is_reported():
    report = _tests("def add(a, b)\n    return a + b\n")
    assert not report.passed and "syntax error" in report.reason


def test_missing_function_is_reported():
    report = _tests("def plus(a, b):\n    return a + b\n")
    assert not report.passed and "NameError" in report.reason


def test_exit_before_the_tests_does_not_pass():
    for code in ("import sys\nsys.exit(0)\n", "raise SystemExit\n", "import os\nos._exit(0)\n",
                 "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"):
        report = _tests(code + "def add(a, b):\n    return a + b\n")
        assert not report.passed, code
        assert "before the tests" in report.reason or "killed" in report.reason, report.reason


def test_exit_inside_a_test_does_not_pass():
    for body in ("import sys; sys.exit(0)", "import os; os._exit(0)"):
        report = _tests(f"def add(a, b):\n    {body}\n")
        assert not report.passed and report.tests_passed == 0, body


def test_printing_fake_results_does_not_pass():
    code = "print('all tests passed (3/3)')\nprint('END 3 3 00')\ndef add(a, b):\n    return 0\n"
    report = _tests(code)
    assert not report.passed
    assert "all tests passed" in report.result.stdout  # its output is kept, but does not count


def test_tampering_with_builtins_and_assertion_error_does_not_pass():
    code = (
        "import builtins\n"
        "builtins.AssertionError = Exception\n"
        "class AssertionError(Exception):\n"
        "    pass\n"
        "builtins.abs = lambda x: 0\n"
        "builtins.bool = lambda x: True\n"
        "def add(a, b):\n"
        "    return 0\n"
    )
    assert not _tests(code).passed
    float_tests = ["assert abs(add(0.1, 0.2) - 0.3) < 1e-9"]
    assert not _tests(code, float_tests).passed
    assert _tests("def add(a, b):\n    return a + b\n", float_tests).passed


@pytest.mark.parametrize(
    "code",
    [
        "class E:\n    def __eq__(self, other):\n        return True\ndef add(a, b):\n    return E()\n",
        "class E(int):\n    def __eq__(self, other):\n        return True\n    __hash__ = int.__hash__\n"
        "def add(a, b):\n    return E(0)\n",
        "class E:\n    __eq__ = lambda self, other: True\ndef add(a, b):\n    return [E()]\n",
        "class E:\n    def __bool__(self):\n        return True\n    __eq__ = lambda s, o: True\n"
        "def add(a, b):\n    return {'k': E()}\n",
    ],
    ids=["always-equal", "int-subclass", "inside-list", "inside-dict"],
)
def test_always_equal_objects_do_not_pass(code):
    report = _tests(code)
    assert not report.passed
    assert "defined by the solution" in report.reason


def test_truthiness_hack_does_not_pass():
    code = "class T:\n    def __bool__(self):\n        return True\ndef is_even(n):\n    return T()\n"
    report = _tests(code, ["assert is_even(2)", "assert not is_even(3)"])
    assert not report.passed and "defined by the solution" in report.reason


def test_stdlib_values_compare_normally():
    code = (
        "from collections import Counter, OrderedDict, namedtuple\n"
        "from fractions import Fraction\n"
        "P = namedtuple('P', 'x y')\n"
        "def f(s):\n"
        "    return Counter(s), OrderedDict(a=1), P(1, 2), Fraction(1, 2)\n"
    )
    tests = [
        "assert f('aab')[0] == {'a': 2, 'b': 1}",
        "assert f('')[1] == {'a': 1}",
        "assert f('')[2] == (1, 2)",
        "assert f('')[3] == 0.5",
    ]
    report = _tests(code, tests)
    assert report.passed, report.reason


def test_candidate_printing_and_reading_stdin_is_harmless():
    code = "import sys\nprint('noise')\nprint(repr(sys.stdin.read()))\ndef add(a, b):\n    return a + b\n"
    report = _tests(code)
    assert report.passed, report.reason
    assert report.result.stdout == "noise\n''\n"


def test_infinite_loop_in_a_test_names_the_test():
    report = _tests("def add(a, b):\n    while True:\n        pass\n")
    assert not report.passed
    assert report.result.status == "timeout"
    assert "timed out in test 1/3 (assert add(1, 2) == 3)" in report.reason


def test_hostile_solutions_score_zero(no_strays):
    hostile = {
        "fork bomb": "import os\nwhile True:\n    os.fork()\n",
        "memory": "x = bytearray(10**10)\n",
        "output": "while True:\n    print('x' * 10000)\n",
        "network": "import socket\nsocket.create_connection(('127.0.0.1', 80), timeout=1)\n",
    }
    for name, code in hostile.items():
        report = _tests(code + "def add(a, b):\n    return a + b\n")
        assert not report.passed and report.score == 0.0, name
        assert report.reason, name


def test_humaneval_check_function():
    test = (
        "METADATA = {}\n\n"
        "def check(candidate):\n"
        "    assert candidate([1, 2, 3]) == 6\n"
        "    assert abs(candidate([0.5]) - 0.5) < 1e-6\n"
        "    assert candidate([]) == 0\n"
    )
    prompt = 'def total(xs):\n    """Sum of xs."""\n'
    good = run_tests(prompt + "    return sum(xs)\n", test, FAST, entry_point="total")
    assert good.passed and good.tests_total == 1, good.reason
    bad = run_tests(prompt + "    return len(xs)\n", test, FAST, entry_point="total")
    assert not bad.passed
    assert "assert candidate([1, 2, 3]) == 6 -- got 3, expected 6" in bad.reason
    missing = run_tests("def other(xs):\n    return 0\n", test, FAST, entry_point="total")
    assert not missing.passed and "does not define total" in missing.reason


def test_test_module_with_top_level_asserts_and_setup():
    tests = "import math\nEXPECTED = 3\nassert add(1, 2) == EXPECTED\nassert math.isclose(add(0.1, 0.2), 0.3)\n"
    report = run_tests("def add(a, b):\n    return a + b\n", tests, FAST)
    assert report.passed and report.tests_total == 2, report.reason


def test_setup_code_runs_before_the_tests():
    report = run_tests("def add(a, b):\n    return a + b\n", ["assert add(X, 1) == 2"], FAST, setup_code="X = 1")
    assert report.passed, report.reason


def test_bad_tests_are_our_error_not_the_model():
    with pytest.raises(ValueError):
        run_tests("x = 1", ["assert (("], FAST)
    with pytest.raises(ValueError):
        run_tests("x = 1", [], FAST)
    with pytest.raises(ValueError):
        run_tests("x = 1", "def check(c): pass", FAST, entry_point="not a name")


def test_a_checkout_under_tmp_is_not_mounted_over(monkeypatch: pytest.MonkeyPatch) -> None:
    """A project (or venv) under /tmp is hidden by the private /tmp itself; planning a tmpfs over it
    used to fail the namespace setup and drop to the weak mode (a regression seen in a /tmp clone)."""
    from selfimprove.sandbox import plan as sandbox

    monkeypatch.setattr(sandbox, "_project_root", lambda: "/tmp/some-checkout")
    plan = sandbox._make_plan()
    assert not any(sandbox._under(h, "/tmp") for h in plan.hide)
