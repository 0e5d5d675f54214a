"""Where a step's time goes: phases add up per thread, and a run logs `time/<phase>` that sum to its step."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from test_rl_algorithms import bandit_recipe

from selfimprove import timing
from selfimprove.methods.rl import run_rl
from selfimprove.train.runlog import read_metrics


def test_phases_add_up_per_thread_and_take_resets() -> None:
    timing.take()
    with timing.phase("a"):
        time.sleep(0.02)
    with timing.phase("a"):
        time.sleep(0.01)
    elsewhere: dict[str, float] = {}

    def other_thread() -> None:
        with timing.phase("b"):
            time.sleep(0.01)
        elsewhere.update(timing.take())

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    mine = timing.take()
    assert set(mine) == {"a"} and 0.03 <= mine["a"] < 0.5
    assert set(elsewhere) == {"b"}  # another thread's phases are its own
    assert timing.take() == {}


def test_a_run_logs_phases_that_sum_to_the_step(small_model_dir: Path, tmp_path: Path) -> None:
    recipe = bandit_recipe(tmp_path / "run", small_model_dir, steps=3, schedule={"checkpoint_every": 1, "eval_every": 0},
                           loss={"estimator": "grpo", "kl_coef": 0.01})
    run_rl(recipe)
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "time/step" in r]
    assert len(rows) == 3
    for i, row in enumerate(rows):
        phases = {k: v for k, v in row.items() if k.startswith("time/") and k != "time/step"}
        expected = ("generate", "score", "reference", "advantages", "forward_backward", "optimizer", "other")
        for name in expected + (("log",) if i else ()):  # the previous step's metrics line
            assert f"time/{name}" in phases, (name, sorted(phases))
        assert "time/old_logprobs" not in phases  # one epoch, one minibatch: the update's own forward gives them
        assert abs(sum(phases.values()) - row["time/step"]) < 1e-3
    # the checkpoint after step k is counted in step k+1's record
    assert "time/checkpoint" not in rows[0] and rows[1]["time/checkpoint"] > 0
    assert rows[1]["time/step"] <= rows[1]["seconds"] - rows[0]["seconds"] + 0.05
