"""DPO on preference pairs built from the model's own right and wrong answers (online, on-policy).

Each step samples a group of answers per prompt, keeps prompts with at least one right and one wrong
answer, and makes (right, wrong) the (chosen, rejected) pair. The reference is the starting model
(or, with LoRA, the policy with its adapter switched off).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Sequence

from selfimprove.config import DPORecipe
from selfimprove.methods.base import Method, register_method
from selfimprove.methods.rl import PAIRS, collect
if TYPE_CHECKING:  # loaded when a run starts, not when a recipe is validated
    from selfimprove.rollout.episode import Episode
from selfimprove.train.job import Job, StepCallback


def preference_pairs(episodes: Sequence[Episode]) -> list[tuple[Episode, Episode]]:
    """Per group, the first correct and the first incorrect episode (sampling order), as (chosen, rejected)."""
    chosen: dict[int, Episode] = {}
    rejected: dict[int, Episode] = {}
    for e in episodes:
        target = chosen if e.info.get("correct") else rejected
        target.setdefault(e.group, e)
    return [(chosen[g], rejected[g]) for g in chosen if g in rejected]


@register_method
class DPO(Method[DPORecipe]):
    name = "dpo"
    command = "dpo"
    help = "online DPO on pairs of the model's own right and wrong answers"
    Recipe = DPORecipe

    def __init__(self, recipe: DPORecipe) -> None:
        from selfimprove.train.objectives import DPOObjective

        if recipe.optim.micro_batch_size % 2:  # micro-batches must hold whole (chosen, rejected) pairs
            recipe = recipe.model_copy(update={"optim": recipe.optim.model_copy(update={"micro_batch_size": recipe.optim.micro_batch_size + 1})})
        super().__init__(recipe)
        self.params = recipe.sampling.params()
        self.objective = DPOObjective(recipe.beta, recipe.label_smoothing)

    @property
    def use_reference(self) -> bool:
        return True

    @property
    def temperature(self) -> float:
        return self.recipe.sampling.temperature or 1.0

    def step(self, job: Job, step: int) -> dict[str, Any]:
        from selfimprove.rollout.episode import collate

        episodes, metrics = collect(job, self.recipe, self.params)
        pairs = preference_pairs(episodes)[: self.recipe.prompts_per_step]
        metrics["train/pairs"] = float(len(pairs))
        if not pairs:
            return metrics
        if self.recipe.schedule.save_rollouts:
            job.buffer(PAIRS).extend(pair_record(chosen, rejected, step, job.policy.detokenize) for chosen, rejected in pairs)
        rows = [e for pair in pairs for e in pair]  # chosen, rejected, chosen, rejected, ...
        batch = collate(rows, job.policy.pad_id)
        job.learner.add_reference_logprobs(batch)
        stats = job.learner.step(batch, self.objective)
        metrics.update({f"train/{k}": v for k, v in stats.items()})
        return metrics


def pair_record(chosen: Episode, rejected: Episode, step: int,
                detokenize: Callable[[Sequence[int]], str] | None = None) -> dict[str, Any]:
    """A preference pair in TRL's column names (`prompt`, `chosen`, `rejected`); `detokenize` decodes the
    prompt, which episodes hold as token ids only."""
    prompt, good = chosen.texts(detokenize)
    return {"step": step, "problem_id": chosen.problem_id, "prompt": prompt, "chosen": good,
            "rejected": rejected.texts()[1]}


def run_dpo(recipe: DPORecipe, on_step: StepCallback | None = None) -> dict[str, Any]:
    return DPO(recipe).run(on_step)
