"""Asynchronous rollouts (`async: {max_staleness: k}`): the episodes of step t+1 are sampled while step t
trains, from weights at most k steps old; the loss corrects with the behaviour log-probs recorded at
sampling time (the clipped importance ratio of the recipe's surrogate).

The sampler must not be the model being trained, or a sample could mix weights from before and after
an optimizer step: the HF engine samples from a copy of the policy, refreshed (in the main thread,
between steps) when the next batch would otherwise be more than k steps stale; a Ray pool samples on
its workers and receives weights only at those refresh points. `max_staleness: 0` is the synchronous
loop itself (same code path, same numbers). The batch in flight is not checkpointed: a resumed run
samples it again, so an asynchronous run resumes from its checkpoints, but not bit for bit.
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

    `collect` is called with the sampler to use and returns the step's episodes and metrics; it is
    called in the main thread to draw problems (`prepare`) and in the worker thread to sample.
    """

    def __init__(self, policy: Engine, max_staleness: int, seed: int) -> None:
        if max_staleness < 1:
            raise ValueError("asynchronous rollouts need max_staleness >= 1 (0 is the synchronous loop)")
        self.policy = policy
        self.max_staleness = max_staleness
        self.sampler = self._make_sampler(policy, seed)
        self.sampler_step = -1  # the driver step whose weights the sampler holds (-1: none yet)
        self.pending: Future[T] | None = None
        self.pending_step = -1
        self.pending_staleness = 0
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rollouts")

    @staticmethod
    def _make_sampler(policy: Engine, seed: int) -> Sampler:
        if hasattr(policy, "actors"):  # a pool of workers: they sample; pushes only at refresh points
            policy.auto_push = False  # type: ignore[attr-defined]
            return policy
        from selfimprove.policy.hf import HFPolicy

        assert isinstance(policy, HFPolicy)
        sampler = HFPolicy(copy.deepcopy(policy.model), policy.tokenizer, chat=policy.chat, seed=seed + 1)
        sampler.model.requires_grad_(False)
        return sampler

    def _refresh(self, step: int) -> None:
        """Give the sampler the policy's current weights (main thread, between steps)."""
        if self.sampler is self.policy:
            self.policy.push()  # type: ignore[attr-defined]
        else:
            self.sampler.load_weights(self.policy.weight_state(), self.policy.weights_version)
        self.sampler_step = step

    def next(self, step: int, submit: Callable[[Sampler], Callable[[], T]]) -> tuple[T, int]:
        """The episodes for driver step `step` and their staleness (steps between the weights that
        sampled them and the policy's), and the next step's sampling started behind them.

        `submit(sampler)` draws the step's problems now and returns the function that samples them.
        """
        if self.pending is None or self.pending_step != step:
            self._refresh(step)
            result, staleness = submit(self.sampler)(), 0  # the first step (or after a resume): nothing in flight
        else:
            result, staleness = self.pending.result(), self.pending_staleness
        nxt = step + 1
        if nxt - self.sampler_step > self.max_staleness:
            self._refresh(step)  # the weights the policy has now: after `step` updates
        self.pending = self._pool.submit(submit(self.sampler))
        self.pending_step, self.pending_staleness = nxt, nxt - self.sampler_step
        return result, staleness

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __getstate__(self) -> dict[str, Any]:  # never pickled with a thread inside
        raise TypeError("AsyncRollouts is not picklable")
