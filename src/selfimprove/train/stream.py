"""Problem streams: which training problems a run sees, in which order, from where it left off.

The driver owns the stream (its position is saved in every checkpoint), so no method keeps a data
cursor by hand. A stream hands out problems with the position of the first one, which methods use as
the group id of their episodes (positions never repeat, so groups never collide). R^3's curriculum is
one more stream.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Protocol

from selfimprove.tasks.base import Problem, Split, Task

__all__ = ["Drawn", "PoolStream", "ProblemStream", "SequentialStream", "pool_index"]


@dataclass(frozen=True)
class Drawn:
    """Problems taken from a stream; `start` is the stream position of the first."""

    start: int
    problems: list[Problem]


class ProblemStream(Protocol):
    def take(self, task: Task, n: int) -> Drawn:
        """The next `n` problems (the stream moves on)."""
        ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


@dataclass
class SequentialStream:
    """Problems `start`, `start + 1`, ... of a split: every problem once, in index order (RL, STaR)."""

    position: int = 0
    split: Split = "train"

    def take(self, task: Task, n: int) -> Drawn:
        start = self.position
        self.position += n
        return Drawn(start, task.problems(self.split, n, start=start))

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])


def pool_index(position: int, pool: int, seed: int) -> int:
    """Index at a stream position: the position itself (pool 0), or a pool of `pool` items reshuffled
    every epoch (a function of `seed` and the epoch)."""
    if pool <= 0:
        return position
    epoch, offset = divmod(position, pool)
    return _epoch_order(pool, seed, epoch)[offset]


@lru_cache(maxsize=4)
def _epoch_order(pool: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(pool))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return tuple(order)


@dataclass
class PoolStream:
    """A finite pool of train problems 0..pool-1, reshuffled every epoch (SFT's demonstrations: the
    scarce resource self-improvement starts from); `pool = 0` draws a fresh problem every time."""

    pool: int
    seed: int
    position: int = 0
    split: Split = "train"

    def take(self, task: Task, n: int) -> Drawn:
        start = self.position
        self.position += n
        return Drawn(start, [task.problem(self.split, pool_index(i, self.pool, self.seed)) for i in range(start, start + n)])

    def state_dict(self) -> dict[str, Any]:
        return {"position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.position = int(state["position"])
