"""Votes over sampled answers: majority (self-consistency) and weighted by a critic's scores (SPECS §6).
Evaluation's maj@k and the vote searches (`search/vote.py`) both use them.

Answers vote through keys (`Task.answer_key`): two answers count as the same when their keys are equal
(numbers normalised, Countdown by its set of operations, ...). An answer with no key (nothing that
looks like an answer) casts no vote.

Ties are broken deterministically, always the same way:
- majority: most votes, then the key whose first answer was sampled earliest;
- weighted: highest summed critic score (`math.fsum`, so the sum does not depend on the order of the
  answers), then most votes, then the key sampled earliest.
The chosen answer of a key is its first sample (majority) or its highest-scored sample, ties to the
earliest (weighted). When no answer has a key, the first sample is chosen and the winning key is None.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

__all__ = ["Vote", "best_index", "majority_vote", "weighted_vote"]


def best_index(scores: Sequence[float]) -> int:
    """The index of the highest score; ties go to the earliest (the first sample)."""
    best = 0
    for i, s in enumerate(scores):
        if s > scores[best]:
            best = i
    return best


@dataclass(frozen=True)
class Vote:
    """The winning key, the index of the answer chosen for it, and the tally per key."""

    key: str | None
    index: int
    tally: dict[str, float]
    votes: dict[str, int]


def _groups(keys: Sequence[str | None]) -> tuple[dict[str, list[int]], dict[str, int]]:
    """Answer indices per key (keys in order of first appearance: dicts keep insertion order) and the
    votes per key."""
    if not keys:
        raise ValueError("a vote needs at least one answer")
    groups: dict[str, list[int]] = {}
    for i, key in enumerate(keys):
        if key is not None:
            groups.setdefault(key, []).append(i)
    return groups, {k: len(v) for k, v in groups.items()}


def majority_vote(keys: Sequence[str | None]) -> Vote:
    """The most frequent key (ties: sampled earliest) and its first answer."""
    groups, votes = _groups(keys)
    if not groups:
        return Vote(None, 0, {}, {})
    # max() keeps the first of equal maxima, and groups are in order of first appearance.
    key = max(groups, key=lambda k: votes[k])
    return Vote(key, groups[key][0], {k: float(n) for k, n in votes.items()}, votes)


def weighted_vote(keys: Sequence[str | None], weights: Sequence[float]) -> Vote:
    """The key with the highest summed weight (ties: more votes, then sampled earliest) and its
    highest-weighted answer (ties: the earliest)."""
    if len(keys) != len(weights):
        raise ValueError(f"{len(keys)} answers but {len(weights)} weights")
    groups, votes = _groups(keys)
    if not groups:
        return Vote(None, 0, {}, {})
    tally = {k: math.fsum(weights[i] for i in v) for k, v in groups.items()}
    key = max(groups, key=lambda k: (tally[k], votes[k]))
    members = groups[key]
    return Vote(key, members[best_index([weights[i] for i in members])], tally, votes)
