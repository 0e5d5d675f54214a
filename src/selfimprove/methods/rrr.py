"""Reflect, Retry, Reward (Bensal et al. 2025; SPECS §3) on the shared learner.

Each step: take the next `prompts_per_step` training problems from the driver's stream, sample
`rrr.failure_samples` first attempts per problem and keep the problems with a failed attempt, then
`sampling.n` reflections per failure with one retry each (`rollout/reflect.py`). Reward 1 if the retry
is right. The recipe's estimator (GRPO by default) turns rewards into advantages over the G reflections
of each failure; only reflection tokens are trainable, so attempt and retry tokens get no gradient by
the mask. One pass of `PolicyGradientObjective` (or the recipe's epochs x minibatches).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from pydantic import Field, field_validator, model_validator

from selfimprove.config import RLRecipe, Strict
from selfimprove.methods.base import register_method
from selfimprove.methods.rl import PolicyGradientMethod
from selfimprove.policy.base import Sampler, SamplingParams
from selfimprove.rollout.reflect import (
    FAILED_FEEDBACK,
    RETRY_PROMPT,
    attempt_episodes,
    episodes_for_failures,
    failures_of,
    sample_attempts,
    sample_failures,
)
from selfimprove.tasks.base import Problem, Task
from selfimprove.train.job import Job, MethodState, StepCallback


class RRRConfig(Strict):
    feedback: str = FAILED_FEEDBACK  # says only that the attempt failed; never the answer or the reason
    retry_prompt: str = RETRY_PROMPT  # between the reflection and the retry
    # Retries in training: 0 = greedy, as at inference, so a reflection's reward depends on the
    # reflection only. None: sample retries like reflections (measured on the tiny model: the retry's
    # sampling noise swamps the reflection's effect; 100 steps lowered retry accuracy 41.4% -> 33.4%).
    retry_temperature: float | None = Field(0.0, ge=0.0)
    failure_samples: int = Field(1, ge=1)  # first attempts per problem when building the failure set
    eval_problems: int = Field(0, ge=0)  # >0: `evaluate_rrr` on this many held-out problems before and after training
    # Anti-forgetting (issue 15): also train the first attempts with the verifier's reward, at this per-token
    # weight, one group per problem of `failure_samples` attempts (0: off, the paper's RRR). With
    # `loss.kl_scope: generated` and `loss.kl_coef` the attempts and retries are held to the start too.
    first_attempt_weight: float = Field(0.0, ge=0.0)

    @field_validator("feedback", "retry_prompt")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v


class RRRRecipe(RLRecipe):
    rrr: RRRConfig = Field(default_factory=RRRConfig)

    @model_validator(mode="after")
    def _first_attempts_need_groups(self) -> "RRRRecipe":
        if self.rrr.first_attempt_weight > 0 and self.rrr.failure_samples < 2:
            raise ValueError("rrr.first_attempt_weight needs rrr.failure_samples >= 2 (a group of one attempt has no advantage)")
        return self


@dataclass
class RRRState(MethodState):
    """Held-out accuracy before and after training (with `rrr.eval_problems` > 0)."""

    rrr_before: dict[str, float] | None = None
    rrr_after: dict[str, float] | None = None


@register_method
class RRR(PolicyGradientMethod):
    name = "rrr"
    command = "rrr"
    help = "Reflect-Retry-Reward: GRPO on the reflections that led to a successful retry"
    Recipe = RRRRecipe
    State = RRRState

    def label(self) -> str:
        return "reflect-retry-reward"

    def step(self, job: Job, step: int) -> dict[str, Any]:
        recipe, c = self.recipe, self.recipe.rrr
        state: RRRState = job.state  # type: ignore[assignment]
        drawn = job.stream.take(job.task, recipe.prompts_per_step)
        metrics: dict[str, Any] = {}
        if c.eval_problems and state.rrr_before is None:
            state.rrr_before = self._held_out_eval(job)
            metrics.update({f"eval/rrr_before_{k}": v for k, v in state.rrr_before.items()})
        firsts: list[Any] = []
        if c.first_attempt_weight > 0:
            completions, verdicts = sample_attempts(job.policy, job.task, drawn.problems, self.params, c.failure_samples)
            failed = failures_of(drawn.problems, completions, verdicts)
            first_accuracy = sum(v.correct for v in verdicts) / max(1, len(verdicts))
            attempt_tokens = sum(x.num_tokens for x in completions)
            # Group ids past any reflection group's (those are drawn.start + failure index).
            firsts = attempt_episodes(drawn.problems, completions, verdicts, c.first_attempt_weight,
                                      group_offset=drawn.start + 10 * recipe.prompts_per_step)
        else:
            failed, first_accuracy, attempt_tokens = sample_failures(job.policy, job.task, drawn.problems, self.params,
                                                                     c.failure_samples)
        episodes = episodes_for_failures(
            job.policy, job.task, failed, self.params, feedback=c.feedback, retry_prompt=c.retry_prompt,
            group_offset=drawn.start, retry_temperature=c.retry_temperature,
        )
        metrics.update({
            "train/first_accuracy": first_accuracy,
            "train/failures": float(len(failed)),
            "train/retry_accuracy": sum(bool(e.info["correct_retry"]) for e in episodes) / len(episodes) if episodes else 0.0,
            "train/reward": sum(e.reward for e in episodes) / len(episodes) if episodes else 0.0,
            "train/reflection_tokens": sum(e.num_trainable for e in episodes) / len(episodes) if episodes else 0.0,
            "train/sampled_tokens": float(attempt_tokens + sum(
                len(s.token_ids) for e in episodes for s in e.segments if s.kind in ("reflection", "retry"))),
        })
        episodes = [e for e in episodes if e.num_trainable > 0] + firsts
        if firsts:
            metrics["train/first_attempt_episodes"] = float(len(firsts))
        if episodes:
            metrics.update(self.learn(job, episodes, step))
        # else: every attempt was right (or no reflection has a token): nothing to learn this step.
        if c.eval_problems and step == recipe.steps - 1:
            state.rrr_after = self._held_out_eval(job)
            metrics.update({f"eval/rrr_after_{k}": v for k, v in state.rrr_after.items()})
        return metrics

    def _held_out_eval(self, job: Job) -> dict[str, float]:
        problems = job.task.distinct_problems(self.recipe.eval.split, self.recipe.rrr.eval_problems, self.recipe.eval.start)
        return evaluate_rrr(job.policy, job.task, problems, self.recipe.rrr, max_new_tokens=self.recipe.eval.max_new_tokens)

    def summarise(self, job: Job) -> dict[str, Any]:
        state: RRRState = job.state  # type: ignore[assignment]
        return {k: v for k, v in (("rrr_before", state.rrr_before), ("rrr_after", state.rrr_after)) if v is not None}


def evaluate_rrr(
    policy: Sampler,
    task: Task,
    problems: Sequence[Problem],
    config: RRRConfig | None = None,
    *,
    max_new_tokens: int = 32,
    batch_size: int = 64,
) -> dict[str, float]:
    """Greedy accuracy at the first attempt and after one reflect-and-retry on the failures.

    `retry_accuracy` counts a problem right if its first attempt was right or, when the verifier said it
    failed, its retry was right (the paper's inference protocol). `fixed` is the fraction of failures
    the retry fixed.
    """
    import torch

    with torch.no_grad():  # sampling only
        config = config or RRRConfig()
        greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
        first_right = fixed = failed_total = 0
        for i in range(0, len(problems), batch_size):
            chunk = list(problems[i : i + batch_size])
            attempts = policy.generate([p.prompt for p in chunk], greedy)
            right = [task.verify(chunk[a.prompt_index], a.text).correct for a in attempts]
            first_right += sum(right)
            failed = [(chunk[a.prompt_index], a) for a, ok in zip(attempts, right) if not ok]
            failed_total += len(failed)
            episodes = episodes_for_failures(policy, task, failed, greedy, feedback=config.feedback, retry_prompt=config.retry_prompt)
            fixed += sum(bool(e.info["correct_retry"]) for e in episodes)
        n = max(1, len(problems))
        return {
            "first_accuracy": first_right / n,
            "retry_accuracy": (first_right + fixed) / n,
            "fixed": fixed / max(1, failed_total),
            "num_problems": float(len(problems)),
        }


def run_rrr(recipe: RRRRecipe, on_step: StepCallback | None = None) -> dict[str, Any]:
    """Train with RRR; the summary also holds `rrr_before` / `rrr_after` when `rrr.eval_problems` > 0."""
    return RRR(recipe).run(on_step)
