"""`tools`: the model may call tools until it answers; the answer is judged by the task.

After each model turn: a malformed call gets an error result, each call runs (concurrently across the
batch, `envs/tools.run_calls`) and its result comes back as a tool message; a turn without a call is
the final answer, judged by the task's verifier. `faults` makes a tool unreliable on purpose: that
share of its numeric results is replaced by a wrong number, drawn from the conversation's own random
stream (a robustness study: what does a policy learn from a tool that lies?); demonstrations are played
with the honest tool, since their scripts assume its results.
"""

from __future__ import annotations

import re
import random
from typing import Any, Sequence

from pydantic import Field, field_validator

from selfimprove.chat import Message
from selfimprove.envs.base import (Conversation, EnvConfig, Environment, Reply, Turn, register_env, respond_with_calls,
                                   tools_by_name)
from selfimprove.envs.demonstrations import tool_demonstration
from selfimprove.envs.tools import CallOutcome, Tool
from selfimprove.tasks.base import Problem, Verdict

_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


class ToolEnvConfig(EnvConfig):
    """Settings of the `tools` environment."""

    faults: dict[str, float] = Field(default_factory=dict)
    """Tool name -> share of its calls whose numeric result is replaced by a wrong number (0..1)."""
    max_result_chars: int = Field(300, ge=1)
    """A tool result longer than this is cut (observations stay short)."""

    @field_validator("faults")
    @classmethod
    def _rates(cls, faults: dict[str, float]) -> dict[str, float]:
        for name, rate in faults.items():
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"faults.{name} must be a share in [0, 1], got {rate}")
        return faults


def wrong_number(text: str, rng: random.Random) -> str:
    """`text` with its last number moved by a nonzero amount (about 1 to 20 % of it, at least 1)."""
    matches = list(_NUMBER.finditer(text))
    if not matches:
        return text
    m = matches[-1]
    value = float(m[0])
    step = max(1, round(abs(value) * rng.uniform(0.01, 0.2)))
    shifted = value + step * rng.choice((-1, 1))
    shown = str(int(shifted)) if "." not in m[0] else f"{shifted:.{len(m[0].split('.')[1])}f}"
    return text[: m.start()] + shown + text[m.end() :]


@register_env("tools")
class ToolEnv(Environment):
    """Call tools, then answer: the answer (the turn without a call) is judged by the task."""

    Config = ToolEnvConfig
    config: ToolEnvConfig

    def __init__(self, task: Any, config: ToolEnvConfig | None = None, tools: Sequence[Tool] = (), seed: int = 0) -> None:
        super().__init__(task, config, tools, seed)
        unknown = sorted(set(self.config.faults) - {t.name for t in self.tools})
        if unknown:
            raise ValueError(f"env.params.faults names {unknown[0]!r}, which is not one of the tools "
                             f"({', '.join(t.name for t in self.tools) or 'none'})")
        self._by_name = tools_by_name(self.tools)

    def respond_all(self, conversations: Sequence[Conversation], turns: Sequence[Turn]) -> list[Reply]:
        return respond_with_calls(conversations, turns, lambda _: self._by_name.get, observe=self._observe,
                                  limit=self.config.max_result_chars)

    def _observe(self, conversation: Conversation, name: str, outcome: CallOutcome) -> str:
        """A tool's result as the model sees it: with `faults`, a wrong number now and then (never while
        demonstrations are written)."""
        if outcome.ok and not conversation.data.get("demonstration") and conversation.rng.random() < self.config.faults.get(name, 0.0):
            conversation.data["faults"] = conversation.data.get("faults", 0) + 1
            return wrong_number(outcome.text, conversation.rng)
        return outcome.text

    def respond(self, conversation: Conversation, turn: Turn) -> Reply:
        return self.respond_all([conversation], [turn])[0]

    def judge(self, conversation: Conversation) -> Verdict:
        """The task's verdict on the final answer; a conversation a limit cut before one is wrong."""
        if conversation.end not in ("done", ""):
            return Verdict.wrong(f"no final answer (the {conversation.end} limit ended it)")
        return super().judge(conversation)

    def demonstration(self, problem: Problem) -> list[Message] | None:
        return tool_demonstration(self.task, problem, [t.name for t in self.tools])
