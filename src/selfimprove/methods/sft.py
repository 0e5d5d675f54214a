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
    supports_env = True

    def __init__(self, recipe: SFTRecipe) -> None:
        super().__init__(recipe)
        self._demos: dict[str, Any] = {}  # an environment's worked conversations, by problem id (the pool repeats)

    def make_stream(self) -> ProblemStream:
        return PoolStream(self.recipe.num_problems, self.recipe.seed)

    def step(self, job: Job, step: int) -> dict[str, Any]:
        from selfimprove.rollout.episode import collate
        from selfimprove.rollout.imagine import imagine_episodes
        from selfimprove.rollout.demonstrations import recorded_episode
        from selfimprove.rollout.single import demonstration_episode
        from selfimprove.train.objectives import sft_objective

        drawn = job.stream.take(job.task, self.recipe.batch_size)
        episodes = self.demonstrations(job, drawn.problems) if job.env is not None else [
            recorded_episode(job.policy, p.metadata["messages"], p.metadata.get("tool_schemas", []), group=i,
                             problem_id=p.id) if "messages" in p.metadata
            else demonstration_episode(job.policy, job.task, p, group=i) for i, p in enumerate(drawn.problems)]
        layout = self.recipe.imagine
        if layout is not None:
            k = max(1, round(layout.fraction * len(drawn.problems)))
            rng = random.Random(f"imagine-sft:{self.recipe.seed}:{step}")
            episodes += imagine_episodes(job.policy, drawn.problems[:k], rng, layout.seeds_in_prompt, group_offset=len(episodes))
        stats = job.learner.step(collate(episodes, job.policy.pad_id), sft_objective)
        return {"train/loss": stats["loss"], "train/lr": stats["lr"], "train/grad_norm": stats["grad_norm"]}


    def demonstrations(self, job: Job, problems: list[Any]) -> list[Any]:
        """The environment's worked conversations for these problems (tools really run; each problem's
        once, then from memory); problems it has none for are skipped, and none at all is an error."""
        from selfimprove.errors import UserError
        from selfimprove.rollout.demonstrations import demonstration_episodes

        assert job.env is not None
        if len(self._demos) > 50_000:  # a pool that never repeats (num_problems 0): keep memory bounded
            self._demos.clear()
        missing = [p for p in dict((p.id, p) for p in problems).values() if p.id not in self._demos]
        if missing:
            for p, e in zip(missing, demonstration_episodes(job.policy, job.env.env, missing)):
                self._demos[p.id] = e
        episodes = [self._demos[p.id] for p in problems if self._demos[p.id] is not None]
        if not episodes:
            raise UserError(f"env: {job.env.env.describe()} has no worked conversation for these problems "
                            f"(e.g. {problems[0].id}); SFT through an environment needs its demonstrations")
        return [_regrouped(e, i) for i, e in enumerate(episodes)]


def _regrouped(episode: Any, group: int) -> Any:
    from selfimprove.rollout.episode import Episode

    return Episode(episode.segments, group, episode.problem_id, info=episode.info, sum_turns=episode.sum_turns)


def run_sft(recipe: SFTRecipe, on_step: StepCallback | None = None) -> dict[str, Any]:
    return SFT(recipe).run(on_step)
