"""AlphaLLM's critic score: a weighted mean of several critics (SPECS §5: s = b_v v + b_PRM PRM + b_ORM ORM,
all b = 1).

We divide by the sum of the weights so the combined score stays in [0, 1] like every member's, which
ranks states exactly as the paper's plain weighted sum does. Each member is called once per batch
with all the states, so combining three critics costs three batched calls, not three per state.
Spend is one critic call per member it calls (`calls_per_score`, nested combinations counted to their
leaves), which `critics.base.score_states` charges, as for any critic.
"""

from __future__ import annotations

from typing import Sequence

from selfimprove.critics.base import Critic, calls_per_score
from selfimprove.rollout.state import State
from selfimprove.tasks.base import Problem


class CombinedCritic:
    def __init__(self, critics: Sequence[Critic], weights: Sequence[float] | None = None, *, name: str = "combined") -> None:
        if not critics:
            raise ValueError("a combined critic needs at least one member")
        weights = [1.0] * len(critics) if weights is None else [float(w) for w in weights]
        if len(weights) != len(critics):
            raise ValueError(f"{len(critics)} critics but {len(weights)} weights")
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"weights must be >= 0 with a positive sum, got {weights}")
        self.critics = list(critics)
        self.weights = weights
        self.name = name

    @property
    def calls_per_score(self) -> int:
        """Batched calls one `score` makes: each member it calls (weight > 0), counted to the leaves."""
        return sum(calls_per_score(c) for c, w in zip(self.critics, self.weights) if w > 0)

    def score(self, problems: Sequence[Problem], states: Sequence[State]) -> list[float]:
        """sum_k w_k s_k(state) / sum_k w_k for every state; members with weight 0 are not called."""
        if not states:
            return []
        total = [0.0] * len(states)
        norm = sum(self.weights)
        for critic, weight in zip(self.critics, self.weights):
            if weight == 0:
                continue
            scores = critic.score(problems, states)
            if len(scores) != len(states):
                raise ValueError(f"critic {critic.name!r} returned {len(scores)} scores for {len(states)} states")
            for i, s in enumerate(scores):
                total[i] += weight * s
        return [t / norm for t in total]
