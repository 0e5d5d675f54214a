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


def calls_per_score(critic: Critic) -> int:
    """Batched calls one `critic.score` makes: 1, or what a critic that calls others declares
    (`CombinedCritic`: one per member it calls)."""
    return int(getattr(critic, "calls_per_score", 1))


def charge_critic_call(budgets: Sequence[Budget], states: Sequence[State], calls: int = 1) -> None:
    """Charge `calls` batched critic calls to every problem that has states in it, each with its item count."""
    for problem_index, items in Counter(s.problem_index for s in states).items():
        budgets[problem_index].charge_critic(items, calls)


def score_states(
    critic: Critic, problems: Sequence[Problem], states: Sequence[State], budgets: Sequence[Budget]
) -> list[float]:
    """Scores of `states` in one `critic.score` call; every problem with a state in it is charged the
    critic calls that made (`calls_per_score`: one, or one per member of a combined critic) and its
    number of states for each. A critic that breaks its contract (wrong length, a score
    outside [0, 1] or NaN) raises here, before a search ranks anything by a bad score."""
    if not states:
        return []
    scores = [float(x) for x in critic.score(problems, states)]
    if len(scores) != len(states):
        raise ValueError(f"critic {getattr(critic, 'name', critic)!r} returned {len(scores)} scores for {len(states)} states")
    bad = [x for x in scores if math.isnan(x) or not 0.0 <= x <= 1.0]
    if bad:
        raise ValueError(f"critic {getattr(critic, 'name', critic)!r} returned scores outside [0, 1]: {bad[:3]}")
    charge_critic_call(budgets, states, calls_per_score(critic))
    return scores
