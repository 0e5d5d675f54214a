"""The built-in searches: importing this module registers them (`registry.SEARCHES` imports it on its
first lookup, so importing the search package stays light)."""

from selfimprove.search import beam as _beam  # noqa: F401
from selfimprove.search import best_of_n as _best_of_n  # noqa: F401
from selfimprove.search import dvts as _dvts  # noqa: F401
from selfimprove.search import mcts as _mcts  # noqa: F401
from selfimprove.search import revision as _revision  # noqa: F401
from selfimprove.search import vote as _vote  # noqa: F401
