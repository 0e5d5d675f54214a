"""SCoRe: self-correction by two-attempt RL (Kumar et al. 2024, SPECS §2).

Episodes come from `rollout.correct.two_attempt_episodes`: prompt, attempt 1, a fixed instruction that
never says whether attempt 1 was right, attempt 2. Both attempts train; each turn gets its own reward
(gamma = 0) and its own advantage, REINFORCE with a leave-one-out baseline per turn (the registered
estimator `rloo_turns`, within the group of one problem), placed on that turn's tokens: the method
writes each turn's shaped reward on its segment and the shared `prepare` does the rest. The KL to the frozen base model (the
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
`run_dir/best` (with `best/best.json` holding the reward and step); the summary adds `best_reward`,
`best_step` and `best_model`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Sequence

if TYPE_CHECKING:  # loaded when a run starts, not when a recipe is validated
    from selfimprove.rollout.episode import Episode
    from torch import Tensor
from pydantic import BaseModel, ConfigDict, Field, model_validator

from selfimprove.config import LossConfig, RLRecipe
from selfimprove.methods.base import register_method
from selfimprove.methods.rl import PolicyGradientMethod
from selfimprove.rollout.correct import SHORT_INSTRUCTION, TURN1, TURN2, TurnWeights, two_attempt_episodes
from selfimprove.train.job import Job, MethodState, StepCallback

__all__ = [
    "Score",
    "ScoreConfig",
    "ScoreRecipe",
    "ScoreState",
    "run_score",
    "score_loss_config",
    "set_turn_rewards",
    "transition_metrics",
    "turn_rewards",
    "turn_weights",
]

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
    aggregation, epochs, minibatches) apply as usual. DAPO's dynamic sampling and overlong penalty
    do not apply to two-attempt episodes."""

    score: ScoreConfig

    @model_validator(mode="after")
    def _no_critic(self) -> "ScoreRecipe":
        if self.value.kind != "none":
            raise ValueError("SCoRe uses REINFORCE with a leave-one-out baseline: value.kind must be 'none'")
        if self.sampling.dynamic or self.loss.overlong_cache:
            raise ValueError("sampling.dynamic and loss.overlong_cache are DAPO's; SCoRe does not use them")
        return self


@dataclass
class ScoreState(MethodState):
    """The running reward window and the best checkpoint so far."""

    recent_rewards: list[float] = field(default_factory=list)
    best_reward: float | None = None
    best_step: int | None = None


def turn_rewards(r1: Tensor, r2: Tensor, config: ScoreConfig) -> tuple[Tensor, Tensor]:
    """(reward credited to turn 1, reward credited to turn 2), each [B]; gamma = 0.

    Stage I: (0, r2). Stage II: (r1, r2 + alpha (r2 - r1)), or (r1, r2) without shaping. The
    single-turn ablation has no turn 2: (r1, 0).
    """
    import torch

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
    """The recipe's loss with SCoRe's KL (kl_coef = beta, in the loss, to the frozen base model) and
    its estimator (RLOO per turn)."""
    return recipe.loss.model_copy(update={"kl_coef": recipe.score.beta, "kl_in_reward": False, "estimator": "rloo_turns"})


def _segment_reward(e: Episode, kind: str) -> float:
    for s in e.segments:
        if s.kind == kind:
            return float(s.reward or 0.0)
    return 0.0


def set_turn_rewards(episodes: Sequence[Episode], config: ScoreConfig) -> tuple[Tensor, Tensor]:
    """Replace each attempt's verifier score by the reward SCoRe credits to that turn (`turn_rewards`);
    return the two turns' rewards [B]."""
    import torch

    r1 = torch.tensor([_segment_reward(e, TURN1) for e in episodes], dtype=torch.float32)
    r2 = torch.tensor([_segment_reward(e, TURN2) for e in episodes], dtype=torch.float32)
    t1, t2 = turn_rewards(r1, r2, config)
    for e, a, b in zip(episodes, t1.tolist(), t2.tolist()):
        for s in e.segments:
            if s.kind == TURN1:
                s.reward = a
            elif s.kind == TURN2:
                s.reward = b
    return t1, t2


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


@register_method
class Score(PolicyGradientMethod):
    """SCoRe, one stage: sample (two-attempt) episodes, credit each turn, per-turn RLOO, one update."""

    name = "score"
    command = "score"
    help = "SCoRe: two-attempt self-correction RL (Stage I or II)"
    Recipe = ScoreRecipe
    State = ScoreState

    @property
    def loss(self) -> LossConfig:
        return score_loss_config(self.recipe)

    def label(self) -> str:
        return f"SCoRe stage {self.recipe.score.stage}"

    def _episodes(self, job: Job) -> list[Episode]:
        from selfimprove.rollout.single import sample_episodes

        config = self.recipe.score
        drawn = job.stream.take(job.task, self.recipe.prompts_per_step)
        if not config.single_turn:
            return two_attempt_episodes(job.policy, job.task, drawn.problems, self.params, instruction=config.instruction,
                                        kl_weights=turn_weights(config), group_offset=drawn.start)
        # Single-turn ablation: one attempt per sample, labelled as turn 1.
        episodes = sample_episodes(job.policy, job.task, drawn.problems, self.params, group_offset=drawn.start)
        for e in episodes:
            e.segments = [replace(s, kind=TURN1) if s.kind == "completion" else s for s in e.segments]
            e.info["correct1"] = e.info["correct"]
        return episodes

    def step(self, job: Job, step: int) -> dict[str, Any]:
        config = self.recipe.score
        episodes = self._episodes(job)
        metrics: dict[str, Any] = transition_metrics(episodes, config.single_turn)
        sampled = sum(len(s.token_ids) for e in episodes for s in e.segments if s.kind in (TURN1, TURN2))
        t1, t2 = set_turn_rewards(episodes, config)
        metrics["train/reward"] = float((t1 + t2).mean())
        metrics["train/reward_turn1"] = float(t1.mean())
        metrics["train/reward_turn2"] = float(t2.mean())
        metrics["train/sampled_tokens"] = float(sampled)
        metrics.update(self.learn(job, episodes, step))
        metrics["train/reward_running"] = self._track_best(job, step + 1, metrics["train/reward"])
        return metrics

    def _track_best(self, job: Job, done: int, reward: float) -> float:
        """Running mean of train/reward over the last `best_window` steps; save `best/` when it improves."""
        from selfimprove.policy.lora import save_policy

        state: ScoreState = job.state  # type: ignore[assignment]
        window = self.recipe.score.best_window
        recent = state.recent_rewards[-(window - 1):] if window > 1 else []
        recent.append(reward)
        state.recent_rewards = recent
        running = sum(recent) / len(recent)
        if state.best_reward is None or running > state.best_reward:
            state.best_reward, state.best_step = running, done
            out = Path(self.recipe.run_dir) / BEST
            save_policy(job.policy, out, merged=bool(self.recipe.lora and self.recipe.lora.save_merged))
            (out / "best.json").write_text(json.dumps({"best_reward": running, "best_step": done}))
        return running

    def summarise(self, job: Job) -> dict[str, Any]:
        best_file = Path(self.recipe.run_dir) / BEST / "best.json"
        best = json.loads(best_file.read_text()) if best_file.exists() else {"best_reward": None, "best_step": None}
        return {**best, "best_model": str(Path(self.recipe.run_dir) / BEST)}


def run_score(recipe: ScoreRecipe, on_step: StepCallback | None = None) -> dict[str, Any]:
    """Train SCoRe (one stage) with the shared driver; the summary adds `best_reward` and `best_step`."""
    return Score(recipe).run(on_step)
