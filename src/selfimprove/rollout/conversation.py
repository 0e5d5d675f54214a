"""Multi-turn episodes: the model talks with an environment, every live conversation of a batch at once.

Each round samples the next turn of all live conversations in one engine call, parses each turn into a
message (tool calls included: `policy/dialogue.py`), lets the environment answer them all at once
(`Environment.respond_all`, tools run concurrently) and appends the observations. A conversation ends
when the environment says so, after `max_turns` model turns, when its model tokens reach `max_tokens`,
or when the next turn would not fit the model's context. The environment then judges it.

One `Episode` per conversation: the first messages (`prompt`), then alternating model turns (`turn`:
trainable, the sampler's tokens and log-probs exactly as sampled, each with its reward) and
observations (`observation`: not trained, no KL, no log-probs). The episode's reward is the sum of its
turns' rewards (`sum_turns`), the judge's score on the last turn.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Sequence

from selfimprove.config.parts import conversation_tokens
from selfimprove.envs.base import Conversation, Environment, Turn
from selfimprove.policy.base import Completion, Sampler, SamplingParams, context_limit
from selfimprove.policy.dialogue import Dialogue, dialogue_for
from selfimprove.rollout.episode import Episode, Segment
from selfimprove.tasks.base import Problem, Task
from selfimprove.timing import phase

if TYPE_CHECKING:
    import torch

    from selfimprove.config import EnvSpec


@dataclass(frozen=True)
class Limits:
    """How long a conversation may go: model turns, and model tokens over all its turns."""

    max_turns: int = 4
    max_tokens: int = 256

    def __post_init__(self) -> None:
        if self.max_turns < 1 or self.max_tokens < 1:
            raise ValueError(f"max_turns and max_tokens must be >= 1, got {self.max_turns} and {self.max_tokens}")


@dataclass(frozen=True)
class EnvRun:
    """An environment and the limits its conversations run under (a recipe's `env` section, built)."""

    env: Environment
    max_turns: int = 4
    max_tokens: int | None = None  # None: max_turns x the caller's tokens per turn

    def limits(self, max_new_tokens: int) -> Limits:
        """The limits when each turn may have `max_new_tokens` tokens (training's or evaluation's)."""
        return Limits(self.max_turns, conversation_tokens(self.max_turns, self.max_tokens, max_new_tokens))


def env_run(spec: EnvSpec | None, task: Task, seed: int) -> EnvRun | None:
    """The recipe's environment on `task` (None without an `env` section)."""
    if spec is None:
        return None
    from selfimprove.envs.plugins import make_env

    env = make_env(spec.name, task, tools=spec.tools, params=spec.params, seed=seed, tool_timeout=spec.tool_timeout)
    return EnvRun(env, spec.max_turns, spec.max_tokens)


@dataclass
class _Live:
    conversation: Conversation
    tools: list[dict[str, Any]]
    group: int
    context: list[int]
    segments: list[Segment]
    index: int = 0  # position among the batch's conversations (problem-major)
    sampled: int = 0  # model tokens sampled (kept or not)
    last: Completion | None = None


def run_conversations(
    policy: Sampler,
    env: Environment,
    problems: Sequence[Problem],
    params: SamplingParams,
    limits: Limits,
    *,
    group_offset: int = 0,
    sample_offset: int = 0,
    generator: torch.Generator | None = None,
    dialogue: Dialogue | None = None,
) -> list[Episode]:
    """`params.n` conversations per problem (one group per problem), each turned into an `Episode`.

    Conversation k of the problem in group g gets the random stream of sample `g * n + k + sample_offset`
    (with the problem's id): a problem drawn again later (another group, another search round: a larger
    `sample_offset`) gets fresh streams, a rerun the same ones."""
    dialogue = dialogue or dialogue_for(policy)
    live: list[_Live] = []
    for i, problem in enumerate(problems):
        for k in range(params.n):
            group = group_offset + i
            conversation = env.start(problem, sample=group * params.n + k + sample_offset)
            tools = env.tool_schemas(conversation)
            ids = dialogue.start(conversation.messages, tools)
            live.append(_Live(conversation, tools, group, list(ids), [Segment("prompt", list(ids))], index=len(live)))
    stop = tuple(params.stop) + dialogue.stop([t for c in live for t in c.tools])
    limit = context_limit(policy)
    first = replace(params, max_new_tokens=min(params.max_new_tokens, limits.max_tokens), stop=stop)
    completions = _first_turns(policy, live, params.n, first, generator) if live else []
    done: list[_Live] = []
    while live:
        turns = []
        for c, completion in zip(live, completions):
            message, error = dialogue.parse(completion.token_ids, c.tools)
            c.conversation.messages.append(message)
            c.conversation.turns += 1
            c.sampled += completion.num_tokens
            c.last = completion
            turns.append(Turn(message, error, completion.finish_reason))
        with phase("score"):
            replies = env.respond_all([c.conversation for c in live], turns)
        going: list[_Live] = []
        for c, completion, reply in zip(live, completions, replies):
            conversation = c.conversation
            room = min(params.max_new_tokens, limits.max_tokens - c.sampled)
            end = ("done" if reply.done else "turns" if conversation.turns >= limits.max_turns
                   else "tokens" if room < 1 else "")
            observation: tuple[list[int], str] = ([], "")
            if not end:
                ended = completion.token_ids[-1] if completion.finish_reason == "eos" and completion.token_ids else None
                observation = dialogue.observation(reply.observation, ended)
                kept = dialogue.kept(completion.token_ids, True)
                if limit is not None and len(c.context) + kept + len(observation[0]) + room > limit:
                    end = "context"
            kept = dialogue.kept(completion.token_ids, not end)
            ids, logprobs = list(completion.token_ids[:kept]), list(completion.logprobs[:kept])
            c.segments.append(Segment("turn", ids, trainable=True, reward=reply.reward or 0.0, logprobs=logprobs,
                                      text=policy.detokenize(ids)))
            conversation.messages.extend(reply.observation)
            if end:
                conversation.end = end
                done.append(c)
                continue
            c.segments.append(Segment("observation", observation[0], text=observation[1]))
            c.context += ids + observation[0]
            going.append(c)
        live = going
        if live:
            rooms = [min(params.max_new_tokens, limits.max_tokens - c.sampled) for c in live]
            # One call per distinct room, in order (usually one: every conversation has the same room).
            completions = _sample(policy, live, rooms, replace(params, n=1, stop=stop), generator)
    with phase("score"):
        return [_episode(env, c) for c in sorted(done, key=lambda c: c.index)]


def _first_turns(policy: Sampler, live: Sequence[_Live], n: int, params: SamplingParams,
                 generator: torch.Generator | None) -> list[Completion]:
    """The first turn of every conversation: `n` samples of each problem's prompt in one call when a
    problem's conversations open alike (the usual case), else one sample of each conversation's own."""
    starts = [c.context for c in live]
    if all(starts[i] == starts[i - i % n] for i in range(len(starts))):
        return policy.generate_ids(starts[::n], params, generator=generator)
    return policy.generate_ids(starts, replace(params, n=1), generator=generator)


def _sample(policy: Sampler, live: Sequence[_Live], rooms: Sequence[int], params: SamplingParams,
            generator: torch.Generator | None) -> list[Completion]:
    """The next turn of every live conversation: one engine call per distinct token room."""
    out: list[Completion | None] = [None] * len(live)
    for room in sorted(set(rooms), reverse=True):
        rows = [i for i, r in enumerate(rooms) if r == room]
        sampled = policy.generate_ids([live[i].context for i in rows], replace(params, max_new_tokens=room),
                                      generator=generator)
        for i, completion in zip(rows, sampled):
            out[i] = completion
    return out  # type: ignore[return-value]


def _episode(env: Environment, c: _Live) -> Episode:
    conversation = c.conversation
    verdict = env.judge(conversation)
    outcome = [s for s in c.segments if s.trainable][-1]
    outcome.reward = (outcome.reward or 0.0) + verdict.score
    assert c.last is not None
    info = {"correct": verdict.correct, "reason": verdict.reason, "finish_reason": c.last.finish_reason,
            "turns": conversation.turns, "tool_calls": conversation.tool_calls, "tool_errors": conversation.tool_errors,
            "end": conversation.end, "sampled_tokens": c.sampled, "answer": env.answer(conversation),
            "answer_key": env.answer_key(conversation),
            "messages": conversation.messages, "tools": c.tools, **verdict.info}
    if conversation.data.get("faults"):
        info["faults"] = conversation.data["faults"]
    return Episode(c.segments, group=c.group, problem_id=conversation.problem.id, info=info, sum_turns=True)
