"""Two-attempt evaluation: SCoRe's metrics from greedy first and second attempts."""

from __future__ import annotations

from selfimprove.policy import HFPolicy
from selfimprove.tasks import make_task

PARAMS = {"num_numbers": 2, "max_number": 9, "min_target": 1, "max_target": 20}


def test_two_attempt_evaluation_reports_scores_metrics(small_policy: HFPolicy) -> None:
    from selfimprove.eval.selfcorrect import evaluate_two_attempts

    task = make_task("countdown", PARAMS)
    metrics, records = evaluate_two_attempts(small_policy, task, task.problems("test", 4), max_new_tokens=5)
    assert set(metrics) == {"acc_t1", "acc_t2", "delta", "delta_i_to_c", "delta_c_to_i", "edit_distance_ratio"}
    assert len(records) == 4 and all({"attempt1", "attempt2"} <= r.keys() for r in records)
    assert metrics["delta"] == metrics["delta_i_to_c"] - metrics["delta_c_to_i"]
