"""Training on episodes made elsewhere and saved as JSONL: SFT on kept paths and DPO on preference pairs
(AlphaLLM's "behaviour cloning, then DPO"; rejection-sampling fine-tuning).

Records are token ids, so nothing is re-tokenised:
- SFT: `{"prompt_ids": [...], "completion_ids": [...], "problem_id": ...}` (the completion trains);
- DPO: `{"prompt_ids": [...], "chosen_ids": [...], "rejected_ids": [...], "problem_id": ...}`.
Each step takes `batch_size` records at the stream position of a pool over the file, reshuffled every
epoch (a function of the seed and the step, so resume is exact).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar, TYPE_CHECKING, Any, Callable, Sequence

from pydantic import Field

from selfimprove.config import DPORecipe, SFTRecipe
from selfimprove.methods.base import Method, register_method
if TYPE_CHECKING:  # loaded when a run starts, not when a recipe is validated
    from selfimprove.rollout.episode import Episode
from selfimprove.train.job import Job, StepCallback
from selfimprove.train.stream import pool_index

__all__ = ["OfflineDPO", "OfflineDPORecipe", "OfflineSFT", "OfflineSFTRecipe", "dpo_record", "read_records", "sft_record"]


def sft_record(episode: Episode, detokenize: Callable[[Sequence[int]], str] | None = None) -> dict[str, Any]:
    """An episode with a context and one trainable tail as an SFT record: token ids (what training reads)
    and the text in TRL's column names (`prompt`, `completion`: what `selfimprove export` writes; pass the
    sampler's `detokenize` for segments held as token ids only)."""
    trained = [t for s in episode.segments if s.trainable for t in s.token_ids]
    context = [t for s in episode.segments if not s.trainable for t in s.token_ids]
    prompt, completion = episode.texts(detokenize)
    return {"prompt_ids": context, "completion_ids": trained, "problem_id": episode.problem_id,
            "prompt": prompt, "completion": completion}


def dpo_record(chosen: Episode, rejected: Episode, detokenize: Callable[[Sequence[int]], str] | None = None) -> dict[str, Any]:
    """A (chosen, rejected) pair of episodes that share their context as a DPO record."""
    a, b = sft_record(chosen, detokenize), sft_record(rejected, detokenize)
    if a["prompt_ids"] != b["prompt_ids"]:
        raise ValueError("a preference pair must share its context")
    return {"prompt_ids": a["prompt_ids"], "chosen_ids": a["completion_ids"], "rejected_ids": b["completion_ids"],
            "problem_id": chosen.problem_id, "prompt": a["prompt"], "chosen": a["completion"], "rejected": b["completion"]}


def read_records(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training data {path} does not exist")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _episode(prompt: Sequence[int], completion: Sequence[int], group: int, problem_id: str) -> Episode:
    from selfimprove.rollout.episode import Episode, Segment

    return Episode([Segment("prompt", list(prompt)), Segment("completion", list(completion), trainable=True, reward=1.0)],
                   group=group, problem_id=problem_id)


class _FromFile:
    """A cached file of records and the pool order over it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._records: list[dict[str, Any]] | None = None

    def batch(self, step: int, size: int, seed: int) -> list[tuple[int, dict[str, Any]]]:
        if self._records is None:
            self._records = read_records(self.path)
            if not self._records:
                raise ValueError(f"training data {self.path} holds no records")
        n = len(self._records)
        picked = [pool_index(i, n, seed) for i in range(step * size, (step + 1) * size)]
        return [(i, self._records[i]) for i in picked]


class OfflineSFTRecipe(SFTRecipe):
    needs_demonstrations: ClassVar[bool] = False  # its records are the data

    data: str = Field(min_length=1)  # JSONL of SFT records


@register_method
class OfflineSFT(Method[OfflineSFTRecipe]):
    """SFT on a file of (context, completion) records."""

    name = "offline_sft"
    command = "offline-sft"
    help = "SFT on saved episodes (JSONL of token ids), e.g. the paths a search kept"
    Recipe = OfflineSFTRecipe

    def __init__(self, recipe: OfflineSFTRecipe) -> None:
        super().__init__(recipe)
        self.data = _FromFile(recipe.data)

    def step(self, job: Job, step: int) -> dict[str, Any]:
        from selfimprove.rollout.episode import collate
        from selfimprove.train.objectives import sft_objective

        rows = self.data.batch(step, self.recipe.batch_size, self.recipe.seed)
        episodes = [_episode(r["prompt_ids"], r["completion_ids"], i, str(r.get("problem_id", ""))) for i, r in rows]
        stats = job.learner.step(collate(episodes, job.policy.pad_id), sft_objective)
        return {"train/loss": stats["loss"], "train/lr": stats["lr"], "train/grad_norm": stats["grad_norm"]}


class OfflineDPORecipe(DPORecipe):
    data: str = Field(min_length=1)  # JSONL of DPO records
    batch_size: int = Field(16, ge=1)  # pairs per step


@register_method
class OfflineDPO(Method[OfflineDPORecipe]):
    """DPO on a file of (context, chosen, rejected) records; the reference is the starting model."""

    name = "offline_dpo"
    command = "offline-dpo"
    help = "DPO on saved preference pairs (JSONL of token ids), e.g. sibling steps of search trees"
    Recipe = OfflineDPORecipe

    def __init__(self, recipe: OfflineDPORecipe) -> None:
        from selfimprove.train.objectives import DPOObjective

        if recipe.optim.micro_batch_size % 2:  # micro-batches must hold whole (chosen, rejected) pairs
            recipe = recipe.model_copy(update={"optim": recipe.optim.model_copy(update={"micro_batch_size": recipe.optim.micro_batch_size + 1})})
        super().__init__(recipe)
        self.data = _FromFile(recipe.data)
        self.objective = DPOObjective(recipe.beta, recipe.label_smoothing)

    @property
    def use_reference(self) -> bool:
        return True

    def step(self, job: Job, step: int) -> dict[str, Any]:
        from selfimprove.rollout.episode import collate

        rows = self.data.batch(step, self.recipe.batch_size, self.recipe.seed)
        episodes = []
        for i, r in rows:  # chosen, rejected, chosen, rejected, ...
            episodes.append(_episode(r["prompt_ids"], r["chosen_ids"], i, str(r.get("problem_id", ""))))
            episodes.append(_episode(r["prompt_ids"], r["rejected_ids"], i, str(r.get("problem_id", ""))))
        batch = collate(episodes, job.policy.pad_id)
        job.learner.add_reference_logprobs(batch)
        stats = job.learner.step(batch, self.objective)
        return {f"train/{k}": v for k, v in stats.items()}


def run_offline_sft(recipe: OfflineSFTRecipe, on_step: StepCallback | None = None) -> dict[str, Any]:
    return OfflineSFT(recipe).run(on_step)
