"""Multi-turn demonstrations for SFT: an environment's worked conversation, answered for real.

The environment writes a problem's assistant messages (`Environment.demonstration`); they are played
against it in lockstep across the batch, so every tool really runs and every observation is what a
rollout would see. Assistant turns are trainable (their tokens are what the model would sample for
them: `Dialogue.demonstration_turn`), observations are not. A script the environment ends early, or
judges wrong (a tool that disagrees with the script), gives no episode.
"""

from __future__ import annotations

from typing import Sequence

from selfimprove.chat import Message
from selfimprove.envs.base import Environment, Turn
from selfimprove.policy.base import Sampler
from selfimprove.policy.dialogue import Dialogue, dialogue_for
from selfimprove.rollout.episode import Episode, Segment
from selfimprove.tasks.base import Problem


def demonstration_episodes(policy: Sampler, env: Environment, problems: Sequence[Problem], *, group_offset: int = 0,
                           dialogue: Dialogue | None = None) -> list[Episode | None]:
    """One episode per problem (None where the environment has no valid worked conversation)."""
    dialogue = dialogue or dialogue_for(policy)
    scripts: list[list[Message] | None] = [env.demonstration(p) for p in problems]
    conversations = [env.start(p) if s else None for p, s in zip(problems, scripts)]
    for c in conversations:
        if c is not None:
            c.data["demonstration"] = True  # an environment may act differently for a script (honest tools)
    tools = [env.tool_schemas(c) if c is not None else [] for c in conversations]
    segments: list[list[Segment]] = [
        [Segment("prompt", dialogue.start(c.messages, t))] if c is not None else [] for c, t in zip(conversations, tools)]
    valid = [c is not None for c in conversations]
    longest = max((len(s) for s in scripts if s), default=0)
    for k in range(longest):
        active = [i for i, s in enumerate(scripts) if s and valid[i] and k < len(s)]
        if not active:
            break
        turns = []
        for i in active:
            message = scripts[i][k]  # type: ignore[index]
            conversations[i].messages.append(message)  # type: ignore[union-attr]
            conversations[i].turns += 1  # type: ignore[union-attr]
            turns.append(Turn(message))
        replies = env.respond_all([conversations[i] for i in active], turns)  # type: ignore[misc]
        for i, turn, reply in zip(active, turns, replies):
            final = k == len(scripts[i]) - 1  # type: ignore[arg-type]
            if reply.done != final:  # the environment and the script disagree on where it ends
                valid[i] = False
                continue
            ids, text = dialogue.demonstration_turn(turn.message, tools[i], final)
            segments[i].append(Segment("turn", ids, trainable=True, reward=0.0, text=text))
            conversations[i].messages.extend(reply.observation)  # type: ignore[union-attr]
            if final:
                conversations[i].end = "done"  # type: ignore[union-attr]
                continue
            observation, shown = dialogue.observation(reply.observation, _ended(policy, ids))
            segments[i].append(Segment("observation", observation, text=shown))
    out: list[Episode | None] = []
    for i, (problem, conversation) in enumerate(zip(problems, conversations)):
        if conversation is None or not valid[i]:
            out.append(None)
            continue
        verdict = env.judge(conversation)
        if not verdict.correct:
            out.append(None)
            continue
        segments[i][-1].reward = verdict.score
        out.append(Episode(segments[i], group=group_offset + i, problem_id=problem.id, sum_turns=True,
                           info={"correct": True, "messages": conversation.messages, "tools": tools[i],
                                 "tool_calls": conversation.tool_calls, "turns": conversation.turns}))
    return out


def recorded_episode(policy: Sampler, messages: Sequence[Message], tools: Sequence[dict] = (), *, group: int = 0,
                     problem_id: str = "", dialogue: Dialogue | None = None) -> Episode:
    """A conversation recorded in the data (a chat row with tool calls and their results) as an SFT
    episode: the messages before the first assistant one are the prompt, every assistant message is a
    trainable turn, every run of other messages between them (tool results, user turns) an observation."""
    dialogue = dialogue or dialogue_for(policy)
    first = next((i for i, m in enumerate(messages) if m.get("role") == "assistant"), None)
    if first is None or first == 0 or messages[-1].get("role") != "assistant":
        raise ValueError("a recorded conversation needs the first messages, then assistant turns, ending with one")
    segments = [Segment("prompt", dialogue.start(messages[:first], tools))]
    i = first
    while i < len(messages):
        message = messages[i]
        final = i == len(messages) - 1
        ids, text = dialogue.demonstration_turn(message, tools, final)
        segments.append(Segment("turn", ids, trainable=True, reward=1.0 if final else 0.0, text=text))
        j = i + 1
        while j < len(messages) and messages[j].get("role") != "assistant":
            j += 1
        if not final:
            observation, shown = dialogue.observation(messages[i + 1 : j], _ended(policy, ids))
            segments.append(Segment("observation", observation, text=shown))
        i = j
    return Episode(segments, group=group, problem_id=problem_id, sum_turns=True,
                   info={"correct": True, "messages": list(messages), "tools": list(tools)})


def _ended(policy: Sampler, ids: Sequence[int]) -> int | None:
    """The end token a turn's tokens end with (None when they end without one)."""
    return ids[-1] if ids and ids[-1] in policy.eos_ids else None
