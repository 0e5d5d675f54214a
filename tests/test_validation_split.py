"""A validation split of *train* problems (`eval.split: train` + `eval.start`): tuning never sees the test split."""

from __future__ import annotations

import pytest

from selfimprove.config import EvalConfig
from selfimprove.errors import DataError
from selfimprove.methods.compare import _aggregate, summary_table
from selfimprove.tasks.plugins import make_task
from selfimprove.train.preflight import check_split_sizes

COUNTDOWN = {"num_numbers": 3, "max_number": 20, "min_target": 10, "max_target": 50}


def test_start_skips_the_first_problems_of_the_split() -> None:
    task = make_task("countdown", COUNTDOWN)
    far = task.distinct_problems("train", 20, start=1_000_000)
    assert far[0] == task.problem("train", 1_000_000)
    assert len({p.prompt for p in far}) == 20 and far != task.distinct_problems("train", 20)
    # Still train problems: never a test one (a generated task may repeat a prompt training drew).
    assert {p.prompt for p in far}.isdisjoint(p.prompt for p in task.distinct_problems("test", 500))


def test_a_finite_split_has_no_problems_past_its_end(tmp_path) -> None:
    rows = "\n".join(f'{{"question": "{i}+1?", "answer": "{i + 1}"}}' for i in range(30))
    (tmp_path / "d.jsonl").write_text(rows + "\n")
    task = make_task("dataset", {"path": str(tmp_path / "d.jsonl"), "prompt_field": "question", "answer_field": "answer",
                                 "test_fraction": 0.5, "min_test_problems": 1})
    size = task.size("train")
    assert len(task.distinct_problems("train", 3, start=size - 3)) == 3
    with pytest.raises(ValueError, match=f"from index {size - 2}"):  # no wrap-around into the first problems
        task.distinct_problems("train", 3, start=size - 2)

    class Recipe:
        eval = EvalConfig(split="train", start=size, num_problems=1)

    with pytest.raises(DataError, match="eval.start"):
        check_split_sizes(task, Recipe())
    Recipe.eval = EvalConfig(split="train", start=size - 2, num_problems=3)
    with pytest.raises(DataError, match=f"has 2 problems from eval.start {size - 2}"):
        check_split_sizes(task, Recipe())


def test_compare_reports_the_standard_error_over_seeds() -> None:
    rows = [{"acc_t1": a, "acc_t2": b, "delta": b - a, "delta_i_to_c": 0.1, "delta_c_to_i": 0.1 - (b - a),
             "edit_distance_ratio": 0.1, "sampled_tokens": 10} for a, b in ((0.30, 0.32), (0.34, 0.40), (0.38, 0.42))]
    out = _aggregate(rows)
    # acc_t1 0.30/0.34/0.38: mean 0.34, sample std 0.04, s.e. 0.04 / sqrt(3) = 0.023094
    assert out["acc_t1"] == pytest.approx(0.34) and out["acc_t1_se"] == pytest.approx(0.04 / 3 ** 0.5)
    # delta 0.02/0.06/0.04: mean 0.04, std 0.02, s.e. 0.011547
    assert out["delta_se"] == pytest.approx(0.02 / 3 ** 0.5)
    summary = {"seeds": [0, 1, 2], "budget_tokens": 10, "methods": {"m": out},
               "eval": {"num_problems": 200, "split": "train", "start": 1_000_000}}
    table = summary_table(summary)
    assert "| 34.0 ± 2.3 |" in table and "4.0 ± 1.2" in table
    assert "from index 1,000,000 (validation)" in table and "standard error" in table


def test_a_run_evaluates_the_problems_from_its_start(small_policy) -> None:
    from types import SimpleNamespace

    from selfimprove.train.driver import run_eval

    task = make_task("countdown", COUNTDOWN)
    job = SimpleNamespace(task=task, policy=small_policy, env=None)
    result = run_eval(job, EvalConfig(split="train", start=1_000_000, num_problems=3, max_new_tokens=4), 3, seed=0)
    assert [r["prompt"] for r in result.records] == [p.prompt for p in task.distinct_problems("train", 3, start=1_000_000)]
