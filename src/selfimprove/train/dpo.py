"""DPO on preference pairs built from the model's own right and wrong answers (online, on-policy).

Each step samples a group of answers per prompt, keeps prompts with at least one right and one wrong
answer, and makes (right, wrong) the (chosen, rejected) pair. The reference is the starting model
(or, with LoRA, the policy with its adapter switched off).
"""

from __future__ import annotations

from typing import Any, Sequence

from selfimprove.config import DPORecipe
from selfimprove.rollout.episode import Episode, collate
from selfimprove.train.driver import Job, StepCallback, run_training
from selfimprove.train.loop import collect, sampling_params
from selfimprove.train.objectives import DPOObjective


def preference_pairs(episodes: Sequence[Episode]) -> list[tuple[Episode, Episode]]:
    """Per group, the first correct and the first incorrect episode (sampling order), as (chosen, rejected)."""
    chosen: dict[int, Episode] = {}
    rejected: dict[int, Episode] = {}
    for e in episodes:
        target = chosen if e.info.get("correct") else rejected
        target.setdefault(e.group, e)
    return [(chosen[g], rejected[g]) for g in chosen if g in rejected]


def dpo_step(recipe: DPORecipe):
    params = sampling_params(recipe)  # type: ignore[arg-type]
    objective = DPOObjective(recipe.beta, recipe.label_smoothing)

    def step_fn(job: Job, step: int) -> dict[str, Any]:
        episodes, metrics = collect(job, recipe, params)
        pairs = preference_pairs(episodes)[: recipe.prompts_per_step]
        metrics["train/pairs"] = float(len(pairs))
        if not pairs:
            return metrics
        rows = [e for pair in pairs for e in pair]  # chosen, rejected, chosen, rejected, ...
        batch = collate(rows, job.policy.pad_id)
        job.learner.add_reference_logprobs(batch)
        stats = job.learner.step(batch, objective)
        metrics.update({f"train/{k}": v for k, v in stats.items()})
        return metrics

    return step_fn


def run_dpo(recipe: DPORecipe, on_step: StepCallback | None = None) -> dict[str, Any]:
    if recipe.optim.micro_batch_size % 2:
        recipe = recipe.model_copy(update={"optim": recipe.optim.model_copy(update={"micro_batch_size": recipe.optim.micro_batch_size + 1})})
    return run_training(recipe, dpo_step(recipe), use_reference=True, temperature=recipe.sampling.temperature or 1.0, on_step=on_step)  # type: ignore[arg-type]
