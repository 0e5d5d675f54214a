"""The built-in tools: `calc` (our safe arithmetic parser, never `eval`) and `python` (a program run in
the sandbox). A recipe names them in `env.tools` beside any `package.module:function` of the user's."""

from __future__ import annotations

from typing import Callable

from selfimprove.sandbox import Limits, run_python
from selfimprove.tasks.answers import format_number
from selfimprove.tasks.arith import ArithError, evaluate_text

PYTHON_LIMITS = Limits(wall_seconds=5.0, memory_mb=256, output_bytes=64 * 1024)


def calc(expression: str) -> str:
    """Evaluate integer arithmetic exactly: + - * /, parentheses and spaces (no other characters).

    Args:
        expression: The arithmetic to evaluate, e.g. (12+3)*4.
    """
    try:
        value = evaluate_text(expression.strip())
    except ArithError as err:
        raise ValueError(f"not arithmetic: {err}") from None
    return str(value.numerator) if value.denominator == 1 else format_number(float(value))


def python(code: str) -> str:
    """Run a Python program (standard library only, no network, 5 seconds) and return what it prints.

    Args:
        code: The program; print the values you need.
    """
    result = run_python(code, limits=PYTHON_LIMITS)
    if result.ok:
        return result.stdout.strip()
    detail = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else result.reason
    raise RuntimeError(detail if result.status == "error" else f"{result.status}: {detail}")


BUILTIN_TOOLS: dict[str, Callable[..., str]] = {"calc": calc, "python": python}
# The python tool's own limit is the sandbox's; the thread waits a little longer so the sandbox's
# classified result (timeout, memory) comes back rather than a bare "timed out".
TOOL_TIMEOUTS: dict[str, float] = {"calc": 2.0, "python": PYTHON_LIMITS.wall_seconds + 5.0}
