"""Reflect, Retry, Reward (Bensal et al. 2025; SPECS §3) on the shared learner.

Each step: take the next `prompts_per_step` training problems (cursor in the job state), sample
`rrr.failure_samples` first attempts per problem and keep the problems with a failed attempt, then
`sampling.n` reflections per failure with one retry each (`rollout/reflect.py`). Reward 1 if the retry
is right. The recipe's estimator (GRPO by default) turns rewards into advantages over the G reflections
of each failure; only reflection tokens are trainable, so attempt and retry tokens get no gradient by
the mask. One pass of `PolicyGradientObjective` (or the recipe's epochs x minibatches).
"""

from __future__ import annotations

import json
from pathlib import Path

from typing import Any, Sequence

import torch
from pydantic import Field, field_validator

from selfimprove.config import RLRecipe, Strict
from selfimprove.policy.base import SamplingParams
from selfimprove.policy.hf import HFPolicy
from selfimprove.rollout.episode import collate
from selfimprove.rollout.reflect import FAILED_FEEDBACK, RETRY_PROMPT, episodes_for_failures, sample_failures
from selfimprove.tasks.base import Problem, Task
from selfimprove.train.driver import Job, StepCallback, run_training
from selfimprove.train.loop import prepare, sampling_params, shape_rewards, update, value_model_factory
from selfimprove.train.objectives import PolicyGradientObjective


class RRRConfig(Strict):
    feedback: str = FAILED_FEEDBACK  # says only that the attempt failed; never the answer or the reason
    retry_prompt: str = RETRY_PROMPT  # between the reflection and the retry
    # Retries in training: 0 = greedy, as at inference, so a reflection's reward depends on the
    # reflection only. None: sample retries like reflections (measured on the tiny model: the retry's
    # sampling noise swamps the reflection's effect; 100 steps lowered retry accuracy 41.4% -> 33.4%).
    retry_temperature: float | None = Field(0.0, ge=0.0)
    failure_samples: int = Field(1, ge=1)  # first attempts per problem when building the failure set
    eval_problems: int = Field(0, ge=0)  # >0: `evaluate_rrr` on this many held-out problems before and after training

    @field_validator("feedback", "retry_prompt")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be blank")
        return v


class RRRRecipe(RLRecipe):
    rrr: RRRConfig = Field(default_factory=RRRConfig)


def rrr_step(recipe: RRRRecipe):
    params = sampling_params(recipe)
    objective = PolicyGradientObjective(recipe.loss, max_len=recipe.sampling.max_new_tokens)
    c = recipe.rrr

    def step_fn(job: Job, step: int) -> dict[str, Any]:
        cursor = int(job.state.get("cursor", recipe.first_problem))
        problems = job.task.problems("train", recipe.prompts_per_step, start=cursor)
        job.state["cursor"] = cursor + recipe.prompts_per_step
        metrics: dict[str, Any] = {}
        if c.eval_problems and "rrr_before" not in job.state:
            job.state["rrr_before"] = _held_out_eval(job, recipe)
            metrics.update({f"eval/rrr_before_{k}": v for k, v in job.state["rrr_before"].items()})
        failed, first_accuracy, attempt_tokens = sample_failures(job.policy, job.task, problems, params, c.failure_samples)
        episodes = episodes_for_failures(
            job.policy, job.task, failed, params, feedback=c.feedback, retry_prompt=c.retry_prompt, group_offset=cursor,
            retry_temperature=c.retry_temperature,
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
        episodes = [e for e in episodes if e.num_trainable > 0]
        if episodes:
            shape_rewards(episodes, recipe)
            batch = collate(episodes, job.policy.pad_id)
            prepare(job, batch, recipe)
            metrics.update(update(job, batch, objective, recipe.loss, recipe.seed, step))
        # else: every attempt was right (or no reflection has a token): nothing to learn this step.
        if c.eval_problems and step == recipe.steps - 1:
            after = _held_out_eval(job, recipe)
            job.state["rrr_after"] = after
            metrics.update({f"eval/rrr_after_{k}": v for k, v in after.items()})
        return metrics

    return step_fn


def _held_out_eval(job: Job, recipe: RRRRecipe) -> dict[str, float]:
    problems = job.task.distinct_problems(recipe.eval.split, recipe.rrr.eval_problems)
    return evaluate_rrr(job.policy, job.task, problems, recipe.rrr, max_new_tokens=recipe.eval.max_new_tokens)


@torch.no_grad()
def evaluate_rrr(
    policy: HFPolicy,
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
    seen: dict[str, Any] = {}

    step = rrr_step(recipe)

    def recording_step(job: Job, index: int) -> dict[str, Any]:
        seen["job"] = job
        return step(job, index)

    summary = run_training(
        recipe,
        recording_step,
        use_reference=recipe.loss.kl_coef > 0,
        value_model=value_model_factory(recipe),
        temperature=recipe.sampling.temperature or 1.0,
        optimizer_steps_per_step=recipe.loss.epochs * recipe.loss.minibatches,
        on_step=on_step,
    )
    job = seen.get("job")
    if job is not None and recipe.rrr.eval_problems:
        for key in ("rrr_before", "rrr_after"):
            if key in job.state:
                summary[key] = job.state[key]
        (Path(recipe.run_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
