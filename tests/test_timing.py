"""Where a step's time goes: exclusive phases add up per thread (on a made-up clock), and a run logs
`time/<phase>` that sum to its step, a periodic evaluation (phases inside a phase) included."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from test_rl_algorithms import bandit_recipe

from selfimprove import timing
from selfimprove.methods.rl import run_rl
from selfimprove.train.runlog import read_metrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_phases_are_exclusive_add_up_per_thread_and_take_resets(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(timing, "clock", clock)
    timing.take()
    with timing.phase("eval"):
        clock.now += 1.0
        with timing.phase("score"):  # eval pauses while its scoring runs
            clock.now += 2.0
            with timing.phase("score"):  # the same phase again inside: counted once
                clock.now += 0.5
        clock.now += 0.25
    with timing.phase("score"):
        clock.now += 4.0
    elsewhere: dict[str, float] = {}

    def other_thread() -> None:
        with timing.phase("generate"):
            clock.now += 8.0
        elsewhere.update(timing.take())

    t = threading.Thread(target=other_thread)
    t.start()
    t.join()
    # by hand: eval 1 + 0.25; score 2 + 0.5 + 4; generate on the other thread only
    assert timing.take() == pytest.approx({"eval": 1.25, "score": 6.5})
    assert elsewhere == pytest.approx({"generate": 8.0})
    assert timing.take() == {}


def test_a_decorated_function_is_its_phase(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(timing, "clock", clock)
    timing.take()

    @timing.timed("generate")
    def sample(seconds: float) -> str:
        clock.now += seconds
        return "done"

    with timing.phase("eval"):
        assert sample(3.0) == "done"
    assert timing.take() == pytest.approx({"eval": 0.0, "generate": 3.0})


def test_a_run_logs_phases_that_sum_to_the_step(small_model_dir: Path, tmp_path: Path) -> None:
    recipe = bandit_recipe(tmp_path / "run", small_model_dir, steps=3,
                           schedule={"checkpoint_every": 1, "eval_every": 2, "eval_problems": 4},
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
        assert row["time/other"] >= 0  # the named phases never add up to more than the step
    assert "time/eval" in rows[1] and "time/eval" not in rows[0]  # step 2 evaluated: its own sampling is generate
    # the checkpoint after step k is counted in step k+1's record
    assert "time/checkpoint" not in rows[0] and "time/checkpoint" in rows[1]
