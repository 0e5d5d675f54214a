"""Problems with verifiers. Importing this package registers the built-in tasks."""

from selfimprove.tasks.base import TASKS, Problem, Task, TaskConfig, Verdict
from selfimprove.tasks.plugins import make_task, resolve_task

# Each import registers its tasks by name (see `selfimprove tasks`).
from selfimprove.tasks import countdown as _countdown  # noqa: F401,E402
from selfimprove.tasks import chain as _chain  # noqa: F401,E402
from selfimprove.tasks import gsm8k as _gsm8k  # noqa: F401,E402
from selfimprove.tasks import rgym as _rgym  # noqa: F401,E402
from selfimprove.tasks import mathqa as _mathqa  # noqa: F401,E402
from selfimprove.tasks import function_call as _function_call  # noqa: F401,E402
from selfimprove.tasks import code as _code  # noqa: F401,E402
from selfimprove.tasks import dataset as _dataset  # noqa: F401,E402

__all__ = ["TASKS", "Problem", "Task", "TaskConfig", "Verdict", "make_task", "resolve_task"]
