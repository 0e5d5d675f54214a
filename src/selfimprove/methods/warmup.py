"""Format warm-up for self-correction (issue 5): teach the layouts, not correction.

Before SCoRe, its baselines or Reflect-Retry-Reward can be compared, the tiny model must know the
two-attempt and reflect-retry layouts (without this its second attempt scores 0). The warm-up is SFT
on the same pool of demonstrations as the first SFT, in every layout, where the second attempt is the
problem's demonstration: a solution that does not depend on the first attempt (an *independent*
solution). The model learns where a second solution goes, and writes it as well as it writes a first
one; nothing in the data rewards changing a wrong first attempt more than a right one. The first
attempt is a temperature sample of the model itself (context only, never trained), so the layouts are
seen with realistic, often wrong, first attempts. A `single` layout keeps plain SFT on the same
demonstrations so the first turn does not drift. This model is the "base model" of every comparison.

Traces (trainable parts in capitals):
  single:        prompt | DEMO <eos>
  two_attempt:   prompt | y1 | instruction | DEMO <eos>
  reflect_retry: prompt | y1 | "wrong" feedback | REFLECTION | RETRY MARKER | DEMO <eos>
  self_refine:   prompt | y1 | neutral review marker | REFLECTION | RETRY MARKER | DEMO <eos>
with a fixed neutral reflection text (RRR's GRPO later learns which reflections help).

History: a first design trained the second attempt on an independent *sample of the model* instead of
the demonstration (lr 3e-4, 150 steps): SFT on the model's own temperature-1 samples is zero-mean
noise that sharpened the model into a collapse (every answer `777...`, Acc@t1 and Acc@t2 0%).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Sequence

from pydantic import Field

from selfimprove.config import SFTRecipe, Strict
from selfimprove.methods.base import register_method
from selfimprove.methods.sft import SFT
from selfimprove.policy.base import Sampler, SamplingParams
from selfimprove.rollout.correct import SHORT_INSTRUCTION
if TYPE_CHECKING:  # loaded when a run starts, not when a recipe is validated
    from selfimprove.rollout.episode import Episode
from selfimprove.rollout.reflect import FAILED_FEEDBACK, RETRY_PROMPT, REVIEW_FEEDBACK
from selfimprove.tasks.base import Problem, Task
from selfimprove.train.job import Job, StepCallback

Layout = Literal["single", "two_attempt", "reflect_retry", "self_refine"]


class WarmupConfig(Strict):
    layouts: list[Layout] = Field(default_factory=lambda: ["single", "two_attempt", "reflect_retry", "self_refine"], min_length=1)
    instruction: str = SHORT_INSTRUCTION
    feedback: str = FAILED_FEEDBACK
    review: str = REVIEW_FEEDBACK
    retry_prompt: str = RETRY_PROMPT
    reflection: str = " check each number."
    temperature: float = Field(1.0, gt=0.0)  # first attempts: the model's own samples
    max_new_tokens: int = Field(32, ge=1)


class WarmupRecipe(SFTRecipe):
    warmup: WarmupConfig = Field(default_factory=WarmupConfig)


def warmup_episodes(
    policy: Sampler, task: Task, problems: Sequence[Problem], config: WarmupConfig, *, group_offset: int = 0
) -> list[Episode]:
    """One trace per problem and layout; the first attempts are samples of `policy`, the second the demonstration."""
    from selfimprove.rollout.episode import Episode, Segment

    needs_attempt = any(layout != "single" for layout in config.layouts)
    params = SamplingParams(n=1, temperature=config.temperature, max_new_tokens=config.max_new_tokens)
    samples = policy.generate([p.prompt for p in problems], params) if needs_attempt else []
    eos = policy.eos_ids
    ids = {name: policy.encode_completion(getattr(config, name), add_eos=False)
           for name in ("instruction", "feedback", "review", "retry_prompt", "reflection")}
    episodes = []
    for k, problem in enumerate(problems):
        demo_text = task.target_text(problem)
        demo = Segment("demo", policy.encode_completion(demo_text), trainable=True, reward=1.0, text=demo_text)
        prompt = Segment("prompt", policy.encode_prompt(problem.prompt))
        first = Segment("attempt", samples[k].without_eos(eos)[0], text=samples[k].text) if needs_attempt else None
        reflection = Segment("reflection", ids["reflection"], trainable=True, text=config.reflection)
        # The retry marker is trained too: it is how the model learns where its reflection ends (RRR
        # and self-refine stop a reflection at the marker's newline). Without it the tiny model ran on
        # past the reflection until its token limit.
        retry = Segment("retry_prompt", ids["retry_prompt"], trainable=True, text=config.retry_prompt)
        for layout in config.layouts:
            if layout == "single":
                segments = [prompt, demo]
            elif layout == "two_attempt":
                segments = [prompt, first, Segment("instruction", ids["instruction"], text=config.instruction), demo]
            else:
                said = "feedback" if layout == "reflect_retry" else "review"
                segments = [prompt, first, Segment("feedback", ids[said], text=getattr(config, said)), reflection, retry, demo]
            episodes.append(Episode(list(segments), group=group_offset + k, problem_id=problem.id, reward=1.0, info={"layout": layout}))
    return episodes


@register_method
class Warmup(SFT):
    """SFT on the pool of demonstrations, every layout per problem (the stream is plain SFT's)."""

    name = "warmup"
    command = "warmup"
    help = "format warm-up: teach the two-attempt and reflect-retry layouts (self-correction base model)"
    Recipe = WarmupRecipe

    def label(self) -> str:
        return "format warm-up"

    def step(self, job: Job, step: int) -> dict[str, Any]:
        from selfimprove.rollout.episode import collate
        from selfimprove.train.objectives import sft_objective

        drawn = job.stream.take(job.task, self.recipe.batch_size)
        episodes = warmup_episodes(job.policy, job.task, drawn.problems, self.recipe.warmup, group_offset=drawn.start)
        stats = job.learner.step(collate(episodes, job.policy.pad_id), sft_objective)
        return {"train/loss": stats["loss"], "train/lr": stats["lr"], "train/grad_norm": stats["grad_norm"]}


def run_warmup(recipe: WarmupRecipe, on_step: StepCallback | None = None) -> dict[str, Any]:
    return Warmup(recipe).run(on_step)
