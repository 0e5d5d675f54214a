"""Problems with verifiers. Importing this package registers the built-in tasks."""

from selfimprove.tasks.base import TASKS, Problem, Task, TaskConfig, Verdict, make_task
from selfimprove.tasks import countdown as _countdown  # noqa: F401  (registers "countdown")

__all__ = ["TASKS", "Problem", "Task", "TaskConfig", "Verdict", "make_task"]
