"""Where a GRPO step's time goes, ours and TRL's, in the same categories (used by `bench/vs_trl.py`).

Ours: the `time/<phase>` metrics every step logs (`selfimprove.timing`). TRL's: the trainer's methods
wrapped with clocks (`TRLClocks`). Both are folded into CATEGORIES; `bookkeeping` is what is left of
the measured step once the named parts are taken out (batch preparation, advantages, logging, the
rollout buffer, callbacks).

Per-chunk seconds come from the step clock by differences (`chunk_seconds`): `run_rl`'s `seconds`
continues across resumes, so a resumed chunk's last value counts every earlier chunk too.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Sequence

CATEGORIES = ("generation", "scoring", "ref/old log-probs", "forward/backward", "optimizer", "bookkeeping")

# our phases (selfimprove.timing) -> category; phases not named here are bookkeeping
OURS = {
    "generate": "generation",
    "score": "scoring",
    "reference": "ref/old log-probs",
    "old_logprobs": "ref/old log-probs",
    "forward_backward": "forward/backward",
    "optimizer": "optimizer",
}


def chunk_seconds(clocks: Sequence[Sequence[float]]) -> list[float]:
    """Seconds each chunk of steps took, from the step clock's values at each step of each chunk (the
    clock continues across the resumes between chunks): the difference of consecutive chunks' last values."""
    out, before = [], 0.0
    for chunk in clocks:
        if not chunk:
            out.append(0.0)
            continue
        out.append(chunk[-1] - before)
        before = chunk[-1]
    return out


def ours_breakdown(rows: Iterable[dict[str, Any]]) -> dict[str, float]:
    """Mean seconds per step in each category, from logged step metrics with `time/step`."""
    totals = dict.fromkeys(CATEGORIES, 0.0)
    steps = 0
    for row in rows:
        if "time/step" not in row:
            continue
        steps += 1
        named = 0.0
        for key, value in row.items():
            name = key.removeprefix("time/")
            if key.startswith("time/") and name in OURS:
                totals[OURS[name]] += float(value)
                named += float(value)
        totals["bookkeeping"] += float(row["time/step"]) - named
    return {k: v / max(steps, 1) for k, v in totals.items()}


class TRLClocks:
    """Clocks around a `GRPOTrainer`'s parts. Call `wrap(trainer, model)` once; then per step, between
    `begin()` and `end()` (the trainer's `on_step_begin` / `on_step_end` callbacks, with `optimized()` at
    `on_optimizer_step`), the parts add up.

    generation: `model.generate`; scoring: `_calculate_rewards` (the reward functions); ref/old
    log-probs: `_get_per_token_logps_and_entropies` called while preparing the batch; forward/backward:
    `training_step` less the batch preparation inside it; optimizer: from the end of `training_step` to
    `on_optimizer_step` (gradient clipping and `optimizer.step`)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.totals = dict.fromkeys(CATEGORIES, 0.0)
        self.steps = 0
        self.step_seconds = 0.0
        self._preparing = False
        self._prepare = 0.0
        self._part = dict.fromkeys(CATEGORIES, 0.0)
        self._began = 0.0
        self._trained = 0.0

    def _timed(self, fn: Callable[..., Any], after: Callable[[float], None]) -> Callable[..., Any]:
        def timed(*a: Any, **k: Any) -> Any:
            t0 = self.clock()
            try:
                return fn(*a, **k)
            finally:
                after(self.clock() - t0)

        return timed

    def wrap(self, trainer: Any, model: Any) -> None:
        def add(category: str) -> Callable[[float], None]:
            return lambda s: self._part.__setitem__(category, self._part[category] + s)

        def logps(s: float) -> None:
            if self._preparing:
                self._part["ref/old log-probs"] += s

        def prepared(s: float) -> None:
            self._prepare += s
            self._preparing = False

        def trained(s: float) -> None:
            self._part["forward/backward"] += s - self._prepare
            self._trained = self.clock()

        model.generate = self._timed(model.generate, add("generation"))
        trainer._calculate_rewards = self._timed(trainer._calculate_rewards, add("scoring"))
        trainer._get_per_token_logps_and_entropies = self._timed(trainer._get_per_token_logps_and_entropies, logps)
        prepare = self._timed(trainer._prepare_inputs, prepared)

        def preparing(*a: Any, **k: Any) -> Any:
            self._preparing = True
            return prepare(*a, **k)

        trainer._prepare_inputs = preparing
        trainer.training_step = self._timed(trainer.training_step, trained)

    def begin(self) -> None:
        self._began = self.clock()
        self._part = dict.fromkeys(CATEGORIES, 0.0)
        self._prepare = 0.0

    def optimized(self) -> None:
        """At `on_optimizer_step`: the optimizer part ends."""
        if self._trained > self._began:
            self._part["optimizer"] += self.clock() - self._trained

    def end(self) -> float:
        """At `on_step_end`: close the step; returns its seconds."""
        now = self.clock()
        step = now - self._began
        named = sum(v for k, v in self._part.items() if k != "bookkeeping")
        self._part["bookkeeping"] = step - named
        for k, v in self._part.items():
            self.totals[k] += v
        self.steps += 1
        self.step_seconds += step
        return step

    def breakdown(self) -> dict[str, float]:
        return {k: v / max(self.steps, 1) for k, v in self.totals.items()}


def breakdown_table(ours: dict[str, float], trl: dict[str, float]) -> str:
    """A per-phase table: seconds per step on each side and ours / TRL."""
    lines = [f"{'phase':<20} {'ours s/step':>12} {'TRL s/step':>11} {'ours/TRL':>9}"]
    for k in CATEGORIES:
        ratio = f"{ours[k] / trl[k]:.2f}" if trl[k] > 1e-4 else "-"
        lines.append(f"{k:<20} {ours[k]:>12.3f} {trl[k]:>11.3f} {ratio:>9}")
    total_o, total_t = sum(ours.values()), sum(trl.values())
    lines.append(f"{'total':<20} {total_o:>12.3f} {total_t:>11.3f} {total_o / max(total_t, 1e-9):>9.2f}")
    return "\n".join(lines)
