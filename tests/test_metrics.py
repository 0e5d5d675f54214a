"""Evaluation metrics, checked against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest

from selfimprove.eval.metrics import accuracy, mean_pass_at_k, pass_at_k


def test_pass_at_k_by_hand() -> None:
    # n=5, c=2, k=1: 1 - C(3,1)/C(5,1) = 1 - 3/5 = 0.4
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10 = 0.7
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    # no correct sample -> 0
    assert pass_at_k(4, 0, 2) == 0.0
    # all correct -> 1
    assert pass_at_k(4, 4, 2) == 1.0
    # n - c = 1 < k = 2: every pair holds a correct sample -> 1
    assert pass_at_k(5, 4, 2) == 1.0


def test_pass_at_k_large_n_is_stable() -> None:
    exact = 1 - math.comb(190, 100) / math.comb(200, 100)
    assert pass_at_k(200, 10, 100) == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize(
    "n, c, k",
    [(5, 2, 6), (5, 2, 0), (5, 6, 1), (5, -1, 1), (0, 0, 1), (5.0, 2, 1), (5, True, 1)],
)
def test_pass_at_k_rejects_bad_inputs(n: object, c: object, k: object) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)  # type: ignore[arg-type]


def test_mean_pass_at_k() -> None:
    # (0.4 + 0.0) / 2 = 0.2
    assert mean_pass_at_k([(5, 2), (4, 0)], 1) == pytest.approx(0.2)
    assert mean_pass_at_k([], 1) == 0.0


def test_accuracy() -> None:
    # 3 of 4 -> 0.75
    assert accuracy([True, False, True, True]) == 0.75
    assert accuracy([]) == 0.0
