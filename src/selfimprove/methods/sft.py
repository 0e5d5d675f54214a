"""Supervised fine-tuning on a task's demonstrations (the start of every self-improvement run)."""

from __future__ import annotations

import random
from typing import Any

from typing import TYPE_CHECKING

from selfimprove.config import SFTRecipe
from selfimprove.methods.base import Method, register_method
from selfimprove.train.stream import PoolStream, ProblemStream

if TYPE_CHECKING:
    from selfimprove.train.job import Job, StepCallback


@register_method
class SFT(Method[SFTRecipe]):
    """Each step trains on the next `batch_size` demonstrations of the pool (`num_problems`; 0: a fresh
    problem every time), reshuffled every epoch."""

    name = "sft"
    command = "sft"
    help = "supervised fine-tuning on a task's demonstrations"
    Recipe = SFTRecipe

    def make_stream(self) -> ProblemStream:
        return PoolStream(self.recipe.num_problems, self.recipe.seed)

    def step(self, job: Job, step: int) -> dict[str, Any]:
        from selfimprove.rollout.episode import collate
        from selfimprove.rollout.imagine import imagine_episodes
        from selfimprove.rollout.single import demonstration_episode
        from selfimprove.train.objectives import sft_objective

        drawn = job.stream.take(job.task, self.recipe.batch_size)
        episodes = [demonstration_episode(job.policy, job.task, p, group=i) for i, p in enumerate(drawn.problems)]
        layout = self.recipe.imagine
        if layout is not None:
            k = max(1, round(layout.fraction * len(drawn.problems)))
            rng = random.Random(f"imagine-sft:{self.recipe.seed}:{step}")
            episodes += imagine_episodes(job.policy, drawn.problems[:k], rng, layout.seeds_in_prompt, group_offset=len(episodes))
        stats = job.learner.step(collate(episodes, job.policy.pad_id), sft_objective)
        return {"train/loss": stats["loss"], "train/lr": stats["lr"], "train/grad_norm": stats["grad_norm"]}


def run_sft(recipe: SFTRecipe, on_step: StepCallback | None = None) -> dict[str, Any]:
    return SFT(recipe).run(on_step)
