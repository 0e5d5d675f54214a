"""Self-correction traces and SFT on them: what STaR and Pair-SFT share.

A `CorrectionTrace` is one SFT example for self-correction: the prompt, a first attempt (context,
without its end token) and the second attempt to learn (with its end token when the model wrote one).
Traces are JSON records in a run buffer (`Job.buffer`), so a checkpoint holds their count, not them.
`sft_on_traces` takes one SFT step on a batch of them, training only the second attempt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence, TypedDict

from pydantic import Field, model_validator

from selfimprove.config import OptimConfig, SamplingConfig, SFTRecipe
from selfimprove.methods.base import Method
from selfimprove.rollout.correct import TURN1, TURN2
if TYPE_CHECKING:  # loaded when a run starts, not when a recipe is validated
    from selfimprove.rollout.episode import Episode
from selfimprove.train.job import Job
from selfimprove.train.stream import pool_index

__all__ = ["CorrectionTrace", "SampledSFTRecipe", "TraceSFTMethod", "attempt_tokens", "correction_episode", "sft_on_traces"]


class CorrectionTrace(TypedDict):
    """One SFT example for self-correction, a JSON record of a run buffer: the prompt, a first
    attempt (context, without its end token), and the second attempt to learn (with its end token when
    the model wrote one)."""

    problem_id: str
    prompt: list[int]
    attempt1: list[int]
    attempt2: list[int]
    correct1: bool


class SampledSFTRecipe(SFTRecipe):
    """SFT on traces the model samples itself (STaR, Pair-SFT): an SFT recipe plus where and how to sample.

    `num_problems` (plain SFT's pool of demonstrations) does not apply: these methods draw fresh train
    problems from `first_problem` on. `sampling.dynamic` (DAPO) does not apply either.
    """

    first_problem: int = Field(0, ge=0)
    prompts_per_call: int = Field(16, ge=1)  # problems per generation call while collecting
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(n=4, temperature=1.0))
    batch_size: int = Field(32, ge=1)
    # The same settings as the SCoRe recipes, so the baselines differ from SCoRe only in the method.
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=5e-5, warmup_steps=10, micro_batch_size=128))

    @model_validator(mode="after")
    def _sampling_only(self) -> "SampledSFTRecipe":
        if self.num_problems:
            raise ValueError("num_problems is plain SFT's demonstration pool; sampled-trace SFT draws train problems from first_problem")
        if self.sampling.dynamic:
            raise ValueError("sampling.dynamic is DAPO's; it does not apply to sampled-trace SFT")
        return self


def correction_episode(trace: CorrectionTrace, instruction_ids: Sequence[int], group: int) -> Episode:
    """prompt | attempt 1 | instruction | ATTEMPT 2: only the second attempt is trainable."""
    from selfimprove.rollout.episode import Episode, Segment

    return Episode(
        segments=[
            Segment("prompt", list(trace["prompt"])),
            Segment(TURN1, list(trace["attempt1"])),
            Segment("instruction", list(instruction_ids)),
            Segment(TURN2, list(trace["attempt2"]), trainable=True, reward=1.0),
        ],
        group=group,
        problem_id=trace["problem_id"],
        reward=1.0,
    )


def sft_on_traces(
    job: Job, traces: Sequence[CorrectionTrace], instruction_ids: Sequence[int], *, batch_size: int, position: int, seed: int
) -> dict[str, float]:
    """One SFT step on `batch_size` traces taken at stream `position` of the pool, reshuffled per epoch
    (a function of `seed` and the position, so a resumed run draws the same batches). No traces: no
    update and no loss (the model has not produced a usable trace yet)."""
    from selfimprove.rollout.episode import collate
    from selfimprove.train.objectives import sft_objective

    if not traces:
        return {"train/batch_traces": 0.0}
    picked = [pool_index(i, len(traces), seed) for i in range(position, position + batch_size)]
    episodes = [correction_episode(traces[i], instruction_ids, group=i) for i in picked]
    stats = job.learner.step(collate(episodes, job.policy.pad_id), sft_objective)
    return {
        "train/loss": stats["loss"],
        "train/lr": stats["lr"],
        "train/grad_norm": stats["grad_norm"],
        "train/batch_traces": float(len(episodes)),
    }


def attempt_tokens(episodes: Sequence[Episode]) -> int:
    """Tokens the policy generated for two-attempt episodes, counted as SCoRe counts them."""
    return sum(len(s.token_ids) for e in episodes for s in e.segments if s.kind in (TURN1, TURN2))


class TraceSFTMethod(Method[SampledSFTRecipe]):
    """A method that samples its own traces, then SFTs on them (STaR, Pair-SFT): it spends its token
    budget in its sampling phase (`budget_path` points into its own section), so the driver does not
    end the run when the budget is reached; `instruction_ids` is the fixed instruction's tokens."""

    budget_ends_run = False
    instruction: str  # set from the recipe by the subclass

    def __init__(self, recipe: SampledSFTRecipe) -> None:
        super().__init__(recipe)
        self._instruction: list[int] = []

    def instruction_ids(self, job: Job) -> list[int]:
        if not self._instruction:
            self._instruction = job.policy.encode_completion(self.instruction, add_eos=False)
        return self._instruction
