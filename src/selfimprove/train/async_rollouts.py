"""Asynchronous rollouts (`async: {max_staleness: k}`): the episodes of step t+1 are sampled while step t
trains, from weights at most k steps old; the episodes keep the sampler's log-probs (the behaviour
policy's), which the loss uses for the ratio or for `loss.rollout_correction`.

The sampler is never the model being trained, or a sample could mix weights from before and after an
optimizer step: the HF engine samples from a copy of the policy, refreshed (in the main thread, between
steps) when the next batch would otherwise be more than k steps stale; a Ray pool samples on its
workers through a pinned view (`RayEngine.pinned`) whose weights move only at those refresh points,
while evaluation samples with the newest weights. `max_staleness: 0` is the synchronous loop itself.

Exact resume: `state_dict` waits for the batch in flight and returns it with everything needed to go
on as if never stopped (the batch, its staleness, the sampler's step, its random stream, and its
weights when the next sample would still use them), so a run killed and resumed gives every metric
and the final weights of an uninterrupted run. Nothing is sampled for a step past the run's last (its
step count, or the step whose tokens spend the budget).
"""

from __future__ import annotations

import copy
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Generic, TypeVar

from selfimprove.policy.base import Engine, Sampler

T = TypeVar("T")

__all__ = ["AsyncRollouts"]


class AsyncRollouts(Generic[T]):
    """Runs `collect(sampler)` one step ahead in a background thread (see the module docstring).

    `submit(sampler)` is called in the main thread to draw a step's problems and returns the function
    that samples them, which runs in the rollout thread.
    """

    def __init__(self, policy: Engine, max_staleness: int, seed: int, last_step: int | None = None) -> None:
        if max_staleness < 1:
            raise ValueError("asynchronous rollouts need max_staleness >= 1 (0 is the synchronous loop)")
        self.policy = policy
        self.max_staleness = max_staleness
        self.last_step = last_step  # the run's last step (0-based): nothing is sampled past it
        self.sampler = self._make_sampler(policy, seed)
        self.sampler_step = -1  # the driver step whose weights the sampler holds (-1: none yet)
        self.pending: Future[T] | None = None
        self.pending_step = -1
        self.pending_staleness = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollouts")

    @property
    def pinned(self) -> bool:
        return hasattr(self.sampler, "pin")

    @staticmethod
    def _make_sampler(policy: Engine, seed: int) -> Sampler:
        if hasattr(policy, "pinned"):  # a pool of workers: they sample with weights pinned at refresh points
            return policy.pinned(policy.snapshot())  # type: ignore[attr-defined]
        from selfimprove.policy.hf import HFPolicy

        if not isinstance(policy, HFPolicy):
            raise ValueError(f"asynchronous rollouts need the hf or ray engine, not {type(policy).__name__}")
        sampler = HFPolicy(copy.deepcopy(policy.model), policy.tokenizer, chat=policy.chat, seed=seed + 1)
        sampler.model.requires_grad_(False)
        return sampler

    def _refresh(self, step: int) -> None:
        """Give the sampler the policy's current weights (main thread, between steps)."""
        if self.pinned:
            self.sampler.pin(self.policy.snapshot())  # type: ignore[attr-defined]
        else:
            self.sampler.load_weights(self.policy.weight_state(), self.policy.weights_version)
        self.sampler_step = step

    def next(self, step: int, submit: Callable[[Sampler], Callable[[], T]],
             ends_run: Callable[[T], bool] | None = None) -> tuple[T, int]:
        """The episodes for driver step `step` and their staleness (steps between the weights that
        sampled them and the policy's), and the next step's sampling started behind them, unless this
        is the run's last step (`last_step`, or `ends_run(result)`: e.g. its tokens spend the budget)."""
        if self.pending is None or self.pending_step != step:
            self._refresh(step)
            result, staleness = submit(self.sampler)(), 0  # the first step: nothing in flight
        else:
            result, staleness = self.pending.result(), self.pending_staleness
        self.pending = None
        nxt = step + 1
        if (self.last_step is not None and nxt > self.last_step) or (ends_run is not None and ends_run(result)):
            return result, staleness
        if nxt - self.sampler_step > self.max_staleness:
            self._refresh(step)  # the weights the policy has now: after `step` updates
        self.pending = self._pool.submit(submit(self.sampler))
        self.pending_step, self.pending_staleness = nxt, nxt - self.sampler_step
        return result, staleness

    def wait(self) -> None:
        """Let the batch in flight finish (its sampling stream and the pool are then settled)."""
        if self.pending is not None:
            self.pending.result()

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly (see the module docstring)."""
        self.wait()
        state: dict[str, Any] = {"sampler_step": self.sampler_step, "pending_step": self.pending_step if self.pending else -1,
                                 "pending_staleness": self.pending_staleness,
                                 "pending": self.pending.result() if self.pending is not None else None,
                                 "sampler_version": self.sampler.weights_version}
        if not self.pinned:
            state["sampler_rng"] = self.sampler.rng_state()
        # The next call refreshes before it samples unless the sampler's weights are still fresh enough:
        # only then do they have to be kept (they are older than the checkpoint's model).
        if self.pending is not None and (self.pending_step + 1) - self.sampler_step <= self.max_staleness:
            if self.pinned:
                state["sampler_weights"] = self.policy.fetch(self.sampler.snapshot)  # type: ignore[attr-defined]
            else:
                state["sampler_weights"] = {k: v.detach().cpu().clone() for k, v in self.sampler.weight_state().items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler_step = int(state["sampler_step"])
        if "sampler_rng" in state and not self.pinned:
            self.sampler.set_rng_state(state["sampler_rng"])
        weights = state.get("sampler_weights")
        if weights is not None:
            version = int(state["sampler_version"])
            if self.pinned:
                self.sampler.pin(self.policy.put(weights, version))  # type: ignore[attr-defined]
            else:
                self.sampler.load_weights(weights, version)
        self.pending = None
        if state.get("pending") is not None:
            done: Future[T] = Future()
            done.set_result(state["pending"])
            self.pending, self.pending_step = done, int(state["pending_step"])
            self.pending_staleness = int(state["pending_staleness"])

    def close(self) -> None:
        """Join the rollout thread (a sample in progress finishes; nothing new starts)."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __getstate__(self) -> dict[str, Any]:  # never pickled with a thread inside
        raise TypeError("AsyncRollouts is not picklable")
