"""R^3's curricula as problem streams: which start state s_k of which problem each step trains from.

All draw from a finite pool of train problems with demonstrations (`first`, `first + 1`, ...,
`first + pool - 1`), reshuffled every epoch (a function of the seed and the epoch), and hand out
`StartState`s; the driver checkpoints a curriculum's state like any stream's, so resume is exact.

- `none`: s_0 only (vanilla RL from the prompt).
- `staged`: nearest the end first, sliding back to s_0 by **training steps**: stage j (steps
  j*stage_steps .. (j+1)*stage_steps - 1) starts every problem with j + 1 steps left (k = n - 1 - j,
  at least 0), so after n - 1 stages every state is s_0. Steps, not a success gate, so the schedule is
  the same for every arm it is compared with.
- `mixed` (R^3's method, as its official code does): every (problem, k) of the pool, k = 0 included, in
  one shuffled dataset: uniform over states.
- `adaptive` (after AdaBack 2025, beyond R^3): each problem keeps its own start, first one step from the
  end; after a visit, the start moves one step back when the visit's success rate is at least
  `advance_at`, and one step forward when it is at most `retreat_at`, from the start that visit had (a
  problem drawn twice in one step moves once, not twice). The per-problem starts are part of the
  checkpoint.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Sequence

from selfimprove.rollout.start_states import StartState
from selfimprove.tasks.base import Problem, Task
from selfimprove.train.stream import Drawn, pool_index

__all__ = ["Curriculum", "CurriculumKind", "DrawnStates"]

CurriculumKind = Literal["none", "staged", "mixed", "adaptive"]


@dataclass(frozen=True)
class DrawnStates(Drawn):
    """Start states from a curriculum; `problems` are their problems (a state's group is `start + i`)."""

    states: tuple[StartState, ...] = ()


@lru_cache(maxsize=4)
def _order(size: int, seed: int, epoch: int, salt: str) -> tuple[int, ...]:
    order = list(range(size))
    random.Random(f"{salt}:{seed}:{epoch}").shuffle(order)
    return tuple(order)


class Curriculum:
    """A stream of start states (see the module docstring)."""

    def __init__(self, kind: CurriculumKind, *, first: int, pool: int, seed: int, per_step: int, stage_steps: int = 50,
                 advance_at: float = 0.5, retreat_at: float = 0.0) -> None:
        if pool < 1:
            raise ValueError("a curriculum needs a pool of at least one problem")
        self.kind, self.first, self.pool, self.seed = kind, first, pool, seed
        self.per_step, self.stage_steps = per_step, stage_steps
        self.advance_at, self.retreat_at = advance_at, retreat_at
        self.position = 0
        self.starts: dict[int, int] = {}  # adaptive: pool index -> k
        self._problems: dict[int, Problem] = {}
        self._pairs: list[tuple[int, int]] | None = None

    # ------------------------------------------------------------------ the pool
    def _problem(self, task: Task, index: int) -> Problem:
        if index not in self._problems:
            problem = task.problem("train", self.first + index)
            if not problem.demonstration:
                raise ValueError(f"R^3 needs demonstrations: {problem.id} of task {task.name!r} has none")
            self._problems[index] = problem
        return self._problems[index]

    def _length(self, task: Task, index: int) -> int:
        return len(self._problem(task, index).demonstration or ())

    # ------------------------------------------------------------------ drawing
    def take(self, task: Task, n: int) -> DrawnStates:
        start = self.position
        states = [self._state(task, start + i) for i in range(n)]
        self.position += n
        return DrawnStates(start, [s.problem for s in states], tuple(states))

    def _state(self, task: Task, position: int) -> StartState:
        if self.kind == "mixed":
            return self._mixed(task, position)
        index = pool_index(position, self.pool, self.seed)
        problem = self._problem(task, index)
        n = self._length(task, index)
        if self.kind == "none":
            k = 0
        elif self.kind == "staged":
            stage = (position // self.per_step) // self.stage_steps
            k = max(0, n - 1 - stage)
        else:  # adaptive
            k = min(self.starts.get(index, n - 1), n - 1)
        return StartState(problem, k)

    def _mixed(self, task: Task, position: int) -> StartState:
        if self._pairs is None:  # the dataset of every (problem, k): built once
            self._pairs = [(i, k) for i in range(self.pool) for k in range(max(1, self._length(task, i)))]
        epoch, offset = divmod(position, len(self._pairs))
        i, k = self._pairs[_order(len(self._pairs), self.seed, epoch, "r3-mixed")[offset]]
        return StartState(self._problem(task, i), k)

    def observe(self, drawn: DrawnStates, success: Sequence[float]) -> None:
        """The adaptive rule: each drawn state's success rate moves its problem's start (others: no-op)."""
        if self.kind != "adaptive":
            return
        for i, (state, rate) in enumerate(zip(drawn.states, success)):
            index = pool_index(drawn.start + i, self.pool, self.seed)
            n = max(1, state.steps)
            k = min(state.k, n - 1)  # the start this visit had: a problem drawn twice in a step moves once
            if rate >= self.advance_at:
                k = max(0, k - 1)
            elif rate <= self.retreat_at:
                k = min(n - 1, k + 1)
            self.starts[index] = k

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position, "starts": {str(i): k for i, k in sorted(self.starts.items())}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])
        self.starts = {int(i): int(k) for i, k in state.get("starts", {}).items()}
