"""What every critic speaks: a batch of states in, one score per state out, in [0, 1].

A critic judges a reasoning state (a prompt plus steps so far, `rollout.state.State`): the task
verifier (needs the gold answer: for building training data only), a learned value function (expected
final correctness from a prefix), a process reward model (is this step still on a good path) or an
outcome reward model (is this finished answer right). One call scores many states of many problems at
once, so a search makes one critic call per round, whatever the number of problems; `score_states`
makes that call and charges it to each problem's `Budget`.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Protocol, Sequence

from selfimprove.rollout.budget import Budget
from selfimprove.rollout.state import State
from selfimprove.tasks.base import Problem


class Critic(Protocol):
    name: str

    def score(self, problems: Sequence[Problem], states: Sequence[State]) -> list[float]:
        """Score `states[i]`, a state of `problems[states[i].problem_index]`, in [0, 1]."""


def charge_critic_call(budgets: Sequence[Budget], states: Sequence[State]) -> None:
    """Charge one batched critic call to every problem that has states in it, with its item count."""
    for problem_index, items in Counter(s.problem_index for s in states).items():
        budgets[problem_index].charge_critic(items)


def score_states(
    critic: Critic, problems: Sequence[Problem], states: Sequence[State], budgets: Sequence[Budget]
) -> list[float]:
    """Scores of `states` in one `critic.score` call; every problem with a state in it is charged one
    critic call and its number of states. A critic that breaks its contract (wrong length, a score
    outside [0, 1] or NaN) raises here, before a search ranks anything by a bad score."""
    if not states:
        return []
    scores = [float(x) for x in critic.score(problems, states)]
    if len(scores) != len(states):
        raise ValueError(f"critic {getattr(critic, 'name', critic)!r} returned {len(scores)} scores for {len(states)} states")
    bad = [x for x in scores if math.isnan(x) or not 0.0 <= x <= 1.0]
    if bad:
        raise ValueError(f"critic {getattr(critic, 'name', critic)!r} returned scores outside [0, 1]: {bad[:3]}")
    charge_critic_call(budgets, states)
    return scores
