"""The environment API: a problem becomes a conversation.

An `Environment` opens a `Conversation` for a problem (its first messages), answers each model turn
with a `Reply` (observation messages such as a tool's result, an instruction or feedback; an optional
reward for that turn; whether the conversation is over) and finally judges it (`judge`: a `Verdict` on
the final state, by default the task's verifier on the last answer). The rollout
(`rollout/conversation.py`) drives every live conversation of a batch together, keeps the model's
tokens as sampled and turns each conversation into one `Episode`; the turn and token limits are the
recipe's (`env.max_turns`, `env.max_tokens`), enforced there, so an environment only decides what
happens next.

Environments hold no per-conversation state on `self`: what a conversation needs (a simulated world,
counters) lives in `Conversation.data`, so one environment object serves a whole batch. Each
conversation has its own `random.Random`, seeded from the run's seed, the problem and the sample, so a
noisy environment replays identically on resume.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence, TypeVar

from pydantic import BaseModel, ConfigDict

from selfimprove.chat import Message, tool_result, user
from selfimprove.envs.tools import MAX_RESULT_CHARS, CallOutcome, Tool, run_calls
from selfimprove.registry import Registry
from selfimprove.tasks.base import Problem, Task, Verdict


class EnvConfig(BaseModel):
    """An environment's own settings (`env.params` in a recipe); subclasses add fields (a docstring under
    a field is its description in `selfimprove envs`)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)


@dataclass
class Turn:
    """What the model said in one turn: its message (content and parsed tool calls), and what was wrong
    with a call it tried to write (`error`), if anything."""

    message: Message
    error: str | None = None
    finish_reason: str = "eos"

    @property
    def text(self) -> str:
        return str(self.message.get("content", ""))

    @property
    def calls(self) -> list[tuple[str, dict[str, Any]]]:
        from selfimprove.chat import calls_of

        return calls_of(self.message)


@dataclass
class Reply:
    """The environment's answer to a turn. `observation` is appended to the conversation (and is not
    trained); `reward` is this turn's (None: none); `done` ends the conversation."""

    observation: list[Message] = field(default_factory=list)
    reward: float | None = None
    done: bool = False


@dataclass
class Conversation:
    """One conversation's state: its problem, the messages so far, its own random stream, the
    environment's per-conversation data, and counters the rollout reports."""

    problem: Problem
    messages: list[Message]
    rng: random.Random
    # The environment's per-conversation data; `demonstration` is set when a worked script plays it (SFT).
    data: dict[str, Any] = field(default_factory=dict)
    tool_calls: int = 0
    tool_errors: int = 0
    turns: int = 0
    end: str = ""  # why it ended: done, turns, tokens, length, context

    def assistant_messages(self) -> list[Message]:
        return [m for m in self.messages if m.get("role") == "assistant"]


def conversation_rng(seed: int, problem_id: str, sample: int) -> random.Random:
    """A stream of its own for one conversation, the same on every run and resume."""
    digest = hashlib.sha256(f"{seed}\0{problem_id}\0{sample}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


class Environment:
    """Base class: a one-turn environment judged by the task (subclasses override what they change).

    `tools` are the tools the model may call (their schemas go to chat templates); `Config` validates
    `env.params`. Override `respond` for what follows a turn, `judge` for how the end is scored,
    `demonstration` to give SFT a worked conversation.
    """

    name: ClassVar[str] = ""
    Config: ClassVar[type[EnvConfig]] = EnvConfig

    def __init__(self, task: Task, config: EnvConfig | None = None, tools: Sequence[Tool] = (), seed: int = 0) -> None:
        self.task = task
        self.config = config if config is not None else self.Config()
        self.tools = list(tools)
        self.seed = seed

    # ---------------------------------------------------------------- the conversation
    def first_messages(self, problem: Problem) -> list[Message]:
        """What the model sees first: the problem's prompt as one user message."""
        return [user(problem.prompt)]

    def start(self, problem: Problem, sample: int = 0) -> Conversation:
        """Open a conversation for one sample of a problem (then `reset` may set it up)."""
        conversation = Conversation(problem, list(self.first_messages(problem)), conversation_rng(self.seed, problem.id, sample))
        self.reset(conversation)
        return conversation

    def tool_schemas(self, conversation: Conversation) -> list[dict[str, Any]]:
        """The JSON schemas of the tools this conversation may call (a chat template shows them)."""
        return [dict(t.schema) for t in self.tools]

    def reset(self, conversation: Conversation) -> None:
        """Set up a new conversation's `data` (nothing by default)."""

    def respond(self, conversation: Conversation, turn: Turn) -> Reply:
        """What follows a model turn; by default the conversation ends after the first."""
        return Reply(done=True)

    def respond_all(self, conversations: Sequence[Conversation], turns: Sequence[Turn]) -> list[Reply]:
        """Every live conversation's reply at once (the rollout's batched step); override to run tools
        concurrently."""
        return [self.respond(c, t) for c, t in zip(conversations, turns)]

    def answer(self, conversation: Conversation) -> str:
        """The final answer's text: the last assistant message's content."""
        said = conversation.assistant_messages()
        return str(said[-1].get("content", "")) if said else ""

    def judge(self, conversation: Conversation) -> Verdict:
        """The outcome: the task's verifier on the final answer."""
        return self.task.verify(conversation.problem, self.answer(conversation))

    def answer_key(self, conversation: Conversation) -> str | None:
        """What a vote over conversations groups by: the task's key of the final answer."""
        return self.task.answer_key(conversation.problem, self.answer(conversation))

    def demonstration(self, problem: Problem) -> list[Message] | None:
        """A worked conversation's assistant messages, for SFT (the environment answers them as in a
        rollout, so tool results are real); None when there is none. By default the task's target."""
        if not problem.demonstration:
            return None
        from selfimprove.chat import assistant

        return [assistant(self.task.target_text(problem))]

    def describe(self) -> str:
        names = ", ".join(t.name for t in self.tools) or "no tools"
        return f"{self.name or type(self).__name__} on {self.task.name} ({names})"


E = TypeVar("E", bound=type[Environment])

ENVS: Registry[type[Environment]] = Registry("environment", load="selfimprove.envs.builtin")


def register_env(name: str) -> Callable[[E], E]:
    """Class decorator: register an environment under `name` (and set its `name`)."""

    def wrap(cls: E) -> E:
        cls.name = name
        return ENVS.register(name)(cls)

    return wrap


def tools_by_name(tools: Sequence[Tool]) -> Mapping[str, Tool]:
    return {t.name: t for t in tools}


def respond_with_calls(conversations: Sequence[Conversation], turns: Sequence[Turn],
                       tools_for: Callable[[Conversation], Callable[[str], Tool | None]], *,
                       observe: Callable[[Conversation, str, CallOutcome], str] | None = None,
                       limit: int = MAX_RESULT_CHARS) -> list[Reply]:
    """The reply of an environment whose model calls tools: an error observation for a turn whose calls
    did not parse, the end for a turn without calls (its answer), else each call's result as a tool
    message. Every conversation's calls run together (`run_calls`); `tools_for(conversation)` finds a
    tool by name (None: unknown), and `observe` may change a result's text before the model sees it.
    Calls and failed calls are counted on the conversation."""
    replies: list[Reply | None] = []
    pending: list[int] = []
    scheduled: list[tuple[Tool | None, str, Any]] = []
    for i, (conversation, turn) in enumerate(zip(conversations, turns)):
        if turn.error is not None:
            conversation.tool_errors += 1
            replies.append(Reply([tool_result("", f"error: {turn.error}")]))
        elif not turn.calls:
            replies.append(Reply(done=True))
        else:
            replies.append(None)
            lookup = tools_for(conversation)
            for name, arguments in turn.calls:
                pending.append(i)
                scheduled.append((lookup(name), name, arguments))
    observations: dict[int, list[Message]] = {}
    for i, (_, name, _), outcome in zip(pending, scheduled, run_calls(scheduled, limit=limit)):
        conversation = conversations[i]
        conversation.tool_calls += 1
        conversation.tool_errors += not outcome.ok
        text = observe(conversation, name, outcome) if observe is not None else outcome.text
        observations.setdefault(i, []).append(tool_result(name, text))
    return [r if r is not None else Reply(observations[i]) for i, r in enumerate(replies)]
