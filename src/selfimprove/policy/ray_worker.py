"""One rollout worker of the Ray pool: an engine on a model folder, in its own process (a Ray actor).

It samples a shard of the prompts with a generator seeded by the pool (a function of the run's seed,
the call and the shard), receives the learner's weights with their version (for a LoRA learner it holds
the base model with the adapter's layout and receives only the adapter's tensors), and verifies answers
(sandbox runs, math-verify) for the tasks it is sent, so rewards never serialise a step. It is a plain
class: `ray_engine.py` wraps it with `ray.remote`, and the tests can run it in-process.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Mapping, Sequence

if TYPE_CHECKING:
    from selfimprove.policy.base import Completion, SamplingParams
    from selfimprove.tasks.base import Problem, Verdict


class RolloutWorker:
    """An HF engine on `source` (a model folder), sampling and verifying on request."""

    def __init__(self, source: str, *, device: str = "cpu", dtype: str = "float32", chat: bool = False,
                 seed: int = 0, threads: int = 1, layout: Any = None) -> None:
        import torch

        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        torch.set_num_threads(max(1, threads))  # two workers on two cores: one thread each
        from selfimprove.policy.hf import HFPolicy

        self.engine = HFPolicy.load(source, device=device, dtype=dtype, chat=chat, seed=seed)
        if layout is not None:  # a LoRA learner: the base from the folder, the adapter's tensors with each push
            from selfimprove.policy.lora import attach_layout

            attach_layout(self.engine, layout)
        self._tasks: dict[str, Any] = {}

    def ping(self) -> int:
        return os.getpid()

    def load_weights(self, weights: Mapping[str, Any], version: int) -> int:
        self.engine.load_weights(weights, version)
        return self.engine.weights_version

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], params: "SamplingParams", seed: int) -> list["Completion"]:
        return self.engine.generate_ids(prompt_ids, params, generator=self.engine.make_generator(seed))

    def verify(self, task_name: str, task_params: Mapping[str, Any], problems: Sequence["Problem"],
               texts: Sequence[str]) -> list["Verdict"]:
        """Judge answers with the task built from (name, params), kept for later calls."""
        import json

        from selfimprove.tasks.plugins import make_task

        key = f"{task_name}:{json.dumps(dict(task_params), sort_keys=True, default=str)}"
        if key not in self._tasks:
            self._tasks[key] = make_task(task_name, task_params)
        task = self._tasks[key]
        many = getattr(task, "verify_many", None)  # reward functions: one call for the worker's shard
        if many is not None:
            return list(many(problems, texts))
        return [task.verify(p, t) for p, t in zip(problems, texts, strict=True)]
