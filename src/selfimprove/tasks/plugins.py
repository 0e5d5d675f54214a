"""Tasks from outside the library, by name: no wrapper script, no library edit.

A recipe's `task.name` is one of
- a registered name (`countdown`, `gsm8k`, `dataset`, ...: `selfimprove tasks` lists them);
- an import path `package.module:ClassName`, importable from the working directory or PYTHONPATH;
- a name an installed package declares in the `selfimprove.tasks` entry-point group, e.g. in its
  pyproject.toml: `[project.entry-points."selfimprove.tasks"] my_task = "my_pkg.tasks:MyTask"`.

The class must subclass `Task`; its `Config` (a `TaskConfig`) validates `task.params`. A class found
by path or entry point without a registered `name` is named by the recipe's string.
"""

from __future__ import annotations

import importlib
import os
import sys
from importlib.metadata import entry_points
from typing import Any, Mapping

from selfimprove.errors import ConfigError
from selfimprove.registry import Registry
from selfimprove.tasks.base import TASKS, Task

ENTRY_POINTS = "selfimprove.tasks"

__all__ = ["ENTRY_POINTS", "import_object", "make_task", "plugin_names", "resolve_class", "resolve_task"]


def import_object(path: str, field: str) -> Any:
    """`package.module:attr` -> the object, importing from the working directory too (a console
    script does not have it on sys.path). Errors name the recipe field."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"{field}: {path!r} is not an import path (write package.module:Name)")
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{field}: cannot import {module_name!r} ({err}); is it in the working directory or on PYTHONPATH?") from None
    except Exception as err:  # the user's module failed while importing
        raise ConfigError(f"{field}: importing {module_name!r} failed: {type(err).__name__}: {err}") from None
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"{field}: {module_name!r} has no {attr!r}")
        obj = getattr(obj, part)
    return obj


def _entry_point(name: str, group: str, field: str) -> Any | None:
    for ep in entry_points(group=group):
        if ep.name == name:
            try:
                return ep.load()
            except Exception as err:
                raise ConfigError(f"{field}: the entry point {name!r} ({ep.value}) failed to load: {err}") from None
    return None


def plugin_names(group: str = ENTRY_POINTS) -> list[str]:
    """Names declared by installed packages' entry points (tasks, or another group's)."""
    return sorted({ep.name for ep in entry_points(group=group)})


def resolve_class(name: str, registry: Registry[Any], group: str, base: type, kind: str, field: str) -> Any:
    """The class a recipe names: registered, `package.module:ClassName`, or an entry point of `group`;
    it must subclass `base` (tasks, environments). A class found by path or entry point without a
    registered `name` is named by the recipe's string."""
    if name in registry:
        return registry.get(name)
    if ":" in name:
        cls = import_object(name, field)
    else:
        cls = _entry_point(name, group, field)
        if cls is None:
            known = ", ".join(sorted(set(registry.names()) | set(plugin_names(group))))
            raise ConfigError(f"{field}: unknown {kind} {name!r} (known: {known}; or give package.module:ClassName)")
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{field}: {name!r} is not {'an' if base.__name__[0] in 'AEIOU' else 'a'} {base.__name__} "
                          f"subclass (got {type(cls).__name__})")
    if not getattr(cls, "name", None):
        cls.name = name
    return cls


def resolve_task(name: str, field: str = "task.name") -> type[Task]:
    """The task class a recipe names (registered name, import path or entry point)."""
    import selfimprove.tasks  # noqa: F401  (registers the built-in tasks)

    return resolve_class(name, TASKS, ENTRY_POINTS, Task, "task", field)


def make_task(name: str, params: Mapping[str, Any] | None = None) -> Task:
    """Build a task by name (registered, import path or entry point) from plain settings, validated by
    the task's own `Config`."""
    cls = resolve_task(name)
    return cls(cls.Config.model_validate(dict(params or {})))
