"""Pair-SFT for self-correction (SPECS §2): a wrong base attempt, then a right one, as one SFT trace.

The SCoRe paper's second baseline (after Welleck et al.'s self-correction pairs). No two-attempt
sampling at all: the *base* model (the run's starting model) answers train problems once,
`sampling.n` times each at the recipe's temperature (1 by default), `prompts_per_call` problems
per generation call from `first_problem` on, until `pair_sft.max_sampled_tokens` tokens have been
generated (or `pair_sft.problems` problems when there is no budget). For each problem that got both a
wrong and a right attempt, each wrong attempt becomes y1 and a right attempt of the same problem,
drawn at random (seeded by the run's seed and the problem), becomes y2. Problems answered only right
or only wrong give no pair. Then one SFT run of `steps` steps of `batch_size` pairs (reshuffled per
epoch) on prompt | y1 | instruction | Y2, training only y2 (`methods.star.correction_episode`).

The first step collects (the pairs are token-id records in the run's `pairs` buffer, so a resumed
run trains on the same pairs and draws the same batches) and reports `train/sampled_tokens`, so the summary's
`sampled_tokens` is the budget spent; it overshoots by less than one generation call. Tokens are
every token the base model generated (`Completion.num_tokens`). As in STaR, the budget is a method
field (`pair_sft.max_sampled_tokens`, the method's `budget_path`) rather than the driver's
`max_sampled_tokens`, which would end the run right after collecting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from pydantic import Field

from selfimprove.config import Strict
from selfimprove.methods.base import register_method
from selfimprove.methods.traces import CorrectionTrace, SampledSFTRecipe, TraceSFTMethod, sft_on_traces
from selfimprove.policy.base import Completion
from selfimprove.rollout.correct import SHORT_INSTRUCTION
from selfimprove.tasks.base import Problem, seeded_rng
from selfimprove.train.job import Job, MethodState, StepCallback

__all__ = ["PairSFT", "PairSFTConfig", "PairSFTRecipe", "PairSFTState", "collect_pairs", "make_pairs", "run_pair_sft"]

PAIRS = "pairs"


class PairSFTConfig(Strict):
    # Sampled-token budget for the base model's attempts; None: sample `problems` problems.
    max_sampled_tokens: int | None = Field(None, ge=1)
    problems: int = Field(512, ge=1)
    instruction: str = SHORT_INSTRUCTION


class PairSFTRecipe(SampledSFTRecipe):
    steps: int = Field(150, ge=1)
    pair_sft: PairSFTConfig = Field(default_factory=PairSFTConfig)


@dataclass
class PairSFTState(MethodState):
    sampled_problems: int = 0
    paired_problems: int = 0


def make_pairs(
    problems: Sequence[Problem], completions: Sequence[Completion], correct: Sequence[bool], eos_ids: Sequence[int], seed: int
) -> list[CorrectionTrace]:
    """Pair every wrong attempt (y1) with a random right attempt (y2) of the *same* problem.

    `completions[k]` answers `problems[completions[k].prompt_index]` and `correct[k]` is its verdict.
    Pairs come in problem order, then in the order of the wrong attempts; y1 loses its end token (the
    turn goes on), y2 keeps it. The draw for a problem depends only on `seed` and the problem's id.
    """
    if len(completions) != len(correct):
        raise ValueError(f"{len(completions)} completions but {len(correct)} verdicts")
    by_problem: dict[int, list[int]] = {}
    for k, c in enumerate(completions):
        by_problem.setdefault(c.prompt_index, []).append(k)
    pairs: list[CorrectionTrace] = []
    for index in sorted(by_problem):
        rows = by_problem[index]
        right = [k for k in rows if correct[k]]
        wrong = [k for k in rows if not correct[k]]
        if not right or not wrong:
            continue
        problem = problems[index]
        rng = seeded_rng("pair-sft", seed, problem.id)
        for k in wrong:
            y1, y2 = completions[k], completions[rng.choice(right)]
            pairs.append(
                CorrectionTrace(
                    problem_id=problem.id,
                    prompt=list(y1.prompt_ids),
                    attempt1=y1.without_eos(eos_ids)[0],
                    attempt2=list(y2.token_ids),
                    correct1=False,
                )
            )
    return pairs


def collect_pairs(job: Job, recipe: PairSFTRecipe) -> dict[str, float]:
    """Sample the base model's attempts until the budget is spent; store the pairs in the `pairs` buffer."""
    c = recipe.pair_sft
    state: PairSFTState = job.state  # type: ignore[assignment]
    params = recipe.sampling.params()
    budget = c.max_sampled_tokens
    tokens = problems = right = attempts = paired = 0
    buffer = job.buffer(PAIRS)
    while (tokens < budget) if budget is not None else (problems < c.problems):
        k = recipe.prompts_per_call if budget is not None else min(recipe.prompts_per_call, c.problems - problems)
        batch = job.stream.take(job.task, k).problems
        completions = job.policy.generate([p.prompt for p in batch], params)
        verdicts = [job.task.verify(batch[x.prompt_index], x.text).correct for x in completions]
        new = make_pairs(batch, completions, verdicts, job.policy.eos_ids, recipe.seed)
        buffer.extend(new)
        paired += len({t["problem_id"] for t in new})
        problems += k
        tokens += sum(x.num_tokens for x in completions)
        right += sum(verdicts)
        attempts += len(completions)
    state.sampled_problems, state.paired_problems = problems, paired
    return {
        "train/sampled_tokens": float(tokens),
        "train/sampled_problems": float(problems),
        "train/sample_accuracy": right / attempts if attempts else 0.0,
        "train/paired_problems": float(paired),
    }


@register_method
class PairSFT(TraceSFTMethod):
    """Step 0 collects the pairs; every step is one SFT step on `batch_size` of them."""

    name = "pair_sft"
    command = "pair-sft"
    help = "Pair-SFT: SFT on (wrong base attempt, right attempt of the same problem) pairs"
    Recipe = PairSFTRecipe
    State = PairSFTState
    budget_path = "pair_sft.max_sampled_tokens"

    def __init__(self, recipe: PairSFTRecipe) -> None:
        super().__init__(recipe)
        self.instruction = recipe.pair_sft.instruction

    def label(self) -> str:
        return "pair-sft"

    def step(self, job: Job, step: int) -> dict[str, Any]:
        recipe = self.recipe
        metrics: dict[str, Any] = collect_pairs(job, recipe) if step == 0 else {}
        pairs = job.buffer(PAIRS).read()
        metrics.update(sft_on_traces(job, pairs, self.instruction_ids(job), batch_size=recipe.batch_size,
                                     position=step * recipe.batch_size, seed=recipe.seed))
        metrics["train/pairs"] = float(len(pairs))
        return metrics

    def summarise(self, job: Job) -> dict[str, Any]:
        state: PairSFTState = job.state  # type: ignore[assignment]
        return {
            "method": "pair-sft",
            "pairs": len(job.buffer(PAIRS)),
            "paired_problems": state.paired_problems,
            "problems_sampled": state.sampled_problems,
        }

    def notes(self, summary: dict[str, Any]) -> list[str]:
        return [f"{summary['pairs']} pairs from {summary['paired_problems']} problems; {summary['sampled_tokens']} tokens sampled"]


def run_pair_sft(recipe: PairSFTRecipe, on_step: StepCallback | None = None) -> dict[str, Any]:
    """Train Pair-SFT with the shared driver; the summary adds `pairs`, `paired_problems`, `problems_sampled`."""
    return PairSFT(recipe).run(on_step)
