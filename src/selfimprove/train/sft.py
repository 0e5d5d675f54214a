"""Supervised fine-tuning on a task's demonstrations (the start of every self-improvement run)."""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any

from selfimprove.config import SFTRecipe
from selfimprove.rollout.episode import collate
from selfimprove.rollout.single import demonstration_episode
from selfimprove.tasks.base import Problem, Task
from selfimprove.train.driver import Job, StepCallback, run_training
from selfimprove.train.objectives import sft_objective


def pool_index(position: int, pool: int, seed: int) -> int:
    """Problem index at a stream position: a fresh problem each time, or a pool reshuffled per epoch."""
    if pool <= 0:
        return position
    epoch, offset = divmod(position, pool)
    return _epoch_order(pool, seed, epoch)[offset]


@lru_cache(maxsize=4)
def _epoch_order(pool: int, seed: int, epoch: int) -> tuple[int, ...]:
    order = list(range(pool))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return tuple(order)


def pool_problems(task: Task, start: int, count: int, pool: int, seed: int) -> list[Problem]:
    """The train problems at stream positions start..start+count-1 (see `pool_index`)."""
    return [task.problem("train", pool_index(i, pool, seed)) for i in range(start, start + count)]


def sft_step(batch_size: int, pool: int = 0, seed: int = 0):
    """Each step trains on the next `batch_size` demonstrations; the position is a function of the step."""

    def step_fn(job: Job, step: int) -> dict[str, Any]:
        problems = pool_problems(job.task, step * batch_size, batch_size, pool, seed)
        episodes = [demonstration_episode(job.policy, job.task, p, group=i) for i, p in enumerate(problems)]
        stats = job.learner.step(collate(episodes, job.policy.pad_id), sft_objective)
        return {"train/loss": stats["loss"], "train/lr": stats["lr"], "train/grad_norm": stats["grad_norm"]}

    return step_fn


def run_sft(recipe: SFTRecipe, on_step: StepCallback | None = None) -> dict[str, Any]:
    return run_training(recipe, sft_step(recipe.batch_size, recipe.num_problems, recipe.seed), on_step=on_step)
