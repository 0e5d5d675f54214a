"""Single-attempt episodes: one prompt, one completion (sampled, or a demonstration for SFT)."""

from __future__ import annotations

from typing import Sequence

from selfimprove.policy.base import SamplingParams
from selfimprove.policy.base import Sampler
from selfimprove.rollout.episode import Episode, Segment
from selfimprove.rollout.verify import verify_all
from selfimprove.tasks.base import Problem, Task


def sample_episodes(
    policy: Sampler,
    task: Task,
    problems: Sequence[Problem],
    params: SamplingParams,
    *,
    group_offset: int = 0,
) -> list[Episode]:
    """Sample `params.n` answers per problem and score them; the answers of one problem form a group."""
    completions = policy.generate([p.prompt for p in problems], params)
    verdicts = verify_all(policy, task, [problems[c.prompt_index] for c in completions], [c.text for c in completions])
    episodes = []
    for c, verdict in zip(completions, verdicts):
        problem = problems[c.prompt_index]
        episodes.append(
            Episode(
                segments=[
                    Segment("prompt", c.prompt_ids),
                    Segment("completion", c.token_ids, trainable=True, reward=verdict.score, logprobs=c.logprobs, text=c.text),
                ],
                group=group_offset + c.prompt_index,
                problem_id=problem.id,
                reward=verdict.score,
                info={"correct": verdict.correct, "reason": verdict.reason, "finish_reason": c.finish_reason, **verdict.info},
            )
        )
    return episodes


def demonstration_episode(policy: Sampler, task: Task, problem: Problem, group: int = 0) -> Episode:
    """The problem's worked solution as a trainable completion (what SFT learns from)."""
    target = task.target_text(problem)
    return Episode(
        segments=[
            Segment("prompt", policy.encode_prompt(problem.prompt)),
            Segment("completion", policy.encode_completion(target), trainable=True, reward=1.0, text=target),
        ],
        group=group,
        problem_id=problem.id,
        reward=1.0,
    )
