"""`run_tests`: a candidate solution and its assert-based tests (MBPP `test_list`, or a HumanEval
`check(candidate)` module) in ONE sandbox run, passed only if every test ran and passed, and if not,
why. The harness (`harness.py`) runs inside the sandbox; here the tests are split into counted
chunks, their asserts rewritten, and the harness's nonce-tagged report read back."""

from __future__ import annotations

import ast
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from selfimprove.sandbox.run import run_python
from selfimprove.sandbox.types import _MAX_REASON_CHARS, Limits, SandboxResult

# The harness's source: the program is this plus one call of `_si_run`.
_HARNESS = (Path(__file__).parent / "harness.py").read_text()


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
