"""Judge many answers at once where the engine (a Ray pool: on its workers) or the task (the code task:
parallel sandboxes) can, else one by one; results in order."""

from __future__ import annotations

from typing import Sequence

from selfimprove.policy.base import Sampler
from selfimprove.tasks.base import Problem, Task, Verdict
from selfimprove.timing import phase


def verify_all(policy: Sampler, task: Task, problems: Sequence[Problem], texts: Sequence[str]) -> list[Verdict]:
    """`task.verify(problems[i], texts[i])` for every i, on the engine's workers when it has them."""
    if len(problems) != len(texts):
        raise ValueError(f"{len(problems)} problems but {len(texts)} texts")
    with phase("score"):
        return _verify_all(policy, task, problems, texts)


def _verify_all(policy: Sampler, task: Task, problems: Sequence[Problem], texts: Sequence[str]) -> list[Verdict]:
    for owner in (policy, task):
        many = getattr(owner, "verify_many", None)
        if many is not None:
            return list(many(task, problems, texts) if owner is policy else many(problems, texts))
    return [task.verify(p, t) for p, t in zip(problems, texts)]
