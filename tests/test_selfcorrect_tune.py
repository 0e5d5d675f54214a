"""bench/selfcorrect_tune.py's choice of RRR settings, on made-up validation numbers."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from selfcorrect_tune import choose_rrr, seed_changes, training_minutes  # noqa: E402


def _row(first: float, retry: float) -> dict:
    return {"before": {"first_accuracy": 0.40, "retry_accuracy": 0.45}, "after": {"first_accuracy": first, "retry_accuracy": retry}}


def test_the_best_retry_among_runs_that_kept_the_first_attempt() -> None:
    rows = {"paper": _row(0.30, 0.50), "kept": _row(0.395, 0.46), "kept-better": _row(0.41, 0.47), "lost": _row(0.385, 0.60)}
    # "paper" and "lost" fell more than 1 point (0.385 < 0.39); of the two kept, the better retry wins
    assert choose_rrr(rows) == "kept-better"


def test_none_kept_the_least_forgetting_then_the_better_retry() -> None:
    rows = {"a": _row(0.386, 0.40), "b": _row(0.386, 0.41), "c": _row(0.30, 0.60)}
    assert choose_rrr(rows) == "b"  # a and b both lost 1.4 points; b's retry is higher


def test_training_minutes_sum_every_candidates_own_seconds() -> None:
    seeds = {"a": {"per_seed": [{"train_seconds": 60.0}, {"train_seconds": 120.0}]}, "base": {"per_seed": [{"train_seconds": 0}]}}
    result = {"score": {"summary": {"methods": seeds}}, "budget": {"summary": {"methods": {"b": {"per_seed": [{"train_seconds": 300.0}]}}}},
              "rrr-countdown": {"runs": {"x": {"train_seconds": 240.0}, "y": {"train_seconds": None}}}, "seconds": 5.0}
    # 60 + 120 + 0 + 300 + 240 seconds = 12 minutes; the invocations' wall time (5 s) plays no part
    assert training_minutes(result) == 12.0


def test_seed_changes_mean_and_standard_error_in_points() -> None:
    per_seed = [{"seed": s, "before": {"first_accuracy": 0.40, "retry_accuracy": 0.45},
                 "after": {"first_accuracy": f, "retry_accuracy": r}} for s, (f, r) in enumerate([(0.42, 0.46), (0.40, 0.44), (0.41, 0.45)])]
    out = seed_changes(per_seed)
    # first: +2, 0, +1 points -> mean 1, sample std 1, s.e. 1/sqrt(3); retry: +1, -1, 0 -> mean 0, s.e. 1/sqrt(3)
    assert out["first_change"] == pytest.approx(1.0) and out["first_change_se"] == pytest.approx(3 ** -0.5)
    assert out["retry_change"] == pytest.approx(0.0) and out["retry_change_se"] == pytest.approx(3 ** -0.5)
