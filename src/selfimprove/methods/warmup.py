"""Format warm-up for self-correction (issue 5): teach the layout, not correction.

Before SCoRe or Reflect-Retry-Reward can be compared, the tiny model must know the two-attempt and
reflect-retry layouts (without it its second attempt scores 0). The warm-up SFTs on traces whose
second attempt is an *independent* sample of the model from the first prompt alone, never a fix of
the first attempt: the model learns where a second solution goes, while Acc@t2 stays about Acc@t1.
(Training the second attempt on the canonical demonstration would teach "copy" or "always write the
right answer" instead.) This warm-up model is the "base model" of every comparison.

Two-attempt trace:  prompt | y1 | instruction | y2 (trainable) <eos>
Reflect-retry trace: prompt | y1 | feedback | reflection (trainable) | retry marker | y2 (trainable) <eos>
with y1, y2 ~ pi(. | prompt) independently, and a fixed neutral reflection text (RRR's GRPO later
learns which reflections help).

Status (issue 5, not finished): the first measurement collapsed the demo's SFT model (150 steps at
lr 3e-4 from the demo SFT model: every answer became `777...`, Acc@t1 and Acc@t2 0%). Tune before
use: a lower lr, an SFT loss on the original demonstrations for the first turn, a lower temperature
for the independent samples. Not yet wired into the CLI.
"""

from __future__ import annotations

from typing import Any, Literal, Sequence

from pydantic import Field

from selfimprove.config import SFTRecipe, Strict
from selfimprove.policy.base import SamplingParams
from selfimprove.policy.hf import HFPolicy
from selfimprove.rollout.correct import SHORT_INSTRUCTION
from selfimprove.rollout.episode import Episode, Segment, collate
from selfimprove.rollout.reflect import FAILED_FEEDBACK, RETRY_PROMPT
from selfimprove.tasks.base import Problem
from selfimprove.train.driver import Job, StepCallback, run_training
from selfimprove.train.objectives import sft_objective

Layout = Literal["two_attempt", "reflect_retry"]


class WarmupConfig(Strict):
    layouts: list[Layout] = Field(default_factory=lambda: ["two_attempt", "reflect_retry"])
    instruction: str = SHORT_INSTRUCTION
    feedback: str = FAILED_FEEDBACK
    retry_prompt: str = RETRY_PROMPT
    reflection: str = " check each number."
    temperature: float = Field(1.0, gt=0.0)
    max_new_tokens: int = Field(32, ge=1)


class WarmupRecipe(SFTRecipe):
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)


def warmup_episodes(
    policy: HFPolicy, problems: Sequence[Problem], config: WarmupConfig, *, group_offset: int = 0
) -> list[Episode]:
    """One trace per problem and layout, from two independent samples of the current policy."""
    params = SamplingParams(n=2, temperature=config.temperature, max_new_tokens=config.max_new_tokens)
    samples = policy.generate([p.prompt for p in problems], params)
    eos = policy.eos_ids
    text_ids = {name: policy.encode_completion(getattr(config, name), add_eos=False)
                for name in ("instruction", "feedback", "retry_prompt", "reflection")}
    episodes = []
    for k, problem in enumerate(problems):
        y1, y2 = samples[2 * k], samples[2 * k + 1]
        first = y1.without_eos(eos)[0]
        second = y2.without_eos(eos)[0] + [eos[0]]
        for layout in config.layouts:
            if layout == "two_attempt":
                segments = [
                    Segment("prompt", list(y1.prompt_ids)),
                    Segment("attempt1", first, text=y1.text),
                    Segment("instruction", text_ids["instruction"], text=config.instruction),
                    Segment("attempt2", second, trainable=True, text=y2.text),
                ]
            else:
                segments = [
                    Segment("prompt", list(y1.prompt_ids)),
                    Segment("attempt", first, text=y1.text),
                    Segment("feedback", text_ids["feedback"], text=config.feedback),
                    Segment("reflection", text_ids["reflection"], trainable=True, text=config.reflection),
                    Segment("retry_prompt", text_ids["retry_prompt"], text=config.retry_prompt),
                    Segment("retry", second, trainable=True, text=y2.text),
                ]
            episodes.append(Episode(segments, group=group_offset + k, problem_id=problem.id, info={"layout": layout}))
    return episodes


def warmup_step(recipe: WarmupRecipe):
    per_step = recipe.batch_size

    def step_fn(job: Job, step: int) -> dict[str, Any]:
        problems = job.task.problems("train", per_step, start=step * per_step)
        episodes = warmup_episodes(job.policy, problems, recipe.warmup, group_offset=step * per_step)
        stats = job.learner.step(collate(episodes, job.policy.pad_id), sft_objective)
        return {"train/loss": stats["loss"], "train/lr": stats["lr"], "train/grad_norm": stats["grad_norm"]}

    return step_fn


def run_warmup(recipe: WarmupRecipe, on_step: StepCallback | None = None) -> dict[str, Any]:
    return run_training(recipe, warmup_step(recipe), on_step=on_step)
