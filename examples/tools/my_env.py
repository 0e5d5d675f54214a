"""An environment of your own (recipes/tools-sums-*.yaml): the `tools` environment where every call
costs a little reward, with worked conversations for SFT."""

from pydantic import Field

from selfimprove.chat import assistant, tool_call
from selfimprove.envs.tool_env import ToolEnv, ToolEnvConfig


class FrugalConfig(ToolEnvConfig):
    cost: float = Field(0.05, ge=0.0)  # reward taken off per tool call


class FrugalTools(ToolEnv):
    """Call tools, then answer (judged by the task); each call costs `cost`."""

    Config = FrugalConfig

    def respond_all(self, conversations, turns):
        replies = super().respond_all(conversations, turns)
        for turn, reply in zip(turns, replies):
            reply.reward = -self.config.cost * len(turn.calls)
        return replies

    def demonstration(self, problem):
        """`50+98=`: call add(50, 98), then answer with its result."""
        a, b = problem.prompt.rstrip("=").split("+")
        return [assistant("", [tool_call("add", {"a": int(a), "b": int(b)})]), assistant(problem.answer)]
