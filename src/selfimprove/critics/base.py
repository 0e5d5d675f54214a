"""What every critic speaks: a batch of states in, one score per state out, in [0, 1].

A critic judges a reasoning state (a prompt plus steps so far, `search.state.State`): the task
verifier (needs the gold answer: for building training data only), a learned value function (expected
final correctness from a prefix), a process reward model (is this step still on a good path) or an
outcome reward model (is this finished answer right). One call scores many states of many problems at
once, so a search makes one critic call per round, whatever the number of problems.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from selfimprove.search.state import State
from selfimprove.tasks.base import Problem


class Critic(Protocol):
    name: str

    def score(self, problems: Sequence[Problem], states: Sequence[State]) -> list[float]:
        """Score `states[i]`, a state of `problems[states[i].problem_index]`, in [0, 1]."""
