"""N complete answers per problem, sampled in lockstep rounds until N or the token budget is reached.

Best-of-N and both votes start from the same candidates; drawing them in rounds of
`samples_per_call` lets a token budget stop a problem early (accuracy against budget), while the
default (all N in one round) is a single policy call for all problems.
"""

from __future__ import annotations

from typing import Sequence

import torch

from selfimprove.policy.base import SamplingParams
from selfimprove.rollout.budget import Budget
from selfimprove.policy.base import Sampler
from selfimprove.rollout.expand import complete
from selfimprove.rollout.state import State, StepRule


def samples_per_round(n: int, samples_per_call: int | None) -> int:
    """Answers per problem a sampling round asks for (`n` in one round unless `samples_per_call` splits
    it); both at least 1, else no round would ever finish the `n`."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    per_call = n if samples_per_call is None else samples_per_call
    if per_call < 1:
        raise ValueError(f"samples_per_call must be >= 1, got {samples_per_call}")
    return per_call


def sample_candidates(
    policy: Sampler,
    roots: Sequence[State],
    n: int,
    rule: StepRule,
    params: SamplingParams,
    budgets: Sequence[Budget],
    max_answer_tokens: int,
    *,
    samples_per_call: int | None = None,
    generator: torch.Generator | None = None,
) -> list[list[State]]:
    """Up to `n` finished answers per root (sample order kept; fewer if the budget ran out first)."""
    per_call = samples_per_round(n, samples_per_call)
    out: list[list[State]] = [[] for _ in roots]
    while True:
        owners = [
            i
            for i, root in enumerate(roots)
            if len(out[i]) < n and not budgets[root.problem_index].exhausted
            for _ in range(min(per_call, n - len(out[i])))
        ]
        if not owners:
            return out
        batch = [roots[i] for i in owners]
        for i, state in zip(owners, complete(policy, batch, rule, params, budgets, max_answer_tokens, generator=generator)):
            out[i].append(state)
