"""Environments and tools by name, from the library or the user's own code (no library edit).

`env.name` is a registered environment (`tools`, `function_call`, ...), an import path
`package.module:Class` (a subclass of `Environment`), or a name in the `selfimprove.envs` entry-point
group of an installed package. `env.tools` entries are built-in tools (`calc`, `python`) or import
paths `package.module:function` of typed functions with docstrings.
"""

from __future__ import annotations

from typing import Any, Sequence

from selfimprove.envs.base import ENVS, Environment
from selfimprove.envs.builtin_tools import BUILTIN_TOOLS, TOOL_TIMEOUTS
from selfimprove.envs.tools import Tool, ToolError
from selfimprove.errors import ConfigError
from selfimprove.tasks.base import Task
from selfimprove.tasks.plugins import import_object, plugin_names, resolve_class

ENTRY_POINTS = "selfimprove.envs"

__all__ = ["ENTRY_POINTS", "env_names", "make_env", "make_tools", "resolve_env"]


def env_names() -> list[str]:
    """Registered environments and those installed packages declare."""
    return sorted(set(ENVS.names()) | set(plugin_names(ENTRY_POINTS)))


def resolve_env(name: str, field: str = "env.name") -> type[Environment]:
    """The environment class a recipe names (registered name, import path or entry point)."""
    return resolve_class(name, ENVS, ENTRY_POINTS, Environment, "environment", field)


def make_tools(names: Sequence[str], timeout: float | None = None, field: str = "env.tools") -> list[Tool]:
    """Tools by name: built-in (`calc`, `python`) or `package.module:function`; a bad function is one line
    naming it and what its docstring or type hints lack."""
    tools: list[Tool] = []
    for i, name in enumerate(names):
        if name in BUILTIN_TOOLS:
            fn: Any = BUILTIN_TOOLS[name]
            limit = timeout if timeout is not None else TOOL_TIMEOUTS[name]
        elif ":" in name:
            fn = import_object(name, f"{field}[{i}]")
            limit = timeout if timeout is not None else 10.0
        else:
            raise ConfigError(f"{field}[{i}]: unknown tool {name!r} (built in: {', '.join(BUILTIN_TOOLS)}; or give "
                              "package.module:function)")
        try:
            tools.append(Tool.from_function(fn, timeout=limit))
        except ToolError as err:
            raise ConfigError(f"{field}[{i}]: {err}") from None
    seen: set[str] = set()
    for tool in tools:
        if tool.name in seen:
            raise ConfigError(f"{field}: two tools are named {tool.name!r}")
        seen.add(tool.name)
    return tools


def make_env(name: str, task: Task, *, tools: Sequence[str] = (), params: dict[str, Any] | None = None, seed: int = 0,
             tool_timeout: float | None = None) -> Environment:
    """Build an environment on a task from plain settings (its `Config` validates `params`)."""
    cls = resolve_env(name)
    config = cls.Config.model_validate(dict(params or {}))
    try:
        return cls(task, config, make_tools(tools, tool_timeout), seed=seed)
    except ValueError as err:
        raise ConfigError(f"env: {err}") from None
