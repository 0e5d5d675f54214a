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
round collects), the kept traces are token-id lists in `Job.state`, and sampling draws from the
policy's checkpointed generator, so a resumed run is bit-identical to an uninterrupted one.

The budget is `star.max_sampled_tokens`, not the driver's top-level `max_sampled_tokens`: the driver
ends a run after the step whose sampling reaches its budget, which suits methods that sample every
step but would cut STaR's last round (or Pair-SFT's whole SFT) short. Steps that sample still report
`train/sampled_tokens`, so the summary's `sampled_tokens` is the run's total as for every method.

The same trace-and-SFT machinery (`CorrectionTrace`, `correction_episode`, `sft_on_traces`,
`SampledSFTRecipe`) serves Pair-SFT (`methods/pair_sft.py`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence, TypedDict

from pydantic import Field, model_validator

from selfimprove.config import OptimConfig, SamplingConfig, SFTRecipe, Strict
from selfimprove.eval.metrics import self_correction_metrics
from selfimprove.methods.score import TURN1, TURN2
from selfimprove.policy.base import SamplingParams
from selfimprove.rollout.correct import SHORT_INSTRUCTION, two_attempt_episodes
from selfimprove.rollout.episode import Episode, Segment, collate
from selfimprove.train.checkpoint import latest_checkpoint
from selfimprove.train.driver import Job, StepCallback, run_training
from selfimprove.train.objectives import sft_objective
from selfimprove.train.sft import pool_index

__all__ = [
    "CorrectionTrace",
    "SampledSFTRecipe",
    "StarConfig",
    "StarRecipe",
    "attempt_tokens",
    "collect_round",
    "correction_episode",
    "final_job_state",
    "keeps",
    "run_star",
    "sample_rates",
    "select_traces",
    "sft_on_traces",
    "star_step",
    "to_params",
]


class CorrectionTrace(TypedDict):
    """One SFT example for self-correction, JSON-able so it can live in `Job.state`: the prompt, a first
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


def to_params(sampling: SamplingConfig) -> SamplingParams:
    return SamplingParams(
        n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p, max_new_tokens=sampling.max_new_tokens, stop=tuple(sampling.stop)
    )


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


def correction_episode(trace: CorrectionTrace, instruction_ids: Sequence[int], group: int) -> Episode:
    """prompt | attempt 1 | instruction | ATTEMPT 2: only the second attempt is trainable."""
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


def final_job_state(run_dir: str | Path) -> dict[str, Any]:
    """The job state of the newest checkpoint (the driver always checkpoints the last step)."""
    ckpt = latest_checkpoint(Path(run_dir) / "checkpoints")
    if ckpt is None:
        return {}
    return dict(json.loads((ckpt / "state.json").read_text()).get("job", {}))


# --------------------------------------------------------------------------------------- STaR
def collect_round(job: Job, recipe: StarRecipe, round_index: int) -> dict[str, float]:
    """Sample and filter one round's traces into `job.state['traces']`; return the sample's metrics."""
    c = recipe.star
    params = to_params(recipe.sampling)
    cursor = int(job.state.get("cursor", recipe.first_problem))
    collected = int(job.state.get("collected_tokens", 0))
    budget = c.max_sampled_tokens
    target = None if budget is None else -(-(round_index + 1) * budget // c.rounds)  # ceil
    traces: list[CorrectionTrace] = job.state.setdefault("traces", [])
    before = len(traces)
    tokens = problems = 0
    verdicts: list[tuple[bool, bool]] = []  # (attempt 1 right, attempt 2 right) of every sampled trace
    while (collected + tokens < target) if target is not None else (problems < c.problems_per_round):
        k = recipe.prompts_per_call if target is not None else min(recipe.prompts_per_call, c.problems_per_round - problems)
        batch = job.task.problems("train", k, start=cursor + problems)
        episodes = two_attempt_episodes(job.policy, job.task, batch, params, instruction=c.instruction, group_offset=cursor + problems)
        problems += k
        tokens += attempt_tokens(episodes)
        traces.extend(select_traces(episodes, c.plus))
        verdicts.extend((bool(e.info["correct1"]), bool(e.info["correct2"])) for e in episodes)
    job.state["cursor"] = cursor + problems
    job.state["collected_tokens"] = collected + tokens
    kept_per_round: list[int] = job.state.setdefault("kept_per_round", [])
    kept_per_round.append(len(traces) - before)
    metrics = sample_rates(verdicts)
    metrics["train/kept_round"] = float(len(traces) - before)
    metrics["train/sampled_problems"] = float(problems)
    metrics["train/sampled_traces"] = float(len(verdicts))
    metrics["train/sampled_tokens"] = float(tokens)
    return metrics


def sample_rates(verdicts: Sequence[tuple[bool, bool]]) -> dict[str, float]:
    """Acc@t1, Acc@t2, Delta, i->c, c->i and c->c of the sampled traces (fractions of all of them)."""
    if not verdicts:
        return {}
    first, second = [a for a, _ in verdicts], [b for _, b in verdicts]
    out = {f"train/{k.replace('delta_', '')}": v for k, v in self_correction_metrics(first, second).items()}
    out["train/c_to_c"] = sum(a and b for a, b in verdicts) / len(verdicts)
    return out


def star_step(recipe: StarRecipe):
    """Round r covers steps [r * steps_per_round, (r + 1) * steps_per_round); its first step collects."""
    c = recipe.star
    instruction_ids: list[int] = []

    def step_fn(job: Job, step: int) -> dict[str, Any]:
        if not instruction_ids:
            instruction_ids.extend(job.policy.encode_completion(c.instruction, add_eos=False))
        round_index, local = divmod(step, c.steps_per_round)
        metrics: dict[str, Any] = {"train/round": float(round_index + 1)}
        if local == 0:
            metrics.update(collect_round(job, recipe, round_index))
        traces: list[CorrectionTrace] = job.state.get("traces", [])
        metrics.update(
            sft_on_traces(
                job, traces, instruction_ids, batch_size=recipe.batch_size, position=local * recipe.batch_size,
                seed=recipe.seed * 1_000_003 + round_index,
            )
        )
        metrics["train/kept"] = float(len(traces))
        return metrics

    return step_fn


def run_star(recipe: StarRecipe, on_step: StepCallback | None = None) -> dict[str, Any]:
    """Train STaR with the shared driver; the summary adds `kept_per_round`, `kept` and `problems_sampled`."""
    summary = run_training(recipe, star_step(recipe), on_step=on_step)  # SFT: log-probs at temperature 1
    state = final_job_state(recipe.run_dir)
    kept = [int(k) for k in state.get("kept_per_round", [])]
    summary.update(
        method="star+" if recipe.star.plus else "star",
        kept_per_round=kept,
        kept=sum(kept),
        problems_sampled=int(state.get("cursor", recipe.first_problem)) - recipe.first_problem,
    )
    (Path(recipe.run_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
