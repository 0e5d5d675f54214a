"""Tools: typed functions with docstrings become schemas; every way a call goes wrong is an error result."""

from __future__ import annotations

import threading

import pytest

from selfimprove.envs.builtin_tools import calc, python
from selfimprove.envs.plugins import make_tools
from selfimprove.envs.tools import Tool, ToolError, cast_value, result_text, run_calls
from selfimprove.errors import ConfigError


def convert(amount: float, rate: float = 1.0) -> float:
    """Convert money.

    Args:
        amount: How much.
        rate: The exchange rate.
    """
    return amount * rate


def boom(x: int) -> int:
    """Always fails.

    Args:
        x: Anything.
    """
    raise KeyError("no such record")


RELEASE = threading.Event()  # a "hung" call waits for this (or its `seconds`); tests set it when done
WOKE: list[float] = []  # the `seconds` of every call that returned


def slow(seconds: float) -> str:
    """Sleeps.

    Args:
        seconds: How long.
    """
    RELEASE.wait(seconds)
    WOKE.append(seconds)
    return "woke"


@pytest.fixture
def hung_calls_released():  # type: ignore[no-untyped-def]
    RELEASE.clear()
    WOKE.clear()
    yield
    RELEASE.set()  # let the abandoned threads end


def undocumented(x: int) -> int:
    """No argument section."""
    return x


def test_schema_from_a_typed_function() -> None:
    tool = Tool.from_function(convert)
    assert tool.name == "convert"
    assert tool.schema["function"]["description"] == "Convert money."
    assert tool.parameters == {"amount": {"type": "number", "description": "How much."},
                               "rate": {"type": "number", "description": "The exchange rate."}}
    assert tool.required == ["amount"]


def test_a_function_without_argument_docs_is_refused_by_name() -> None:
    with pytest.raises(ToolError, match="undocumented.*Args:"):
        Tool.from_function(undocumented)


def test_arguments_are_checked_and_cast_like_chat_parsers_do() -> None:
    tool = Tool.from_function(convert)
    assert tool.check_arguments({"amount": "3.5"}) == ({"amount": 3.5}, None)
    assert tool.check_arguments({"amount": 2, "rate": 3}) == ({"amount": 2, "rate": 3}, None)
    assert tool.check_arguments({"rate": 2})[1] == "convert needs argument 'amount'"
    assert "has no argument 'currency'" in tool.check_arguments({"amount": 1, "currency": "EUR"})[1]
    assert tool.check_arguments(["amount"])[1] == "the arguments of convert must be an object"
    assert cast_value("7", {"type": "integer"}) == (7, None)
    assert cast_value("seven", {"type": "integer"})[1] == "expected integer, got str"
    assert cast_value(True, {"type": "integer"})[1] is not None  # a bool is not a number here
    assert cast_value("true", {"type": "boolean"}) == (True, None)


def test_every_failure_is_an_error_result_and_calls_run_concurrently(hung_calls_released: None) -> None:
    tools = {t.name: t for t in [Tool.from_function(convert), Tool.from_function(boom),
                                 Tool.from_function(slow, timeout=0.3)]}
    out = run_calls([
        (tools["convert"], "convert", {"amount": 2, "rate": 3}),
        (None, "teleport", {}),
        (tools["boom"], "boom", {"x": 1}),
        (tools["slow"], "slow", {"seconds": 5}),
        (tools["slow"], "slow", {"seconds": 0.01}),
        (tools["convert"], "convert", {"amount": "lots"}),
    ])
    assert 5 not in WOKE  # the hung call was abandoned at its timeout: run_calls returned before it did
    assert [o.text for o in out] == [
        "6", "error: unknown tool 'teleport'", "error: KeyError: 'no such record'", "error: slow timed out after 0.3s",
        "woke", "error: argument 'amount' of convert: expected number, got str"]
    assert [o.ok for o in out] == [True, False, False, False, True, False]
    assert tools["slow"].stats == {"timeouts": 1} and tools["boom"].stats == {"errors": 1}


def test_results_become_short_text() -> None:
    assert result_text({"a": [1, 2]}) == '{"a": [1, 2]}'
    assert result_text(object()).startswith("<object")
    assert result_text("x" * 50, limit=10) == "x" * 10 + "...[cut]"


def test_the_calculator_is_our_parser_and_never_eval() -> None:
    assert calc("(12+3)*4") == "60"
    assert calc(" 7 / 2 ") == "3.5"
    for bad in ("__import__('os')", "2**10", "1e3", "0x10"):
        with pytest.raises(ValueError, match="not arithmetic"):
            calc(bad)


def test_the_python_tool_runs_in_the_sandbox() -> None:
    assert python("print(sum(range(10)))") == "45"
    with pytest.raises(RuntimeError, match="^ZeroDivisionError: division by zero"):
        python("print(1/0)")


def test_tools_by_name_and_import_path() -> None:
    tools = make_tools(["calc", "python", "test_tools:convert"])
    assert [t.name for t in tools] == ["calc", "python", "convert"]
    assert tools[0].timeout == 2.0 and tools[1].timeout == 10.0
    with pytest.raises(ConfigError, match=r"env.tools\[0\]: unknown tool 'abacus'"):
        make_tools(["abacus"])
    with pytest.raises(ConfigError, match=r"env.tools\[0\]: tool undocumented"):
        make_tools(["test_tools:undocumented"])
    with pytest.raises(ConfigError, match="two tools are named 'calc'"):
        make_tools(["calc", "calc"])


def test_odd_integers_are_a_bad_argument_not_a_crash() -> None:
    for odd in ("--5", "+-5", "²", "5.5", ""):
        value, error = cast_value(odd, {"type": "integer"})
        assert value is None and error == "expected integer, got str"
    assert cast_value(" -12 ", {"type": "integer"}) == (-12, None)


def test_hung_calls_never_starve_the_ones_behind_them(monkeypatch: pytest.MonkeyPatch, hung_calls_released: None) -> None:
    from selfimprove.envs import tools as module

    monkeypatch.setattr(module, "_SLOTS", module._Slots(2))  # two slots, both taken by calls that hang
    hung = Tool.from_function(slow, timeout=0.2)
    quick = Tool.from_function(convert)
    out = run_calls([(quick, "convert", {"amount": 1}), (hung, "slow", {"seconds": 30}), (hung, "slow", {"seconds": 30}),
                     (quick, "convert", {"amount": 2}), (quick, "convert", {"amount": 3})])
    assert [o.text for o in out] == ["1.0", "error: slow timed out after 0.2s", "error: slow timed out after 0.2s",
                                     "2.0", "3.0"]
    assert WOKE == []  # the quick calls behind the hung ones ran before either hung call returned


def test_the_caller_sleeps_until_a_call_finishes_instead_of_polling(monkeypatch: pytest.MonkeyPatch) -> None:
    """run_calls waits on its calls' events: while one call runs for 0.3 s it wakes a handful of times, not
    once every few milliseconds (counted by its scans, through the clock it reads once per scan)."""
    import time as real_time

    from selfimprove.envs import tools as module

    scans = []

    class Clock:
        def __getattr__(self, name: str):
            return getattr(real_time, name)

        def monotonic(self) -> float:
            if threading.current_thread() is threading.main_thread():
                scans.append(1)
            return real_time.monotonic()

    gate = threading.Event()
    open_at_start = []

    def wait_for_gate() -> str:
        """Wait until the test opens the gate."""
        open_at_start.append(gate.is_set())
        gate.wait(5)
        return "open"

    tool = Tool.from_function(wait_for_gate, timeout=5)
    monkeypatch.setattr(module, "time", Clock())
    threading.Timer(0.3, gate.set).start()
    out = run_calls([(tool, "wait_for_gate", {})])[0]
    assert out.text == "open" and open_at_start == [False]  # the call did run while the caller waited
    assert 0 < len(scans) < 10, len(scans)
