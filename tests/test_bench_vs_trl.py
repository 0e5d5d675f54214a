"""bench/vs_trl.py's arithmetic: per-chunk seconds from a step clock that continues across resumes, and
the per-phase breakdown of each side (bench/step_phases.py), on made-up clocks."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from step_phases import CATEGORIES, TRLClocks, breakdown_table, chunk_seconds, ours_breakdown  # noqa: E402


def test_chunks_are_timed_by_differences_of_a_clock_that_continues_across_resumes() -> None:
    # 0.4 s per step, chunks of 2 steps; each resumed chunk's clock starts where the last one stopped
    clocks = [[0.4, 0.8], [1.2, 1.6], [2.0, 2.4], [2.8, 3.2]]
    per_step = [s / len(c) for s, c in zip(chunk_seconds(clocks), clocks)]
    assert per_step == pytest.approx([0.4] * 4)  # the last value alone read 0.4, 0.8, 1.2, 1.6 (growing)
    assert sum(chunk_seconds(clocks)) == pytest.approx(3.2)
    assert chunk_seconds([[0.5], [], [1.5]]) == pytest.approx([0.5, 0.0, 1.0])


def test_our_breakdown_folds_phases_into_categories_and_the_rest_into_bookkeeping() -> None:
    rows = [
        {"time/step": 1.0, "time/generate": 0.3, "time/score": 0.1, "time/forward_backward": 0.4, "time/optimizer": 0.05,
         "time/advantages": 0.01, "time/log": 0.02, "time/other": 0.12},
        {"time/step": 2.0, "time/generate": 0.5, "time/reference": 0.2, "time/old_logprobs": 0.1, "time/forward_backward": 1.0,
         "time/other": 0.2},
        {"note": "not a step"},
    ]
    got = ours_breakdown(rows)
    assert got == pytest.approx({"generation": 0.4, "scoring": 0.05, "ref/old log-probs": 0.15, "forward/backward": 0.7,
                                 "optimizer": 0.025, "bookkeeping": (0.15 + 0.2) / 2})
    assert sum(got.values()) == pytest.approx(1.5)  # the mean step


class Clock:
    """A made-up clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


clock = Clock()


class FakeModel:
    def generate(self, *a, **k):
        clock.sleep(0.02)


class FakeTrainer:
    """Calls its parts in the order `GRPOTrainer.training_step` does."""

    def __init__(self, model: FakeModel) -> None:
        self.model = model

    def _calculate_rewards(self, *a):
        clock.sleep(0.01)

    def _get_per_token_logps_and_entropies(self, *a):
        clock.sleep(0.01)

    def _prepare_inputs(self, batch):
        self.model.generate()
        self._calculate_rewards()
        self._get_per_token_logps_and_entropies()  # old log-probs while preparing
        return batch

    def training_step(self, batch):
        self._prepare_inputs(batch)
        self._get_per_token_logps_and_entropies()  # the loss's forward
        clock.sleep(0.02)  # backward


def test_trl_clocks_split_a_step_into_the_same_categories() -> None:
    model = FakeModel()
    trainer = FakeTrainer(model)
    clocks = TRLClocks(clock=clock)
    clocks.wrap(trainer, model)
    for _ in range(2):
        clocks.begin()
        clock.sleep(0.003)  # the dataloader
        trainer.training_step({})
        clock.sleep(0.01)  # clipping and the optimizer
        clocks.optimized()
        clock.sleep(0.005)  # scheduler, zero_grad
        clocks.end()
    got = clocks.breakdown()
    assert got == pytest.approx({"generation": 0.02, "scoring": 0.01, "ref/old log-probs": 0.01,  # not the loss's forward
                                 "forward/backward": 0.03, "optimizer": 0.01, "bookkeeping": 0.008})
    assert set(got) == set(CATEGORIES)
    assert clocks.step_seconds == pytest.approx(2 * 0.088)
    table = breakdown_table(got, got)
    assert "forward/backward" in table and table.splitlines()[-1].split()[-1] == "1.00"
