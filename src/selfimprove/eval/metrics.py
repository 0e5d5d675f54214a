"""Evaluation metrics over verifier outcomes."""

from __future__ import annotations

import math
import operator
from typing import Iterable, Sequence

__all__ = ["accuracy", "mean_pass_at_k", "pass_at_k"]


def _as_int(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer, got a bool")
    try:
        return operator.index(value)  # accepts int and numpy integers, rejects floats
    except TypeError:
        raise ValueError(f"{name} must be an integer, got {value!r}") from None


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct: 1 - C(n - c, k) / C(n, k).

    Uses the product form of Chen et al. (2021), 1 - prod_{i=n-c+1}^{n} (1 - k / i), which never forms
    the huge binomials. Raises ValueError unless 0 <= c <= n and 1 <= k <= n.
    """
    n, c, k = _as_int("n", n), _as_int("c", c), _as_int("k", k)
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 0 <= c <= n:
        raise ValueError(f"c must be in [0, n={n}], got {c}")
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, n={n}], got {k}")
    if n - c < k:
        return 1.0  # every k-subset contains a correct sample
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def mean_pass_at_k(counts: Iterable[tuple[int, int]], k: int) -> float:
    """Mean pass@k over problems given as (n samples, c correct) pairs; 0.0 for no problems."""
    values = [pass_at_k(n, c, k) for n, c in counts]
    return sum(values) / len(values) if values else 0.0


def accuracy(correct: Sequence[bool]) -> float:
    """Fraction of True values; 0.0 for an empty sequence (nothing was solved)."""
    return sum(1 for x in correct if x) / len(correct) if len(correct) else 0.0
