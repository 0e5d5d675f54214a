"""Environments: a problem becomes a conversation with observations between the model's turns (tool
results, instructions, feedback). `base.py` is the API, `tools.py` turns typed functions into tools,
`tool_env.py` (`tools`) and `function_env.py` (`function_call`) are the shipped environments,
`plugins.py` finds environments and tools by name or import path."""

from selfimprove.envs.base import ENVS, Conversation, EnvConfig, Environment, Reply, Turn, register_env
from selfimprove.envs.tools import Tool

__all__ = ["ENVS", "Conversation", "EnvConfig", "Environment", "Reply", "Tool", "Turn", "register_env"]
