"""Evaluate self-correction: greedy first attempt, the fixed instruction, greedy second attempt."""

from __future__ import annotations

from typing import Any, Sequence

from selfimprove.eval.metrics import self_correction_metrics
from selfimprove.policy.base import SamplingParams
from selfimprove.policy.hf import HFPolicy
from selfimprove.rollout.correct import SHORT_INSTRUCTION, two_attempt_episodes
from selfimprove.tasks.base import Problem, Task


def evaluate_two_attempts(
    policy: HFPolicy,
    task: Task,
    problems: Sequence[Problem],
    *,
    instruction: str = SHORT_INSTRUCTION,
    max_new_tokens: int = 32,
    batch_size: int = 200,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """SCoRe's metrics (Acc@t1, Acc@t2, Delta, i->c, c->i, edit-distance ratio) and one record per problem."""
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    episodes = []
    for start in range(0, len(problems), batch_size):
        episodes += two_attempt_episodes(policy, task, problems[start : start + batch_size], greedy, instruction=instruction)
    first = [bool(e.info["correct1"]) for e in episodes]
    second = [bool(e.info["correct2"]) for e in episodes]
    texts1 = [e.segment("attempt1").text for e in episodes]
    texts2 = [e.segment("attempt2").text for e in episodes]
    records = [
        {"id": p.id, "prompt": p.prompt, "attempt1": t1, "attempt2": t2, "correct1": c1, "correct2": c2}
        for p, t1, t2, c1, c2 in zip(problems, texts1, texts2, first, second)
    ]
    return self_correction_metrics(first, second, texts1, texts2), records
