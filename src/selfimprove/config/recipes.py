"""The recipes of the built-in methods and commands (a method's own recipe may extend one of these in
its module)."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import ConfigDict, Field, model_validator

from selfimprove.config.parts import (
    EngineConfig,
    EnvSpec,
    EvalConfig,
    LoraConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    SamplingConfig,
    Schedule,
    Strict,
    TaskSpec,
    ValueConfig,
)
from selfimprove.registry import full_checks


class Recipe(Strict):
    """What every recipe has. `method` names the registered method a recipe is for (`selfimprove run`
    reads it; the method's own subcommand checks it)."""

    method: str | None = None
    run_dir: str
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    task: TaskSpec = Field(default_factory=TaskSpec)
    env: EnvSpec | None = None  # play the task as a conversation with an environment (tools, feedback)


class InitRecipe(Strict):
    preset: Literal["default", "small", "medium", "large"] = "default"  # policy.tiny.PRESETS
    seed: int = 0
    hidden_size: int | None = Field(None, ge=8)
    intermediate_size: int | None = Field(None, ge=8)
    num_hidden_layers: int | None = Field(None, ge=1)
    num_attention_heads: int | None = Field(None, ge=1)

    def overrides(self) -> dict[str, int]:
        keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


class ImagineLayout(Strict):
    """SFT also teaches the imagination layout (`rollout/imagine.py`): per step, `fraction` x batch_size
    extra episodes whose context is `seeds_in_prompt` of the step's problems and whose target is another
    one's prompt, so the model can later write new problems itself (AlphaLLM's `imagine.kind: policy`)."""

    fraction: float = Field(0.25, gt=0.0, le=1.0)
    seeds_in_prompt: int = Field(2, ge=1)


class SFTRecipe(Recipe):
    needs_demonstrations: ClassVar[bool] = True  # trains on the task's worked solutions (checked before a run)

    lora: LoraConfig | None = None
    imagine: ImagineLayout | None = None
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(64, ge=1)
    # Size of the pool of demonstrations (train problems 0..N-1, reshuffled every epoch); 0 draws a
    # fresh problem every time. Demonstrations are the scarce resource self-improvement starts from.
    num_problems: int = Field(0, ge=0)
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-3, warmup_steps=50, schedule="cosine"))
    schedule: Schedule = Field(default_factory=Schedule)
    eval: EvalConfig = Field(default_factory=EvalConfig)


class AsyncConfig(Strict):
    """Asynchronous rollouts (`train/async_rollouts.py`): step t+1's episodes are sampled while step t
    trains, from weights at most `max_staleness` steps old; 0 is the synchronous loop."""

    max_staleness: int = Field(1, ge=0)


class RLRecipe(Recipe):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    lora: LoraConfig | None = None
    asynchronous: AsyncConfig | None = Field(None, alias="async")
    value: ValueConfig = Field(default_factory=ValueConfig)
    steps: int = Field(200, ge=1)
    prompts_per_step: int = Field(16, ge=1)
    # Index of the first train problem to practise on: set it past an SFT pool so RL meets problems
    # that have no demonstration.
    first_problem: int = Field(0, ge=0)
    # Stop once the policy has generated this many tokens in training (comparisons at equal budget).
    max_sampled_tokens: int | None = Field(None, ge=1)
    sampling: SamplingConfig = Field(default_factory=SamplingConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: Schedule = Field(default_factory=Schedule)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _critic_matches_the_estimator(self) -> "RLRecipe":
        if self.asynchronous is not None and self.asynchronous.max_staleness > 0:
            if self.sampling.dynamic:
                raise ValueError("async rollouts draw the next step's problems ahead: they do not combine with sampling.dynamic")
            if self.engine.kind == "vllm":
                raise ValueError("async rollouts sample from a copy of the policy (hf) or a pinned Ray pool (ray); "
                                 "engine.kind vllm holds one set of weights: use async.max_staleness 0")
        if not full_checks():
            return self
        needs = self.loss.spec.needs_critic
        if needs and self.value.kind == "none":
            raise ValueError(f"estimator {self.loss.estimator!r} needs a value model: set value.kind to 'head' or 'separate'")
        if self.value.kind != "none" and not needs:
            raise ValueError(f"value.kind={self.value.kind!r} is only used by an estimator that needs a critic (gae)")
        return self


class DPORecipe(Recipe):
    """Online DPO on the model's own answers: per prompt, one right and one wrong sample form a pair."""

    lora: LoraConfig | None = None
    steps: int = Field(100, ge=1)
    prompts_per_step: int = Field(16, ge=1)  # pairs wanted per step
    first_problem: int = Field(0, ge=0)
    sampling: SamplingConfig = Field(default_factory=lambda: SamplingConfig(dynamic=True))
    beta: float = Field(0.1, gt=0.0)
    label_smoothing: float = Field(0.0, ge=0.0, le=0.5)
    optim: OptimConfig = Field(default_factory=lambda: OptimConfig(lr=1e-5))
    schedule: Schedule = Field(default_factory=Schedule)
    eval: EvalConfig = Field(default_factory=EvalConfig)


class EvalRecipe(Recipe):
    eval: EvalConfig = Field(default_factory=EvalConfig)


class DemoRecipe(Strict):
    """The whole slice: build the tiny model, SFT, evaluate, GRPO, evaluate, report."""

    run_dir: str = "runs/demo"
    seed: int = 0
    init: InitRecipe = Field(default_factory=InitRecipe)
    task: TaskSpec = Field(default_factory=TaskSpec)
    sft: dict[str, Any] = Field(default_factory=dict)  # SFTRecipe fields (run_dir, model, task are set by the demo)
    rl: dict[str, Any] = Field(default_factory=dict)  # RLRecipe fields
    eval: EvalConfig = Field(default_factory=EvalConfig)
