"""The Ray engine (`engine: {kind: ray, workers: N}`): the learner trains a local HF model; N Ray actors
(`ray_worker.RolloutWorker`) sample and verify. Behind the `Engine` boundary, so no method changes.

- **Sharding**: a call's prompts are cut into N contiguous shards, one per worker, and the completions
  come back in prompt order (`prompt_index` offset to the whole call).
- **Seeds**: shard k of sampling call c draws from a generator seeded by SHA-256 of (seed, c, k), so a
  run is reproducible for a fixed N; the call counter is checkpointed (`rng_state`). A caller that
  passes its own generator (evaluation, search) gets shard seeds drawn from it instead.
- **Weights**: a `Snapshot` is the learner's weights at one version, put once in Ray's object store
  (for a LoRA policy only the adapter's tensors: the workers hold the base and the adapter's layout).
  A sampling call says which snapshot it samples with; a worker that holds another version loads it
  first, and every completion records the version it was sampled with. `generate` samples with the
  learner's newest weights (taken in the calling thread: the one that trains); `pinned(snapshot)` is a
  view that samples with fixed weights, for asynchronous rollouts sampling while the learner updates.
  Calls are serialised by a lock, so a pinned view and the newest weights never mix within a call.
- **Faults**: a worker that dies, or whose call outlasts `call_timeout`, is killed and replaced; the
  replacement loads the weights of the snapshot its call was told (never the learner's current ones)
  and the shard is retried, up to `max_retries` times (`engine.max_retries`); then `PoolError` ends the
  run with one line.
- **Verification**: `verify_many` judges answers on the workers (sandbox runs and math-verify in
  parallel), in prompt order.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from selfimprove.errors import PoolError, UserError
from selfimprove.policy.base import Completion, SamplerWrapper, SamplingParams
from selfimprove.policy.ray_cluster import ANSI, ensure_ray, free_cpus, object_store_bytes
from selfimprove.policy.wrapped import LocalLearnerEngine, derived_seed
from selfimprove.timing import timed

if TYPE_CHECKING:
    import torch

    from selfimprove.policy.hf import HFPolicy
    from selfimprove.tasks.base import Problem, Task, Verdict

logger = logging.getLogger(__name__)

STARTUP_SECONDS = 120.0  # a new worker loads its model before it answers


def shard_seed(*parts: object) -> int:
    """Shard k of sampling call c: seeded by (seed, c, k)."""
    return derived_seed(*parts)


def shards(n: int, parts: int) -> list[range]:
    """`n` items cut into `parts` contiguous, balanced ranges (empty ones dropped)."""
    size, extra = divmod(n, parts)
    out, start = [], 0
    for k in range(parts):
        end = start + size + (1 if k < extra else 0)
        if end > start:
            out.append(range(start, end))
        start = end
    return out


def first_line(err: BaseException) -> str:
    """An exception's first line without Ray's terminal colours."""
    text = ANSI.sub("", str(err)).strip()
    return text.splitlines()[0] if text else type(err).__name__


@dataclass(frozen=True)
class Snapshot:
    """The learner's weights at `version`, in Ray's object store (`ref`)."""

    version: int
    ref: Any


class RayEngine(LocalLearnerEngine):
    """An `Engine`: trainable like the local `HFPolicy` it wraps, sampling on a pool of Ray actors."""

    def __init__(self, local: HFPolicy, *, workers: int = 2, seed: int = 0, address: str | None = None,
                 cpus_per_worker: float = 1.0, device: str = "cpu", dtype: str = "float32", call_timeout: float = 600.0,
                 max_retries: int = 3) -> None:
        import ray

        from selfimprove.policy.lora import adapter_layout, is_lora, save_base
        from selfimprove.policy.ray_worker import RolloutWorker

        if workers < 1:
            raise ValueError(f"engine.workers must be >= 1, got {workers}")
        super().__init__(local, seed)
        self.workers = workers
        self.call_timeout = call_timeout
        self.max_retries = max_retries
        self.restarts = 0
        self._lock = threading.RLock()
        ensure_ray(address, workers * cpus_per_worker, object_store_bytes(local))
        free = free_cpus(workers * cpus_per_worker)
        if free + 1e-9 < workers * cpus_per_worker:
            raise RuntimeError(
                f"engine.kind ray: {workers} workers x {cpus_per_worker:g} CPU need {workers * cpus_per_worker:g} CPUs, the Ray "
                f"cluster has {free:g} free (another pool still running?): lower engine.workers or cpus_per_worker"
            )
        self._folder = Path(tempfile.mkdtemp(prefix="selfimprove-ray-"))
        layout = None
        if is_lora(local):  # workers hold the base and the adapter's layout; adapter tensors come with each push
            save_base(local, self._folder)
            layout = adapter_layout(local)
        else:
            local.save(self._folder)
        self._actor_cls = ray.remote(num_cpus=cpus_per_worker)(RolloutWorker)
        self._options = {"device": device, "dtype": dtype, "chat": local.chat, "seed": seed,
                         "threads": max(1, int(cpus_per_worker)), "layout": layout}
        self.actors = [self._start() for _ in range(workers)]
        ray.get([a.ping.remote() for a in self.actors], timeout=max(call_timeout, STARTUP_SECONDS))
        # The weights version each worker holds; None: the start folder's, which no snapshot names (a resumed
        # run restores versions older than the folder's weights), so a worker's first call always loads.
        self._held: list[int | None] = [None] * workers
        self._newest: Snapshot | None = None

    def _start(self) -> Any:
        return self._actor_cls.remote(str(self._folder), **self._options)

    def close(self) -> None:
        import ray

        with self._lock:
            for actor in self.actors:
                ray.kill(actor)
            self.actors = []
            self._newest = None
        shutil.rmtree(self._folder, ignore_errors=True)

    # ------------------------------------------------------------------ weights
    def snapshot(self) -> Snapshot:
        """The learner's weights now, in the object store (one `ray.put` per version). Call it from the
        thread that trains, between updates."""
        import ray

        version = self.local.weights_version
        if self._newest is None or self._newest.version != version:
            weights = {k: v.detach().cpu() for k, v in self.local.weight_state().items()}
            self._newest = Snapshot(version, ray.put(weights))
        return self._newest

    def fetch(self, snapshot: Snapshot) -> dict[str, Any]:
        """A snapshot's tensors, back in this process (to checkpoint a pinned sampler's weights)."""
        import ray

        return ray.get(snapshot.ref, timeout=self.call_timeout)

    def put(self, weights: dict[str, Any], version: int) -> Snapshot:
        """A snapshot of given weights (a checkpointed pinned sampler's, restored)."""
        import ray

        return Snapshot(version, ray.put(weights))

    def pinned(self, snapshot: Snapshot) -> "PinnedPool":
        return PinnedPool(self, snapshot)

    def push(self) -> None:
        """Send the learner's newest weights to every worker now (sampling also does it when needed)."""
        self._map(lambda actor, k: actor.ping.remote(), len(self.actors), self.snapshot())

    # ------------------------------------------------------------------ Sampler: the pool
    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *,
                     generator: "torch.Generator | None" = None) -> list[Completion]:
        """Sample with the learner's newest weights."""
        if not prompt_ids:
            return []
        return self.sample(prompt_ids, params, generator, self.snapshot())

    @timed("generate")
    def sample(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, generator: "torch.Generator | None",
               snapshot: Snapshot) -> list[Completion]:
        """Sample on the workers with the weights of `snapshot`."""
        if not prompt_ids:
            return []
        with self._lock:
            base = self.seed_for(generator)
            parts = shards(len(prompt_ids), len(self.actors))
            seeds = [shard_seed(*base, k) for k in range(len(parts))]
            results = self._map(lambda actor, k: actor.generate_ids.remote([list(prompt_ids[i]) for i in parts[k]], params,
                                                                          seeds[k]), len(parts), snapshot)
        out: list[Completion] = []
        for part, completions in zip(parts, results):
            for c in completions:
                c.prompt_index += part.start
                out.append(c)
        return out

    def verify_many(self, task: "Task", problems: Sequence["Problem"], texts: Sequence[str]) -> list["Verdict"]:
        """Judge `texts` (one per problem) on the workers, in order."""
        if not texts:
            return []
        params = task.config.model_dump(mode="json")
        parts = shards(len(texts), len(self.actors))
        results = self._map(lambda actor, k: actor.verify.remote(task.name, params, [problems[i] for i in parts[k]],
                                                                  [texts[i] for i in parts[k]]), len(parts))
        return [v for verdicts in results for v in verdicts]

    # ------------------------------------------------------------------ calls and faults
    def _submit(self, k: int, submit: Callable[[Any, int], Any], snapshot: Snapshot | None) -> list[Any]:
        """Worker k's futures for one shard: a weight load when it holds another version, then the call.
        A worker runs its calls in the order they were sent, so the call sees the loaded weights."""
        futures = []
        if snapshot is not None and self._held[k] != snapshot.version:
            futures.append(self.actors[k].load_weights.remote(snapshot.ref, snapshot.version))
            self._held[k] = snapshot.version
        futures.append(submit(self.actors[k], k))
        return futures

    def _replace(self, k: int) -> None:
        """Kill worker k (dead, or hung: it would hold its CPU for ever) and start a new one from the start
        folder, waiting until it is up (its start is not part of a call's time limit)."""
        import ray

        try:
            ray.kill(self.actors[k], no_restart=True)
        except Exception:  # already gone
            pass
        self.restarts += 1
        self.actors[k] = self._start()
        self._held[k] = None
        ray.get(self.actors[k].ping.remote(), timeout=max(self.call_timeout, STARTUP_SECONDS))

    def _map(self, submit: Callable[[Any, int], Any], count: int, snapshot: Snapshot | None = None) -> list[Any]:
        """Run `submit(actor, k)` for shards 0..count-1 on workers 0..count-1 (after loading `snapshot`'s
        weights where a worker holds another version); replace a dead or hung worker and retry its shard."""
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        with self._lock:
            futures = {k: self._submit(k, submit, snapshot) for k in range(count)}
            deadlines = dict.fromkeys(futures, time.monotonic() + self.call_timeout)  # each shard's own clock
            results: dict[int, Any] = {}
            for k in range(count):
                for attempt in range(self.max_retries + 1):
                    try:
                        results[k] = ray.get(futures[k], timeout=max(0.0, deadlines[k] - time.monotonic()))[-1]
                        break
                    except (RayActorError, GetTimeoutError) as err:
                        why = "timed out" if isinstance(err, GetTimeoutError) else "died"
                        tries = f"{attempt + 1} time{'s' * (attempt > 0)} in a row"
                        failure = f"engine.kind ray: rollout worker {k} {why} {tries} ({first_line(err)})"
                        try:
                            self._replace(k)  # a hung worker would hold its CPU for ever; the pool stays whole
                        except Exception as start_err:  # noqa: BLE001 - the replacement itself failed
                            raise PoolError(f"{failure}; its replacement did not start ({first_line(start_err)})") from start_err
                        if attempt == self.max_retries:
                            raise PoolError(failure) from err
                        logger.warning("rollout worker %d %s (%s): replaced, its shard retried", k, why, type(err).__name__)
                        futures[k] = self._submit(k, submit, snapshot)
                        deadlines[k] = time.monotonic() + self.call_timeout
                    except RayTaskError as err:
                        cause = err.cause if getattr(err, "cause", None) is not None else err
                        if isinstance(cause, UserError):  # the user's code failed on a worker (a reward
                            raise cause from err  # function): the run stops as it would here
                        raise PoolError(f"engine.kind ray: rollout worker {k} failed: {type(cause).__name__}: "
                                        f"{first_line(cause)}") from err
            return [results[k] for k in range(count)]


class PinnedPool(SamplerWrapper):
    """The pool sampling with the weights of one snapshot (`pin` moves it): what asynchronous rollouts
    sample with while the learner updates. Everything else is the pool's."""

    def __init__(self, pool: RayEngine, snapshot: Snapshot) -> None:
        super().__init__(pool)
        self.pool = pool
        self.snapshot = snapshot

    @property
    def weights_version(self) -> int:
        return self.snapshot.version

    def pin(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def generate(self, prompts: Sequence[str], params: SamplingParams, *, generator: "torch.Generator | None" = None
                 ) -> list[Completion]:
        return self.generate_ids([self.pool.local.encode_prompt(p) for p in prompts], params, generator=generator)

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *,
                     generator: "torch.Generator | None" = None) -> list[Completion]:
        return self.pool.sample(prompt_ids, params, generator, self.snapshot)
