"""The arithmetic of bench/test_time.py (compute-optimal selection, interpolation) and of
bench/critic_levers.py (best-of-N and majority vote from one pool of samples), on hand-made records."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from critic_levers_report import best_of_n_accuracy, majority  # noqa: E402
from common import interpolate  # noqa: E402  (bench/common.py)
from test_time import compute_optimal, quantiles  # noqa: E402


def point(label: str, family: str, tokens: float, correct: dict[str, bool], scores: dict[str, float] | None = None) -> dict[str, Any]:
    records = {pid: {"correct": c, "tokens": tokens, "score": (scores or {}).get(pid)} for pid, c in correct.items()}
    return {"label": label, "family": family, "setting": {}, "tokens": tokens, "records": records,
            "accuracy": sum(correct.values()) / len(correct)}


def test_compute_optimal_picks_per_difficulty_bin_within_the_budget_by_hand() -> None:
    greedy_val = point("greedy", "none", 10, {"v0": False, "v1": False, "v2": True, "v3": True},
                       {"v0": 0.1, "v1": 0.2, "v2": 0.8, "v3": 0.9})
    val = [greedy_val,
           point("A", "learned", 100, {"v0": True, "v1": True, "v2": False, "v3": False}),
           point("B", "learned", 50, {"v0": True, "v1": False, "v2": True, "v3": True}),
           point("T", "tool", 20, {"v0": True, "v1": True, "v2": True, "v3": True})]  # tool critics never compete
    greedy_test = point("greedy", "none", 10, {"t0": True, "t1": False, "t2": False}, {"t0": 0.5, "t1": 0.95, "t2": 0.15})
    test = [greedy_test, point("A", "learned", 100, {"t0": True, "t1": True, "t2": True}),
            point("B", "learned", 50, {"t0": False, "t1": True, "t2": False})]
    assert quantiles([0.1, 0.2, 0.8, 0.9], 4) == [0.2, 0.8, 0.9]
    curve = compute_optimal(val, test, greedy_val["records"], greedy_test["records"], parts=4)
    # Bins on validation: v0, v1 -> 0; v2 -> 1; v3 -> 2; bin 3 is empty (falls back to all four problems).
    # Budget 32: greedy only. Budget 64: bin 0 -> B (1/2 against greedy's 0), bins 1 and 2 -> greedy (B ties
    # and costs more), bin 3 -> B (3/4 overall). Budget 128: bin 0 -> A (2/2); the rest as at 64.
    # Test: t0 (0.5 -> bin 1), t1 (0.95 -> bin 3), t2 (0.15 -> bin 0); a strategy other than greedy pays
    # the greedy answer's 10 tokens too.
    assert [c["budget"] for c in curve] == [32, 64, 128]
    assert [c["accuracy"] for c in curve] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert [c["tokens"] for c in curve] == pytest.approx([10, (10 + 60 + 60) / 3, (10 + 60 + 110) / 3])
    assert curve[1]["choice"] == {"0": "B {}", "1": "greedy {}", "2": "greedy {}", "3": "B {}"}
    assert curve[2]["choice"]["0"] == "A {}"


def test_a_budget_admits_a_strategy_up_to_ten_percent_over_it() -> None:
    """Four samples of 16 tokens cost a little over 64 on average: at budget 64, C (68 <= 70.4) is admitted,
    D (72) is not until budget 128."""
    greedy_val = point("greedy", "none", 16, {"v0": False, "v1": False}, {"v0": 0.1, "v1": 0.9})
    val = [greedy_val, point("C", "learned", 68, {"v0": True, "v1": False}), point("D", "learned", 72, {"v0": True, "v1": True})]
    greedy_test = point("greedy", "none", 16, {"t0": False}, {"t0": 0.5})
    test = [greedy_test, point("C", "learned", 68, {"t0": True}), point("D", "learned", 72, {"t0": True})]
    curve = compute_optimal(val, test, greedy_val["records"], greedy_test["records"], parts=2)
    assert [c["budget"] for c in curve] == [32, 64, 128]
    assert set(curve[0]["choice"].values()) == {"greedy {}"}
    assert set(curve[1]["choice"].values()) == {"C {}"} and set(curve[2]["choice"].values()) == {"D {}"}


def test_interpolation_is_linear_in_log_tokens() -> None:
    curve = [(10.0, 20.0), (1000.0, 40.0)]
    assert interpolate(curve, 100.0) == pytest.approx(30.0)
    assert interpolate(curve, 10.0) == 20.0 and math.isnan(interpolate(curve, 5.0))


def test_best_of_n_and_majority_from_one_pool_by_hand() -> None:
    right, scores = [[False, True, False, True]], [[0.9, 0.1, 0.2, 0.8]]
    assert best_of_n_accuracy(right, scores, 1) == 0.5
    assert best_of_n_accuracy(right, scores, 2) == 0.5  # groups (0, 1) -> 0: wrong; (2, 3) -> 3: right
    assert best_of_n_accuracy(right, scores, 4) == 0.0
    assert best_of_n_accuracy([[False, True]], [[0.5, 0.5]], 2) == 0.0  # a tie goes to the first
    rows = [[{"answer": "a", "right": False}, {"answer": "b", "right": True}, {"answer": "b", "right": True},
             {"answer": None, "right": False}]]
    assert majority(rows, 4) == 1.0
    assert majority(rows, 2) == 0.5  # (a, b): a tie, the first seen; (b, none): b


def test_the_larger_trunk_arms_come_last_and_leave_every_earlier_arm_as_named() -> None:
    import critic_levers
    from critic_levers_report import lever

    args = critic_levers.parse_args(["arms"])
    names = [a["name"] for a in critic_levers.arms(args)]
    # new arms go last, and the earlier names (their result files) stay
    assert names[-6:] == ["value-c8-pointwise-medium-s0", "prm-c8-pointwise-medium-s0", "orm-c8-pointwise-medium-s0",
                          "value-c8-pointwise-balanced-s0", "prm-c8-pointwise-balanced-s0", "orm-c8-pointwise-balanced-s0"]
    assert {"orm-c8-pointwise-scratch-s0", "orm-c8-pointwise-s0", "orm-c32-pointwise-s0", "prm-c8-pointwise-smooth1-s0"} <= set(names)
    assert len(names) == len(set(names)) == 39
    assert lever(critic_levers.arms(args)[-1], args) == "balanced classes, the rarer drawn again (8 chunks)"
    larger = critic_levers.arms(critic_levers.parse_args(["arms", "--larger", "large"]))[-4]
    assert larger["name"] == "orm-c8-pointwise-large-s0"
    assert lever(larger, args) == "trunk from a larger policy (large, SFT as the base; 8 chunks)"
