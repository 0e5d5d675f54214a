"""Rollout protocols: ways of turning problems into episodes.

The names below load on first use (`Episode` and `collate` need torch), so modules that only need a
rollout's constants or configs (a recipe's schema, the CLI's validation) stay light.
"""

from typing import Any

__all__ = ["Episode", "Segment", "TokenBatch", "collate"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from selfimprove.rollout import episode

        return getattr(episode, name)
    raise AttributeError(f"module 'selfimprove.rollout' has no attribute {name!r}")
