"""Candidates that are whole conversations with an environment (best-of-N and votes over tool use).

Each candidate is one conversation (`rollout/conversation.py`) as a finished `State`: its prompt ids,
the conversation after the prompt as one step (model turns and observations, so a learned critic reads
what the model saw), and in `info` the environment's verdict (for reporting), the key a vote groups it
by and the final answer. Drawn in lockstep rounds like `sample.sample_candidates`, so a per-problem
token budget stops a problem early; a problem is charged its conversations' model tokens and one
policy call per turn round it took part in.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Sequence

from selfimprove.policy.base import Sampler, SamplingParams
from selfimprove.rollout.budget import Budget
from selfimprove.rollout.state import State
from selfimprove.search.sample import samples_per_round
from selfimprove.tasks.base import Problem, Verdict

if TYPE_CHECKING:
    import torch

    from selfimprove.rollout.conversation import EnvRun
    from selfimprove.rollout.episode import Episode


def as_state(episode: Episode, problem_index: int) -> State:
    """A finished conversation as a search state (see the module docstring)."""
    prompt = episode.segments[0]
    rest = episode.segments[1:]
    text = "".join(s.text for s in rest)
    ids = tuple(t for s in rest for t in s.token_ids)
    info = episode.info
    verdict = Verdict(float(episode.reward), bool(info["correct"]), str(info["reason"]))
    return State(problem_index, tuple(prompt.token_ids), (text,), (ids,), True, str(info["end"]),
                 info={"verdict": verdict, "key": info["answer_key"], "answer": info["answer"],
                       "messages": info["messages"], "turns": info["turns"], "tool_calls": info["tool_calls"]})


def conversation_candidates(
    policy: Sampler,
    env: EnvRun,
    problems: Sequence[Problem],
    n: int,
    params: SamplingParams,
    budgets: Sequence[Budget],
    max_answer_tokens: int,
    *,
    samples_per_call: int | None = None,
    generator: torch.Generator | None = None,
) -> list[list[State]]:
    """Up to `n` finished conversations per problem (fewer if its token budget ran out first)."""
    from selfimprove.rollout.conversation import run_conversations

    per_call = samples_per_round(n, samples_per_call)
    limits = env.limits(max_answer_tokens)
    out: list[list[State]] = [[] for _ in problems]
    drawn = 0  # conversations per problem started in earlier rounds: each round's get fresh random streams
    while True:
        wanted = {i: min(per_call, n - len(out[i])) for i in range(len(problems))
                  if len(out[i]) < n and not budgets[i].exhausted}
        if not wanted:
            return out
        for count in sorted(set(wanted.values()), reverse=True):
            rows = [i for i, k in wanted.items() if k == count]
            round_params = replace(params, n=count, max_new_tokens=max_answer_tokens)
            episodes = run_conversations(policy, env.env, [problems[i] for i in rows], round_params, limits,
                                         sample_offset=drawn * len(problems), generator=generator)
            turns: dict[int, int] = {}
            for e in episodes:
                i = rows[e.group]
                out[i].append(as_state(e, i))
                budgets[i].tokens += int(e.info["sampled_tokens"])
                turns[i] = max(turns.get(i, 0), int(e.info["turns"]))
            for i, calls in turns.items():
                budgets[i].policy_calls += calls
        drawn += max(wanted.values())
