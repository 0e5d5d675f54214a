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


# ----------------------------------------------------------------------------- self-correction (SCoRe)
def test_edit_distance_by_hand() -> None:
    from selfimprove.eval.metrics import edit_distance

    assert edit_distance("kitten", "sitting") == 3  # k->s, e->i, +g
    assert edit_distance("", "abc") == 3
    assert edit_distance("1+2", "1+2") == 0
    assert edit_distance("1+2", "2+1") == 2  # two substitutions; one edit cannot fix two positions
    assert edit_distance("20-9", "20-9=11") == 3  # three insertions


def test_self_correction_metrics_on_a_hand_made_table() -> None:
    from selfimprove.eval.metrics import self_correction_metrics

    # 8 problems: 2 right->right, 3 wrong->right, 1 right->wrong, 2 wrong->wrong
    first = [True, True, False, False, False, True, False, False]
    second = [True, True, True, True, True, False, False, False]
    m = self_correction_metrics(first, second)
    assert m["acc_t1"] == pytest.approx(3 / 8)
    assert m["acc_t2"] == pytest.approx(5 / 8)
    assert m["delta_i_to_c"] == pytest.approx(3 / 8)
    assert m["delta_c_to_i"] == pytest.approx(1 / 8)
    assert m["delta"] == pytest.approx(2 / 8)
    assert m["delta"] == pytest.approx(m["delta_i_to_c"] - m["delta_c_to_i"])


def test_edit_distance_ratio_shows_unchanged_answers() -> None:
    from selfimprove.eval.metrics import self_correction_metrics

    # ("ab", "ab") -> 0 / 4; ("ab", "cd") -> 2 / 4 = 0.5; mean 0.25
    m = self_correction_metrics([True, False], [True, False], ["ab", "ab"], ["ab", "cd"])
    assert m["edit_distance_ratio"] == pytest.approx(0.25)


def test_self_correction_metrics_reject_mismatched_inputs() -> None:
    from selfimprove.eval.metrics import self_correction_metrics

    with pytest.raises(ValueError, match="first attempts"):
        self_correction_metrics([True], [True, False])
    with pytest.raises(ValueError, match="no problems"):
        self_correction_metrics([], [])
