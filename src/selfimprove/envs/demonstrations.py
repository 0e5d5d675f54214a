"""Worked tool-using conversations for SFT, written from a problem's gold solution.

A writer returns the assistant messages of a solution that calls a tool for every computation; the
environment answers them during SFT exactly as in a rollout (the tool really runs), so a demonstration
never shows a result the tool would not give. Writers exist for the shipped pairs: chain and Countdown
with `calc`, GSM8K with `calc` or `python` (from its `<<48/2=24>>` calculator annotations).
"""

from __future__ import annotations

import re
from typing import Callable

from selfimprove.chat import Message, assistant, tool_call
from selfimprove.tasks.base import Problem, Task

Writer = Callable[[Task, Problem, str], "list[Message] | None"]

_ANNOTATION = re.compile(r"<<([^<>=\n]{1,200})=([^<>\n]{0,50})>>")


def _calls_then_answer(tool: str, expressions: list[str], answer: str) -> list[Message]:
    argument = "code" if tool == "python" else "expression"
    messages = [assistant("", [tool_call(tool, {argument: _code(tool, e)})]) for e in expressions]
    return messages + [assistant(answer)]


def _code(tool: str, expression: str) -> str:
    return f"print({expression})" if tool == "python" else expression


def chain_demo(task: Task, problem: Problem, tool: str) -> list[Message] | None:
    """One call per step (`7+5`, `12*3`, ...), then the final number."""
    value = int(problem.metadata["start"])
    expressions = []
    from selfimprove.tasks.chain import apply

    for op, operand in problem.metadata["steps"]:
        expressions.append(f"{value}{op}{operand}")
        value = apply(op, value, int(operand))
    return _calls_then_answer(tool, expressions, problem.answer)


def countdown_demo(task: Task, problem: Problem, tool: str) -> list[Message] | None:
    """One call per operation of the gold answer, in the order it computes them, then the answer in the
    task's format."""
    from selfimprove.tasks.countdown import operations_in_order

    target = task.target_text(problem)
    return _calls_then_answer(tool, operations_in_order(target, problem.metadata.get("format", "expression")), target)


def gsm8k_demo(task: Task, problem: Problem, tool: str) -> list[Message] | None:
    """Each line with a calculator annotation becomes a turn: its text up to the annotation, then the
    call (`print(48/2)` for python); the final turn is the `#### N` line."""
    solution = str(problem.metadata.get("solution", ""))
    if "####" not in solution:
        return None
    messages: list[Message] = []
    for line in solution.split("####")[0].splitlines():
        match = _ANNOTATION.search(line)
        if match is None:
            continue
        argument = "code" if tool == "python" else "expression"
        expression = match[1].strip().replace(",", "")  # thousands separators: `1,200` is not one number in code
        messages.append(assistant(line[: match.start()], [tool_call(tool, {argument: _code(tool, expression)})]))
    return messages + [assistant(f"#### {problem.answer}")]


WRITERS: dict[str, Writer] = {"chain": chain_demo, "countdown": countdown_demo, "gsm8k": gsm8k_demo}


def tool_demonstration(task: Task, problem: Problem, tools: list[str]) -> list[Message] | None:
    """The writer's conversation for the task with the first tool it supports (`calc`, else `python`),
    None when there is no writer for the task or its tools."""
    writer = WRITERS.get(task.name)
    if writer is None:
        return None
    for tool in ("calc", "python"):
        if tool in tools and not (task.name != "gsm8k" and tool == "python"):
            return writer(task, problem, tool)
    return None
