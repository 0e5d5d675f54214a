"""The RL loop: sample a group of answers per prompt, score them, turn rewards into advantages, update.

GRPO by default; the estimator, the loss aggregation and the KL come from the recipe (SPECS §1).
"""

from __future__ import annotations

from typing import Any

from selfimprove.algos.advantages import ADVANTAGES
from selfimprove.config import RLRecipe
from selfimprove.policy.base import SamplingParams
from selfimprove.rollout.episode import collate
from selfimprove.rollout.single import sample_episodes
from selfimprove.train.driver import Job, StepCallback, run_training
from selfimprove.train.objectives import PolicyGradientObjective


def rl_step(recipe: RLRecipe):
    params = SamplingParams(
        n=recipe.sampling.n,
        temperature=recipe.sampling.temperature,
        top_p=recipe.sampling.top_p,
        max_new_tokens=recipe.sampling.max_new_tokens,
        stop=tuple(recipe.sampling.stop),
    )
    estimator = ADVANTAGES.get(recipe.loss.estimator)
    objective = PolicyGradientObjective(recipe.loss, max_len=recipe.sampling.max_new_tokens)
    per_step = recipe.prompts_per_step

    def step_fn(job: Job, step: int) -> dict[str, Any]:
        problems = job.task.problems("train", per_step, start=recipe.first_problem + step * per_step)
        episodes = sample_episodes(job.policy, job.task, problems, params, group_offset=step * per_step)
        batch = collate(episodes, job.policy.pad_id)
        batch.advantages = estimator(batch.rewards, batch.groups, batch.mask)
        if recipe.loss.kl_coef > 0:
            job.learner.add_reference_logprobs(batch)
        if recipe.loss.epochs > 1:
            batch.old_logprobs = job.learner.score(job.policy, batch)
        stats: dict[str, float] = {}
        for _ in range(recipe.loss.epochs):
            stats = job.learner.step(batch, objective)
        rewards = batch.rewards
        return {
            "train/reward": float(rewards.mean()),
            "train/accuracy": sum(e.info["correct"] for e in episodes) / len(episodes),
            "train/completion_tokens": float(sum(e.num_trainable for e in episodes) / len(episodes)),
            "train/solved_groups": _solved_groups(episodes),
            **{f"train/{k}": v for k, v in stats.items()},
        }

    return step_fn


def _solved_groups(episodes) -> float:
    """Fraction of prompts with at least one correct sample (GRPO learns only from mixed groups)."""
    groups: dict[int, bool] = {}
    for e in episodes:
        groups[e.group] = groups.get(e.group, False) or bool(e.info["correct"])
    return sum(groups.values()) / max(1, len(groups))


def run_rl(recipe: RLRecipe, on_step: StepCallback | None = None) -> dict[str, Any]:
    return run_training(
        recipe,
        rl_step(recipe),
        use_reference=recipe.loss.kl_coef > 0,
        temperature=recipe.sampling.temperature or 1.0,
        optimizer_steps_per_step=recipe.loss.epochs,
        on_step=on_step,
    )
