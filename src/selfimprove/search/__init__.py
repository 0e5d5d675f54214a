"""Test-time search over reasoning steps (SPECS §5, §6): many problems in lockstep, every token counted.
Importing this package registers the built-in searches (`registry.SEARCHES`)."""

from selfimprove.search import beam as _beam  # noqa: F401
from selfimprove.search import best_of_n as _best_of_n  # noqa: F401
from selfimprove.search import mcts as _mcts  # noqa: F401
from selfimprove.search import revision as _revision  # noqa: F401
from selfimprove.search import vote as _vote  # noqa: F401
