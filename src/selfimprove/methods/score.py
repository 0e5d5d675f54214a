"""SCoRe: self-correction by two-attempt RL (Kumar et al. 2024, SPECS §2).

Episodes come from `rollout.correct.two_attempt_episodes`: prompt, attempt 1, a fixed instruction that
never says whether attempt 1 was right, attempt 2. Both attempts train; each turn gets its own reward
(gamma = 0) and its own advantage, REINFORCE with a leave-one-out baseline (the registry's `rloo`,
within the group of one problem), placed on that turn's tokens. The KL to the frozen base model (the
run's starting model) goes in the loss, weighted per token by the episode's `kl_weights`.

Per-turn rewards (`turn_rewards`), with r1, r2 the verifier scores of attempts 1 and 2:

- **Stage I**: turn 1 gets 0, turn 2 gets r2. Turn 1 is held near the base model by a strong KL:
  episodes carry `TurnWeights(beta_first / beta, 1)` and the loss uses `kl_coef = beta`, so turn-1
  tokens are penalised with `beta_first` and turn-2 tokens with `beta`.
- **Stage II** (run it from a Stage I model): turn 1 gets r1, turn 2 gets r2 + b with the shaping
  bonus b = alpha (r2 - r1). With alpha = 10: turn 2 gets i->c 11, c->i -10, c->c 1, i->i 0; the
  episode total r1 + r2 + b (SPECS' numbers) is i->c 11, c->i -9, c->c 2, i->i 0. KL beta on both turns.

Ablations: `shaping=False` (Stage II with turn 2 getting plain r2); `single_turn=True` (Stage II only:
one attempt per sample, trained on r1, no second attempt); "no Stage I" is simply a Stage II run
started from the base model (set `model.path` to the base instead of a Stage I result).

The logged `train/reward` is the mean over the step's episodes of the turn rewards' sum. Its running
mean over the last `best_window` steps picks the "best training reward" checkpoint, saved to
`run_dir/best` (with `best/best.json` holding the reward and step); `run_score` adds `best_reward`
and `best_step` to the summary.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor

from selfimprove.algos.advantages import ADVANTAGES
from selfimprove.config import LossConfig, RLRecipe
from selfimprove.policy.base import SamplingParams
from selfimprove.policy.lora import save_policy
from selfimprove.rollout.correct import SHORT_INSTRUCTION, TurnWeights, two_attempt_episodes
from selfimprove.rollout.episode import Episode, TokenBatch, collate, segment_mask
from selfimprove.rollout.single import sample_episodes
from selfimprove.train.driver import Job, StepCallback, run_training
from selfimprove.train.loop import sampling_params, update
from selfimprove.train.objectives import PolicyGradientObjective

__all__ = [
    "TURN1",
    "TURN2",
    "ScoreConfig",
    "ScoreRecipe",
    "run_score",
    "score_advantages",
    "score_loss_config",
    "score_step",
    "turn_rewards",
    "turn_weights",
]

TURN1 = "attempt1"
TURN2 = "attempt2"
BEST = "best"


class ScoreConfig(BaseModel):
    """SCoRe's own settings (SPECS §2)."""

    model_config = ConfigDict(extra="forbid")

    stage: Literal["I", "II"]
    alpha: float = 10.0  # Stage II shaping: b = alpha * (r2 - r1) added to turn 2
    beta_first: float = Field(0.1, ge=0.0)  # Stage I: strong KL on turn 1 (paper beta2 0.1-0.25)
    beta: float = Field(0.01, gt=0.0)  # KL on both turns in Stage II, on turn 2 in Stage I (paper beta1)
    instruction: str = SHORT_INSTRUCTION
    shaping: bool = True  # False: the "no shaping" ablation (turn 2 gets plain r2)
    single_turn: bool = False  # the single-turn ablation: one attempt, trained on r1 (Stage II only)
    best_window: int = Field(5, ge=1)  # steps in the running mean of train/reward that picks `best/`

    @model_validator(mode="after")
    def _single_turn_is_stage_two(self) -> "ScoreConfig":
        if self.single_turn and self.stage != "II":
            raise ValueError("single_turn is a Stage II ablation (Stage I gives turn 1 no reward)")
        return self


class ScoreRecipe(RLRecipe):
    """An RL recipe plus SCoRe's settings. `loss.kl_coef` and `loss.estimator` are set by SCoRe
    (kl_coef = score.beta, KL in the loss; RLOO per turn); the other loss fields (kl_estimator, clip,
    aggregation, epochs, minibatches) apply as usual. DAPO's `sampling.dynamic` and
    `loss.overlong_cache` are not used by SCoRe."""

    score: ScoreConfig

    @model_validator(mode="after")
    def _no_critic(self) -> "ScoreRecipe":
        if self.value.kind != "none":
            raise ValueError("SCoRe uses REINFORCE with a leave-one-out baseline: value.kind must be 'none'")
        return self


def turn_rewards(r1: Tensor, r2: Tensor, config: ScoreConfig) -> tuple[Tensor, Tensor]:
    """(reward credited to turn 1, reward credited to turn 2), each [B]; gamma = 0.

    Stage I: (0, r2). Stage II: (r1, r2 + alpha (r2 - r1)), or (r1, r2) without shaping. The
    single-turn ablation has no turn 2: (r1, 0).
    """
    r1 = r1.float()
    r2 = r2.float()
    if config.stage == "I":
        return torch.zeros_like(r1), r2.clone()
    if config.single_turn:
        return r1.clone(), torch.zeros_like(r2)
    if config.shaping:
        return r1.clone(), r2 + config.alpha * (r2 - r1)
    return r1.clone(), r2.clone()


def turn_weights(config: ScoreConfig) -> TurnWeights:
    """Per-token KL weights of the two turns, relative to the loss's kl_coef = beta."""
    if config.stage == "I":
        return TurnWeights(config.beta_first / config.beta, 1.0)
    return TurnWeights(1.0, 1.0)


def score_loss_config(recipe: ScoreRecipe) -> LossConfig:
    """The recipe's loss with SCoRe's KL: kl_coef = beta, in the loss (to the frozen base model)."""
    return recipe.loss.model_copy(update={"kl_coef": recipe.score.beta, "kl_in_reward": False, "estimator": "rloo"})


def _segment_reward(e: Episode, kind: str) -> float:
    for s in e.segments:
        if s.kind == kind:
            return float(s.reward or 0.0)
    return 0.0


def episode_turn_rewards(episodes: Sequence[Episode], config: ScoreConfig) -> tuple[Tensor, Tensor]:
    """`turn_rewards` of the verifier scores stored on each episode's attempt segments."""
    r1 = torch.tensor([_segment_reward(e, TURN1) for e in episodes], dtype=torch.float32)
    r2 = torch.tensor([_segment_reward(e, TURN2) for e in episodes], dtype=torch.float32)
    return turn_rewards(r1, r2, config)


def score_advantages(episodes: Sequence[Episode], batch: TokenBatch, config: ScoreConfig) -> Tensor:
    """[B, L-1] advantages: RLOO (leave-one-out within the group) of each turn's reward, on that turn's
    tokens only (target-aligned, like `batch.mask`)."""
    width = batch.mask.shape[1]
    t1, t2 = episode_turn_rewards(episodes, config)
    rloo = ADVANTAGES.get("rloo")
    groups = batch.groups
    m1 = segment_mask(episodes, TURN1, width).to(batch.mask.device)
    m2 = segment_mask(episodes, TURN2, width).to(batch.mask.device)
    a1 = rloo(t1.to(batch.mask.device), groups, m1)
    a2 = rloo(t2.to(batch.mask.device), groups, m2)
    return (a1 + a2).to(batch.mask.dtype)


def _single_attempt_episodes(job: Job, problems, params: SamplingParams, group_offset: int) -> list[Episode]:
    """Single-turn ablation: one attempt per sample, labelled as turn 1."""
    episodes = sample_episodes(job.policy, job.task, problems, params, group_offset=group_offset)
    for e in episodes:
        e.segments = [replace(s, kind=TURN1) if s.kind == "completion" else s for s in e.segments]
        e.info["correct1"] = e.info["correct"]
    return episodes


def transition_metrics(episodes: Sequence[Episode], single_turn: bool = False) -> dict[str, float]:
    """Acc@t1, Acc@t2, Delta, Delta_i->c, Delta_c->i as fractions of the episodes (SPECS §2)."""
    n = max(1, len(episodes))
    c1 = [bool(e.info.get("correct1")) for e in episodes]
    out = {"train/acc_t1": sum(c1) / n}
    if single_turn:
        return out
    c2 = [bool(e.info.get("correct2")) for e in episodes]
    out["train/acc_t2"] = sum(c2) / n
    out["train/delta"] = out["train/acc_t2"] - out["train/acc_t1"]
    out["train/i_to_c"] = sum((not a) and b for a, b in zip(c1, c2)) / n
    out["train/c_to_i"] = sum(a and (not b) for a, b in zip(c1, c2)) / n
    return out


def _track_best(job: Job, recipe: ScoreRecipe, done: int, reward: float) -> float:
    """Running mean of train/reward over the last `best_window` steps; save `best/` when it improves."""
    window = recipe.score.best_window
    recent = [float(r) for r in job.state.get("recent_rewards", [])][-(window - 1):] if window > 1 else []
    recent.append(reward)
    job.state["recent_rewards"] = recent
    running = sum(recent) / len(recent)
    best = job.state.get("best_reward")
    if best is None or running > float(best):
        job.state["best_reward"] = running
        job.state["best_step"] = done
        out = Path(recipe.run_dir) / BEST
        save_policy(job.policy, out, merged=bool(recipe.lora and recipe.lora.save_merged))
        (out / "best.json").write_text(json.dumps({"best_reward": running, "best_step": done}))
    return running


def score_step(recipe: ScoreRecipe):
    """The step function: sample, build (two-attempt) episodes, per-turn RLOO, one learner update."""
    config = recipe.score
    params = sampling_params(recipe)
    loss = score_loss_config(recipe)
    objective = PolicyGradientObjective(loss, max_len=recipe.sampling.max_new_tokens)
    weights = turn_weights(config)

    def step_fn(job: Job, step: int) -> dict[str, Any]:
        cursor = int(job.state.get("cursor", recipe.first_problem))
        problems = job.task.problems("train", recipe.prompts_per_step, start=cursor)
        if config.single_turn:
            episodes = _single_attempt_episodes(job, problems, params, cursor)
        else:
            episodes = two_attempt_episodes(
                job.policy, job.task, problems, params, instruction=config.instruction, kl_weights=weights, group_offset=cursor
            )
        job.state["cursor"] = cursor + recipe.prompts_per_step
        batch = collate(episodes, job.policy.pad_id)
        job.learner.add_reference_logprobs(batch)
        if loss.epochs > 1 or loss.minibatches > 1:
            batch.old_logprobs = job.learner.score(job.policy, batch)
        batch.advantages = score_advantages(episodes, batch, config)
        stats = update(job, batch, objective, loss, recipe.seed, step)
        metrics: dict[str, Any] = transition_metrics(episodes, config.single_turn)
        t1, t2 = episode_turn_rewards(episodes, config)
        metrics["train/reward"] = float((t1 + t2).mean())
        metrics["train/reward_turn1"] = float(t1.mean())
        metrics["train/reward_turn2"] = float(t2.mean())
        metrics["train/sampled_tokens"] = float(sum(len(s.token_ids) for e in episodes for s in e.segments if s.kind in (TURN1, TURN2)))
        metrics.update(stats)
        metrics["train/reward_running"] = _track_best(job, recipe, step + 1, metrics["train/reward"])
        return metrics

    return step_fn


def run_score(recipe: ScoreRecipe, on_step: StepCallback | None = None) -> dict[str, Any]:
    """Train SCoRe (one stage) with the shared driver; the summary adds `best_reward` and `best_step`."""
    loss = score_loss_config(recipe)
    summary = run_training(
        recipe,
        score_step(recipe),
        use_reference=True,
        temperature=recipe.sampling.temperature or 1.0,
        optimizer_steps_per_step=loss.epochs * loss.minibatches,
        on_step=on_step,
    )
    best_file = Path(recipe.run_dir) / BEST / "best.json"
    best = json.loads(best_file.read_text()) if best_file.exists() else {"best_reward": None, "best_step": None}
    summary.update(best_reward=best["best_reward"], best_step=best["best_step"], best_model=str(Path(recipe.run_dir) / BEST))
    (Path(recipe.run_dir) / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
