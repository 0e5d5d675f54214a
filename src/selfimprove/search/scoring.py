"""One critic call for many states of many problems, charged to each problem's budget."""

from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

from selfimprove.critics.base import Critic
from selfimprove.search.budget import Budget
from selfimprove.search.state import State
from selfimprove.tasks.base import Problem


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
    for problem, items in Counter(s.problem_index for s in states).items():
        budgets[problem].charge_critic(items)
    return scores
