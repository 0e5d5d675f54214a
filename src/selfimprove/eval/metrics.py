"""Evaluation metrics over verifier outcomes."""

from __future__ import annotations

import math
import operator
from typing import Iterable, Sequence

from selfimprove.text import edit_distance

__all__ = ["accuracy", "edit_distance", "mean_pass_at_k", "pass_at_k", "self_correction_metrics"]


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


def self_correction_metrics(
    first: Sequence[bool],
    second: Sequence[bool],
    first_texts: Sequence[str] | None = None,
    second_texts: Sequence[str] | None = None,
) -> dict[str, float]:
    """SCoRe's metrics over problems attempted twice (SPECS §2), all fractions of all problems.

    Acc@t1, Acc@t2, Delta = Acc@t2 - Acc@t1, Delta_i->c (wrong then right), Delta_c->i (right then
    wrong), so Delta = Delta_i->c - Delta_c->i; with the texts also the mean edit-distance ratio
    between the attempts (distance / combined length), which shows a collapse to "never change".
    """
    if len(first) != len(second):
        raise ValueError(f"{len(first)} first attempts but {len(second)} second attempts")
    n = len(first)
    if n == 0:
        raise ValueError("no problems")
    i2c = sum(1 for a, b in zip(first, second) if not a and b) / n
    c2i = sum(1 for a, b in zip(first, second) if a and not b) / n
    out = {
        "acc_t1": accuracy(first),
        "acc_t2": accuracy(second),
        "delta": accuracy(second) - accuracy(first),
        "delta_i_to_c": i2c,
        "delta_c_to_i": c2i,
    }
    if first_texts is not None and second_texts is not None:
        if not len(first_texts) == len(second_texts) == n:
            raise ValueError("texts must match the attempts one to one")
        ratios = [edit_distance(x, y) / max(1, len(x) + len(y)) for x, y in zip(first_texts, second_texts)]
        out["edit_distance_ratio"] = sum(ratios) / n
    return out
