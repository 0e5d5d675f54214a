"""STaR for self-correction (SPECS §2): sample two attempts, keep the ones that fixed a mistake, SFT.

The SCoRe paper's first baseline. Each of `star.rounds` rounds:

1. **Collect.** With the current model, sample `sampling.n` two-attempt traces per problem
   (`rollout.correct.two_attempt_episodes`: prompt | y1 | fixed instruction | y2, temperature 1) on
   fresh train problems, `prompts_per_call` problems per generation call, from a cursor that starts at
   `first_problem` and lives in the job state. Stop when the round's share of the sampled-token budget
   `star.max_sampled_tokens` is spent (cumulatively: by the end of round r the run has sampled at least
   (r + 1) / rounds of it, so one round's overshoot is not carried into the next; the run overshoots
   by less than one generation call, as SCoRe overshoots by less than one step), or after
   `star.problems_per_round` problems when there is no budget. Tokens are counted as SCoRe counts
   them (the two attempt segments), so the methods compare at one budget.
2. **Filter.** Keep the traces where attempt 1 is wrong and attempt 2 right (i->c). `star.plus`
   (STaR D+) also keeps right->right traces (c->c), which teach "keep a right answer".
3. **SFT** for `star.steps_per_round` steps of `batch_size` traces drawn from *every trace kept so
   far* (the rounds accumulate; the pool is reshuffled per epoch and per round), training only the
   attempt-2 tokens: prompt, attempt 1 and the instruction are context (`correction_episode`).

Rounds continue from the current model; they do not restart from the base model as the original STaR
(Zelikman et al. 2022) does. Why: one run is one optimizer, one learning-rate schedule and one stream
of checkpoints through the shared driver, so exact resume comes for free; restarting would mean
re-initialising the weights *and* the optimizer's state at each round boundary, which the learner does
not offer. The cost is that early traces are seen in more rounds than late ones; the recipes keep the
learning rate low so the model stays near the base. Sampling still uses the newest model each round,
which is what makes STaR iterative.

Round boundaries are a function of the step (round = step // steps_per_round; the first step of a
round collects), the kept traces are token-id records in the run's `traces` buffer (the checkpoint
holds their count), the problem cursor is the driver's stream, and sampling draws from the policy's
checkpointed generator, so a resumed run is bit-identical to an uninterrupted one.

The budget is `star.max_sampled_tokens` (`budget_path`), not the driver's top-level
`max_sampled_tokens`: the driver ends a run after the step whose sampling reaches its budget, which
suits methods that sample every step but would cut STaR's last round (or Pair-SFT's whole SFT) short.
Steps that sample still report `train/sampled_tokens`, so the summary's `sampled_tokens` is the run's
total as for every method.

The trace-and-SFT machinery is shared with Pair-SFT (`methods/traces.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from pydantic import Field, model_validator

from selfimprove.config import Strict
from selfimprove.eval.metrics import self_correction_metrics
from selfimprove.methods.base import register_method
from selfimprove.methods.traces import CorrectionTrace, SampledSFTRecipe, TraceSFTMethod, attempt_tokens, sft_on_traces
from selfimprove.rollout.correct import SHORT_INSTRUCTION, TURN1, TURN2, two_attempt_episodes
if TYPE_CHECKING:  # loaded when a run starts, not when a recipe is validated
    from selfimprove.rollout.episode import Episode
from selfimprove.train.job import Job, MethodState, StepCallback

__all__ = [
    "Star",
    "StarConfig",
    "StarRecipe",
    "StarState",
    "collect_round",
    "keeps",
    "run_star",
    "sample_rates",
    "select_traces",
]

TRACES = "traces"


class StarConfig(Strict):
    rounds: int = Field(3, ge=1)
    steps_per_round: int = Field(50, ge=1)
    plus: bool = False  # STaR D+: also keep right->right traces
    # Sampled-token budget of all rounds, split evenly; None: `problems_per_round` problems a round.
    max_sampled_tokens: int | None = Field(None, ge=1)
    problems_per_round: int = Field(256, ge=1)
    instruction: str = SHORT_INSTRUCTION


class StarRecipe(SampledSFTRecipe):
    """`steps` is `star.rounds * star.steps_per_round` (leave it out; a different value is an error)."""

    star: StarConfig = Field(default_factory=StarConfig)

    @model_validator(mode="after")
    def _steps_are_rounds(self) -> "StarRecipe":
        total = self.star.rounds * self.star.steps_per_round
        if "steps" not in self.model_fields_set:
            self.steps = total
        elif self.steps != total:
            raise ValueError(f"steps ({self.steps}) must be star.rounds x star.steps_per_round = {total} (or be left out)")
        return self


@dataclass
class StarState(MethodState):
    collected_tokens: int = 0  # tokens sampled in all rounds so far (the budget's running total)
    kept_per_round: list[int] = field(default_factory=list)


# --------------------------------------------------------------------------------------- traces
def keeps(correct1: bool, correct2: bool, plus: bool = False) -> bool:
    """STaR's filter: wrong then right; with D+ (`plus`) also right then right."""
    return correct2 and (not correct1 or plus)


def trace_of(episode: Episode) -> CorrectionTrace:
    return CorrectionTrace(
        problem_id=episode.problem_id,
        prompt=list(episode.segment("prompt").token_ids),
        attempt1=list(episode.segment(TURN1).token_ids),
        attempt2=list(episode.segment(TURN2).token_ids),
        correct1=bool(episode.info["correct1"]),
    )


def select_traces(episodes: Sequence[Episode], plus: bool = False) -> list[CorrectionTrace]:
    """The traces STaR keeps from two-attempt episodes (verdicts in `info['correct1'|'correct2']`)."""
    return [trace_of(e) for e in episodes if keeps(bool(e.info["correct1"]), bool(e.info["correct2"]), plus)]


def sample_rates(verdicts: Sequence[tuple[bool, bool]]) -> dict[str, float]:
    """Acc@t1, Acc@t2, Delta, i->c, c->i and c->c of the sampled traces (fractions of all of them)."""
    if not verdicts:
        return {}
    first, second = [a for a, _ in verdicts], [b for _, b in verdicts]
    out = {f"train/{k.replace('delta_', '')}": v for k, v in self_correction_metrics(first, second).items()}
    out["train/c_to_c"] = sum(a and b for a, b in verdicts) / len(verdicts)
    return out


def collect_round(job: Job, recipe: StarRecipe, round_index: int) -> dict[str, float]:
    """Sample and filter one round's traces into the `traces` buffer; return the sample's metrics."""
    c = recipe.star
    state: StarState = job.state  # type: ignore[assignment]
    params = recipe.sampling.params()
    budget = c.max_sampled_tokens
    target = None if budget is None else -(-(round_index + 1) * budget // c.rounds)  # ceil
    buffer = job.buffer(TRACES)
    before = len(buffer)
    tokens = problems = 0
    verdicts: list[tuple[bool, bool]] = []  # (attempt 1 right, attempt 2 right) of every sampled trace
    while (state.collected_tokens + tokens < target) if target is not None else (problems < c.problems_per_round):
        k = recipe.prompts_per_call if target is not None else min(recipe.prompts_per_call, c.problems_per_round - problems)
        drawn = job.stream.take(job.task, k)
        episodes = two_attempt_episodes(job.policy, job.task, drawn.problems, params, instruction=c.instruction,
                                        group_offset=drawn.start)
        problems += k
        tokens += attempt_tokens(episodes)
        buffer.extend(select_traces(episodes, c.plus))
        verdicts.extend((bool(e.info["correct1"]), bool(e.info["correct2"])) for e in episodes)
    state.collected_tokens += tokens
    kept = len(buffer) - before
    state.kept_per_round.append(kept)
    metrics = sample_rates(verdicts)
    metrics["train/kept_round"] = float(kept)
    metrics["train/sampled_problems"] = float(problems)
    metrics["train/sampled_traces"] = float(len(verdicts))
    metrics["train/sampled_tokens"] = float(tokens)
    return metrics


@register_method
class Star(TraceSFTMethod):
    """Round r covers steps [r * steps_per_round, (r + 1) * steps_per_round); its first step collects."""

    name = "star"
    command = "star"
    help = "STaR for self-correction: rounds of sampling two attempts, keeping wrong->right, SFT"
    Recipe = StarRecipe
    State = StarState
    budget_path = "star.max_sampled_tokens"

    def __init__(self, recipe: StarRecipe) -> None:
        super().__init__(recipe)
        self.instruction = recipe.star.instruction

    def label(self) -> str:
        return "STaR D+" if self.recipe.star.plus else "STaR"

    def step(self, job: Job, step: int) -> dict[str, Any]:
        c, recipe = self.recipe.star, self.recipe
        round_index, local = divmod(step, c.steps_per_round)
        metrics: dict[str, Any] = {"train/round": float(round_index + 1)}
        if local == 0:
            metrics.update(collect_round(job, recipe, round_index))
        traces = job.buffer(TRACES).read()
        metrics.update(sft_on_traces(job, traces, self.instruction_ids(job), batch_size=recipe.batch_size,
                                     position=local * recipe.batch_size, seed=recipe.seed * 1_000_003 + round_index))
        metrics["train/kept"] = float(len(traces))
        return metrics

    def summarise(self, job: Job) -> dict[str, Any]:
        kept = [int(k) for k in job.state.kept_per_round]  # type: ignore[attr-defined]
        return {
            "method": "star+" if self.recipe.star.plus else "star",
            "kept_per_round": kept,
            "kept": sum(kept),
            "problems_sampled": job.stream.state_dict()["position"] - self.recipe.first_problem,
        }

    def notes(self, summary: dict[str, Any]) -> list[str]:
        return [f"traces kept per round {summary['kept_per_round']}; {summary['sampled_tokens']} tokens sampled"]


def run_star(recipe: StarRecipe, on_step: StepCallback | None = None) -> dict[str, Any]:
    """Train STaR with the shared driver; the summary adds `kept_per_round`, `kept` and `problems_sampled`."""
    return Star(recipe).run(on_step)
