"""Function calling in the APIGen format: pick the right tools and arguments for a request.

- `judge.py`: parsing and judging a model's calls (the matching rules are in its docstring);
- `tools.py`: the seeded generator's tool library and the prompts that show tools;
- `apigen.py`: loading local APIGen files;
- `task.py`: the `function_call` task (generator or file).
"""

from selfimprove.tasks.function_call.apigen import ApigenItem, load_apigen, parse_apigen_item
from selfimprove.tasks.function_call.judge import (
    MAX_ANSWER_CHARS,
    Call,
    calls_key,
    canonical,
    coerce_calls,
    format_calls,
    judge_calls,
    parse_json_answer,
    problem_key,
    tool_names,
)
from selfimprove.tasks.function_call.task import FunctionCallConfig, FunctionCallTask
from selfimprove.tasks.function_call.tools import TOOL_LIBRARY, TOOLS_BY_NAME, Tool, compact_prompt, full_prompt

__all__ = [
    "MAX_ANSWER_CHARS",
    "TOOLS_BY_NAME",
    "TOOL_LIBRARY",
    "ApigenItem",
    "Call",
    "FunctionCallConfig",
    "FunctionCallTask",
    "Tool",
    "calls_key",
    "canonical",
    "coerce_calls",
    "compact_prompt",
    "format_calls",
    "full_prompt",
    "judge_calls",
    "load_apigen",
    "parse_json_answer",
    "parse_apigen_item",
    "problem_key",
    "tool_names",
]
