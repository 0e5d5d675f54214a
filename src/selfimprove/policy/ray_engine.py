"""The Ray engine (`engine: {kind: ray, workers: N}`): the learner trains a local HF model; N Ray actors
(`ray_worker.RolloutWorker`) sample and verify. Behind the `Engine` boundary, so no method changes.

- **Sharding**: a call's prompts are cut into N contiguous shards, one per worker, and the completions
  come back in prompt order (`prompt_index` offset to the whole call).
- **Seeds**: shard k of sampling call c draws from a generator seeded by SHA-256 of (seed, c, k), so a
  run is reproducible for a fixed N; the call counter is checkpointed (`rng_state`). A caller that
  passes its own generator (evaluation, search) gets shard seeds drawn from it instead.
- **Weights**: the learner calls `load_weights(weight_state(), step)` after every update; the pool
  pushes the weights (one `ray.put`, shared by all workers) before the next sampling call, and every
  completion records the version it was sampled with.
- **Faults**: a worker that dies is replaced (same model, current weights) and its shard retried; the
  event is logged. The call completes.
- **Verification**: `verify_many` judges answers on the workers (sandbox runs and math-verify in
  parallel), in prompt order.

Ray starts locally on first use (`num_cpus` = workers x cpus_per_worker, a small object store, the
dashboard off, nothing written under the home folder) unless `address` names a running cluster
(`ray start --head`, then `address: auto`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from selfimprove.policy.base import Completion, SamplingParams
from selfimprove.policy.wrapped import LocalLearnerEngine, derived_seed

if TYPE_CHECKING:
    import torch

    from selfimprove.policy.hf import HFPolicy
    from selfimprove.tasks.base import Problem, Task, Verdict

logger = logging.getLogger(__name__)

OBJECT_STORE_BYTES = 256 * 2**20  # weights of small models; a cluster started by the user sizes its own
MAX_RETRIES = 3


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


def ensure_ray(address: str | None, num_cpus: float) -> None:
    """Start (or join) Ray once per process."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # Ray 2.60 would write a token under the home folder
    if address:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    else:
        ray.init(num_cpus=max(1, int(round(num_cpus))), object_store_memory=OBJECT_STORE_BYTES, include_dashboard=False,
                 log_to_driver=False, configure_logging=False)


def _free_cpus(needed: float, wait: float = 15.0) -> float:
    """The cluster's free CPUs, waiting up to `wait` seconds for them (killed actors free theirs a
    moment later)."""
    import time

    import ray

    deadline = time.time() + wait
    while True:
        free = float(ray.available_resources().get("CPU", 0.0))
        if free + 1e-9 >= needed or time.time() > deadline:
            return free
        time.sleep(0.2)


class RayEngine(LocalLearnerEngine):
    """An `Engine`: trainable like the local `HFPolicy` it wraps, sampling on a pool of Ray actors."""

    def __init__(self, local: HFPolicy, *, workers: int = 2, seed: int = 0, address: str | None = None,
                 cpus_per_worker: float = 1.0, device: str = "cpu", dtype: str = "float32") -> None:
        import ray

        from selfimprove.policy.lora import is_lora
        from selfimprove.policy.ray_worker import RolloutWorker

        if is_lora(local):
            raise ValueError("engine.kind ray does not train LoRA adapters yet: use engine.kind hf with lora")
        if workers < 1:
            raise ValueError(f"engine.workers must be >= 1, got {workers}")
        super().__init__(local, seed)
        self.workers = workers
        self._pushed = -1
        ensure_ray(address, workers * cpus_per_worker)
        free = _free_cpus(workers * cpus_per_worker)
        if free + 1e-9 < workers * cpus_per_worker:
            raise RuntimeError(
                f"engine.kind ray: {workers} workers x {cpus_per_worker:g} CPU need {workers * cpus_per_worker:g} CPUs, the Ray "
                f"cluster has {free:g} free (another pool still running?): lower engine.workers or cpus_per_worker"
            )
        self._folder = Path(tempfile.mkdtemp(prefix="selfimprove-ray-"))
        local.save(self._folder)  # the workers start from exactly the learner's weights
        self._actor_cls = ray.remote(num_cpus=cpus_per_worker)(RolloutWorker)
        self._options = {"device": device, "dtype": dtype, "chat": local.chat, "seed": seed, "threads": max(1, int(cpus_per_worker))}
        self.actors = [self._start() for _ in range(workers)]
        ray.get([a.ping.remote() for a in self.actors], timeout=600)
        self._pushed = local.weights_version  # they loaded these weights from the folder
        self.restarts = 0
        self.auto_push = True  # False: asynchronous rollouts push at their own refresh points

    def _start(self) -> Any:
        return self._actor_cls.remote(str(self._folder), **self._options)

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
        self.actors = []
        shutil.rmtree(self._folder, ignore_errors=True)

    def push(self) -> None:
        """Send the learner's weights to the workers if they changed since the last push."""
        import ray

        version = self.local.weights_version
        if version == self._pushed:
            return
        weights = ray.put({k: v.detach().cpu() for k, v in self.local.weight_state().items()})
        ray.get([a.load_weights.remote(weights, version) for a in self.actors])
        self._pushed = version

    # ------------------------------------------------------------------ Sampler: the pool
    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *,
                     generator: "torch.Generator | None" = None) -> list[Completion]:
        if not prompt_ids:
            return []
        if self.auto_push:
            self.push()
        base = self.seed_for(generator)
        parts = shards(len(prompt_ids), len(self.actors))
        seeds = [shard_seed(*base, k) for k in range(len(parts))]
        results = self._map(lambda actor, k: actor.generate_ids.remote([list(prompt_ids[i]) for i in parts[k]], params, seeds[k]),
                            len(parts))
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

    def _map(self, submit: Any, count: int) -> list[Any]:
        """Run `submit(actor, k)` for shards 0..count-1 on workers 0..count-1; replace a dead worker and
        retry its shard."""
        import ray
        from ray.exceptions import RayActorError

        futures = {k: submit(self.actors[k], k) for k in range(count)}
        results: dict[int, Any] = {}
        for k in range(count):
            for attempt in range(MAX_RETRIES + 1):
                try:
                    results[k] = ray.get(futures[k])
                    break
                except RayActorError as err:
                    if attempt == MAX_RETRIES:
                        raise
                    logger.warning("rollout worker %d died (%s): restarted, its shard retried", k, type(err).__name__)
                    self.restarts += 1
                    self.actors[k] = self._start()
                    if self._pushed >= 0:
                        weights = ray.put({n: v.detach().cpu() for n, v in self.local.weight_state().items()})
                        ray.get(self.actors[k].load_weights.remote(weights, self._pushed))
                    futures[k] = submit(self.actors[k], k)
        return [results[k] for k in range(count)]
