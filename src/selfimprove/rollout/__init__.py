"""Rollout protocols: ways of turning problems into episodes."""

from selfimprove.rollout.episode import Episode, Segment, TokenBatch, collate

__all__ = ["Episode", "Segment", "TokenBatch", "collate"]
