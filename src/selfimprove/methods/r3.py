"""R^3: reverse-curriculum RL from demonstration states (Xi et al. 2024; SPECS §4).

Exploration starts part-way through a demonstration (`rollout/start_states.py`): s_k is the prompt
plus the first k demonstration steps, the prefix is context (never trained), and the verifier judges
the continuation alone (it must write its own answer: an empty one scores 0). The curriculum (`train/curriculum.py`) decides which s_k each
step trains from: `staged` (nearest the end first, sliding back to s_0), `mixed` (R^3's method: every
(problem, k) uniformly), `adaptive` (per problem, back on success, forward on failure), or `none`
(vanilla RL from s_0). Learning is the shared RL tail: by default PPO with GAE and a value head as R^3
does (gamma 1, lambda 0.95, clip 0.2, vf_coef 5, 2 epochs, KL 0.05 in the reward, the loss a mean over
the batch's tokens as its PPO code takes it); with
`loss.estimator: grpo` (and no value head) the groups are the samples of one start state.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from selfimprove.config import LossConfig, RLRecipe, Strict, ValueConfig
from selfimprove.methods.base import register_method
from selfimprove.methods.rl import PolicyGradientMethod, solved_groups
if TYPE_CHECKING:  # loaded when a run starts, not when a recipe is validated
    from selfimprove.train.curriculum import DrawnStates
from selfimprove.train.job import Job, StepCallback
from selfimprove.train.stream import ProblemStream

__all__ = ["R3", "R3Config", "R3Recipe", "run_r3"]


class R3Config(Strict):
    curriculum: Literal["none", "staged", "mixed", "adaptive"] = "mixed"
    pool: int = Field(512, ge=1)  # train problems with demonstrations: first_problem .. first_problem + pool - 1
    stage_steps: int = Field(50, ge=1)  # `staged`: training steps per stage (one step further back each stage)
    advance_at: float = Field(0.5, ge=0.0, le=1.0)  # `adaptive`: move back when a visit's success rate >= this
    retreat_at: float = Field(0.0, ge=0.0, le=1.0)  # `adaptive`: move forward when it is <= this


class R3Recipe(RLRecipe):
    """An RL recipe plus `r3`; the loss and critic default to R^3's PPO (SPECS §4)."""

    r3: R3Config = Field(default_factory=R3Config)
    loss: LossConfig = Field(default_factory=lambda: LossConfig(
        estimator="gae", eps_low=0.2, eps_high=0.2, kl_coef=0.05, kl_estimator="k1", epochs=2, gamma=1.0, lam=0.95,
        vf_coef=5.0, value_clip=0.2, aggregation="token_mean"))
    value: ValueConfig = Field(default_factory=lambda: ValueConfig(kind="head"))

    @model_validator(mode="after")
    def _advance_above_retreat(self) -> "R3Recipe":
        if self.r3.retreat_at >= self.r3.advance_at:
            raise ValueError(f"r3.retreat_at ({self.r3.retreat_at}) must be below r3.advance_at ({self.r3.advance_at})")
        return self


@register_method
class R3(PolicyGradientMethod):
    name = "r3"
    command = "r3"
    help = "R^3: reverse-curriculum RL from demonstration states (staged, mixed, adaptive; none = RL from s_0)"
    Recipe = R3Recipe

    def label(self) -> str:
        return f"R^3 ({self.recipe.r3.curriculum})"

    def make_stream(self) -> ProblemStream:
        from selfimprove.train.curriculum import Curriculum

        c = self.recipe.r3
        return Curriculum(c.curriculum, first=self.recipe.first_problem, pool=c.pool, seed=self.recipe.seed,
                          per_step=self.recipe.prompts_per_step, stage_steps=c.stage_steps, advance_at=c.advance_at,
                          retreat_at=c.retreat_at)

    def step(self, job: Job, step: int) -> dict[str, Any]:
        from selfimprove.rollout.start_states import start_state_episodes

        drawn: DrawnStates = job.stream.take(job.task, self.recipe.prompts_per_step)  # type: ignore[assignment]
        episodes = start_state_episodes(job.policy, job.task, drawn.states, self.params, group_offset=drawn.start)
        n = len(episodes)
        success = [0.0] * len(drawn.states)
        for e in episodes:
            success[e.group - drawn.start] += bool(e.info["correct"]) / self.params.n
        job.stream.observe(drawn, success)  # type: ignore[attr-defined]
        ks = [s.k for s in drawn.states]
        metrics: dict[str, Any] = {
            "train/reward": sum(e.reward for e in episodes) / n,
            "train/accuracy": sum(bool(e.info["correct"]) for e in episodes) / n,
            "train/solved_groups": solved_groups(episodes),
            "train/k_mean": sum(ks) / len(ks),
            "train/k0_share": sum(k == 0 for k in ks) / len(ks),
            "train/left_mean": sum(s.left for s in drawn.states) / len(ks),
            # the distribution of start states this step trained on: the share of each k drawn
            **{f"train/k_share/{k}": ks.count(k) / len(ks) for k in range(max(ks) + 1)},
            "train/sampled_tokens": float(sum(e.num_trainable for e in episodes)),
            "train/completion_tokens": sum(e.num_trainable for e in episodes) / n,
        }
        metrics.update(self.learn(job, episodes, step))
        return metrics


def run_r3(recipe: R3Recipe, on_step: StepCallback | None = None) -> dict[str, Any]:
    return R3(recipe).run(on_step)
