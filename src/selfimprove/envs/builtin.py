"""Importing this module registers the built-in environments (`ENVS` loads it on first lookup)."""

from selfimprove.envs import function_env as _function_env  # noqa: F401
from selfimprove.envs import tool_env as _tool_env  # noqa: F401
