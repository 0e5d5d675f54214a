"""Critic metrics on numbers small enough to check by hand."""

from __future__ import annotations

import pytest

from selfimprove.critics.metrics import (
    accuracy,
    auroc,
    brier,
    confusion,
    critic_report,
    expected_calibration_error,
    precision,
    recall,
)

# scores and labels: at threshold 0.5 -> predicted positive: 0.9, 0.8, 0.6, 0.5 (4); actual positive: 1, 1, 0, 1 for
# those, and among the rest (0.4, 0.1) labels 1, 0.
SCORES = [0.9, 0.8, 0.6, 0.5, 0.4, 0.1]
LABELS = [1.0, 1.0, 0.0, 1.0, 1.0, 0.0]


def test_confusion_precision_recall_accuracy_by_hand() -> None:
    # TP: 0.9, 0.8, 0.5 -> 3; FP: 0.6 -> 1; FN: 0.4 -> 1; TN: 0.1 -> 1
    assert confusion(SCORES, LABELS) == (3, 1, 1, 1)
    assert precision(SCORES, LABELS) == pytest.approx(3 / 4)
    assert recall(SCORES, LABELS) == pytest.approx(3 / 4)
    assert accuracy(SCORES, LABELS) == pytest.approx(4 / 6)
    # threshold 0.85: predicted positive only 0.9 (right) -> precision 1, recall 1/4
    assert precision(SCORES, LABELS, 0.85) == 1.0
    assert recall(SCORES, LABELS, 0.85) == pytest.approx(1 / 4)


def test_undefined_precision_and_recall_are_zero() -> None:
    assert precision([0.1, 0.2], [1.0, 0.0]) == 0.0  # nothing predicted positive
    assert recall([0.9, 0.2], [0.0, 0.0]) == 0.0  # nothing actually positive


def test_ece_equal_width_bins_by_hand() -> None:
    # bins of width 0.5: [0, 0.5) holds 0.4, 0.1 (mean score 0.25, mean label 0.5);
    # [0.5, 1] holds 0.9, 0.8, 0.6, 0.5 (mean score 0.7, mean label 0.75).
    # ECE = 2/6 * |0.25 - 0.5| + 4/6 * |0.7 - 0.75| = 1/12 + 1/30 = 0.11666...
    assert expected_calibration_error(SCORES, LABELS, bins=2) == pytest.approx(1 / 12 + 1 / 30)
    # one bin: |mean score - mean label| = |3.3/6 - 4/6| = 0.7/6
    assert expected_calibration_error(SCORES, LABELS, bins=1) == pytest.approx(0.7 / 6)
    # a score of exactly 1.0 falls in the last bin, not past it
    assert expected_calibration_error([1.0, 0.0], [1.0, 0.0], bins=10) == 0.0
    # soft labels: a perfectly calibrated constant predictor has ECE 0
    assert expected_calibration_error([0.25, 0.25], [0.0, 0.5]) == pytest.approx(0.0)


def test_brier_by_hand() -> None:
    # (0.01 + 0.04 + 0.36 + 0.25 + 0.36 + 0.01) / 6
    assert brier(SCORES, LABELS) == pytest.approx(1.03 / 6)
    assert brier([0.5], [0.25]) == pytest.approx(0.0625)


def test_auroc_by_hand() -> None:
    # positives 0.9, 0.8, 0.5, 0.4; negatives 0.6, 0.1. Pairs (pos above neg): 0.9 beats both, 0.8 both,
    # 0.5 beats 0.1 only, 0.4 beats 0.1 only -> 6 of 8
    assert auroc(SCORES, LABELS) == pytest.approx(6 / 8)
    assert auroc([0.5, 0.5, 0.5], [1.0, 0.0, 1.0]) == pytest.approx(0.5)  # ties count one half
    assert auroc([0.3, 0.7, 0.7], [0.0, 1.0, 0.0]) == pytest.approx(0.75)  # 0.7 vs 0.3: 1; 0.7 vs 0.7: 1/2
    assert auroc([0.2, 0.9], [1.0, 1.0]) == 0.5  # one class only
    assert auroc([0.9, 0.1], [0.0, 1.0]) == 0.0


def test_report_has_every_metric_and_the_base_rate() -> None:
    r = critic_report(SCORES, LABELS, bins=2)
    assert r["examples"] == 6
    assert r["positive_rate"] == pytest.approx(4 / 6)
    assert r["mean_score"] == pytest.approx(3.3 / 6)
    assert r["precision"] == pytest.approx(0.75) and r["recall"] == pytest.approx(0.75)
    assert r["ece"] == pytest.approx(1 / 12 + 1 / 30)
    assert r["auroc"] == pytest.approx(6 / 8)
    assert critic_report([], [])["examples"] == 0


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="2 scores but 1 labels"):
        precision([0.1, 0.2], [1.0])
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        brier([1.5], [1.0])
    with pytest.raises(ValueError, match="bins"):
        expected_calibration_error([0.5], [1.0], bins=0)
