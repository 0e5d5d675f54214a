"""The parts recipes are made of (model, engine, task, sampling, optimizer, loss, evaluation, schedule),
each a strict pydantic model: an unknown field or a bad value fails with its dotted path."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from selfimprove.registry import full_checks

if TYPE_CHECKING:
    from selfimprove.algos.advantages import Estimator
    from selfimprove.policy.base import SamplingParams


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------- parts
class ModelConfig(Strict):
    """Where the policy comes from: a local HF folder, or `tiny` / `tiny:<preset>` (small, medium, large) for a new
    built-in model."""

    path: str = "tiny"
    chat: bool = False  # wrap prompts in the tokenizer's chat template
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    device: str = "cpu"

    @property
    def is_builtin(self) -> bool:
        from selfimprove.policy.load import is_builtin

        return is_builtin(self.path)


class EngineConfig(Strict):
    """Which engine samples (and, for `hf`, trains): a name from `policy.load.ENGINES`. `ray`: the learner
    trains in this process and `workers` Ray actors sample and verify (`policy/ray_engine.py`)."""

    kind: str = "hf"
    workers: int = Field(2, ge=1)  # ray: rollout workers (one torch thread each by default)
    address: str | None = None  # ray: a running cluster (`auto` after `ray start --head`); None starts one here
    cpus_per_worker: float = Field(1.0, gt=0.0)  # ray: CPUs (and torch threads) per worker
    # ray: seconds one worker call may take before the worker is taken for hung, killed and replaced
    call_timeout: float = Field(600.0, gt=0.0)
    max_retries: int = Field(3, ge=0)  # ray: replacements of a dead or hung worker per call before the run stops
    gpu_memory_utilization: float = Field(0.3, gt=0.0, le=1.0)  # vllm: its share of the GPU (training needs the rest)
    sleep: bool = False  # vllm: sleep (weights offloaded, KV cache freed) between sampling calls

    OPTIONS: ClassVar[dict[str, tuple[str, ...]]] = {
        "hf": (), "ray": ("workers", "address", "cpus_per_worker", "call_timeout", "max_retries"), "vllm": ("gpu_memory_utilization", "sleep")}

    @model_validator(mode="after")
    def _options_fit_the_kind(self) -> "EngineConfig":
        allowed = set(self.OPTIONS.get(self.kind, ()))
        fields = type(self).model_fields
        # Another kind's option at a value other than its default (a resolved recipe holds them all).
        foreign = sorted(n for n in fields if n != "kind" and n not in allowed and getattr(self, n) != fields[n].default)
        if foreign and self.kind in self.OPTIONS:
            owners = [k for k, names in self.OPTIONS.items() if set(foreign) & set(names)]
            raise ValueError(f"{', '.join(foreign)}: options of engine.kind {' / '.join(owners)}, not {self.kind}")
        return self

    def options(self) -> dict[str, Any]:
        """Keyword options for the engine's factory."""
        return {name: getattr(self, name) for name in self.OPTIONS.get(self.kind, ())}

    @field_validator("kind")
    @classmethod
    def _known_engine(cls, v: str) -> str:
        if not full_checks():
            return v
        from selfimprove.policy.load import ENGINES

        return ENGINES.require(v)


class TaskSpec(Strict):
    name: str = "countdown"
    params: dict[str, Any] = Field(default_factory=dict)


class EnvSpec(Strict):
    """A multi-turn environment around the task (`envs/`): the model's turns alternate with observations
    (tool results, instructions) until the environment ends the conversation, `max_turns` model turns
    pass, or the model has written `max_tokens` tokens in it."""

    name: str = "tools"
    """A registered environment (tools, function_call), package.module:Class, or an entry point."""
    tools: list[str] = Field(default_factory=list)
    """Tools the model may call: built in (calc, python) or package.module:function."""
    max_turns: int = Field(4, ge=1)
    """Model turns per conversation."""
    max_tokens: int | None = Field(None, ge=1)
    """Model tokens per conversation, over all its turns (None: max_turns x sampling.max_new_tokens)."""
    tool_timeout: float | None = Field(None, gt=0.0)
    """Seconds one tool call may take (None: the tool's default: calc 2, python 10, yours 10)."""
    params: dict[str, Any] = Field(default_factory=dict)
    """The environment's own settings (e.g. tools' faults: {calc: 0.2})."""

    def conversation_tokens(self, per_turn: int) -> int:
        """The model tokens one conversation may hold: `max_tokens`, else `max_turns` x `per_turn`."""
        return conversation_tokens(self.max_turns, self.max_tokens, per_turn)


def conversation_tokens(max_turns: int, max_tokens: int | None, per_turn: int) -> int:
    """`max_tokens`, else `max_turns` x `per_turn`: the one rule for a conversation's token limit."""
    return max_tokens if max_tokens is not None else max_turns * per_turn


class SamplingConfig(Strict):
    n: int = Field(8, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(32, ge=1)
    stop: list[str] = Field(default_factory=list)
    # DAPO dynamic sampling: drop groups whose rewards are all equal (no learning signal) and sample
    # more prompts, up to `max_refills` extra rounds, until the batch has `prompts_per_step` groups.
    dynamic: bool = False
    max_refills: int = Field(4, ge=0)

    def params(self) -> "SamplingParams":
        """The engine's sampling settings for these fields."""
        from selfimprove.policy.base import SamplingParams

        return SamplingParams(n=self.n, temperature=self.temperature, top_p=self.top_p,
                              max_new_tokens=self.max_new_tokens, stop=tuple(self.stop))


class OptimConfig(Strict):
    lr: float = Field(5e-5, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)
    max_grad_norm: float = Field(1.0, gt=0.0)
    micro_batch_size: int = Field(64, ge=1)
    # Run each prompt shared by several rows once and keep one copy of its KV cache (same numbers, less work).
    share_prefix: bool = True
    # The learner's passes (forward, backward, its no-grad log-prob passes) under torch.autocast in
    # bfloat16: matrix products in bf16 (AMX / avx512_bf16 on CPUs that have them), while weights,
    # gradients and AdamW stay in the model's dtype. Sampling is unchanged. Off by default: measured
    # in bench/README.md ("bf16 on CPU").
    autocast: Literal["none", "bfloat16"] = "none"


class ValueConfig(Strict):
    """PPO's critic: a scalar head on the policy (`head`) or a separate model (`separate`)."""

    kind: Literal["none", "head", "separate"] = "none"
    path: str | None = None  # the critic's initial weights for `separate` (default: the policy's folder)


class LoraConfig(Strict):
    """Train a LoRA adapter instead of all weights (PEFT); the reference is the adapter switched off."""

    r: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0.0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    # "auto": PEFT's default modules for the model's architecture (Llama/Qwen: q_proj, v_proj; GPT-2:
    # c_attn), or every linear layer for an architecture PEFT has no default for; "all-linear"; or names.
    target_modules: list[str] | str = "auto"
    save_merged: bool = False  # also write merged full weights next to the adapter


class RolloutCorrectionConfig(Strict):
    """Importance weights for the gap between the sampler's policy and the learner's before the update
    (staleness, another engine's numerics: `algos/rollout_correction.py`). `tis`: the ratio truncated at
    `cap`; `mis`: tokens (or sequences) whose ratio exceeds `cap` drop out of the policy gradient;
    `none`: no weight (the gap is still measured and logged as train/rollout_*)."""

    kind: Literal["none", "tis", "mis"] = "none"
    level: Literal["token", "sequence"] = "token"
    cap: float = Field(2.0, gt=1.0)
    low: float | None = Field(None, gt=0.0, lt=1.0)  # mis: also drop ratios below this (verl's lower threshold)

    @model_validator(mode="after")
    def _low_is_for_mis(self) -> "RolloutCorrectionConfig":
        if self.low is not None and self.kind != "mis":
            raise ValueError("low (a lower threshold) applies to kind mis only")
        return self


class LossConfig(Strict):
    """How rewards become a loss (SPECS §1)."""

    estimator: str = "grpo"
    policy_loss: str = "clip"  # the surrogate, from `algos.policy_losses.POLICY_LOSSES`
    eps_low: float = Field(0.2, ge=0.0)
    eps_high: float = Field(0.2, ge=0.0)
    aggregation: Literal["seq_mean", "token_mean", "dr_grpo"] = "seq_mean"
    kl_coef: float = Field(0.0, ge=0.0)
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    # KL folded into the reward (-kl_coef * (logp_old - logp_ref) per token) instead of the loss.
    # None: the estimator's own convention (in the reward for reinforce_pp and gae, else in the loss).
    kl_in_reward: bool | None = None
    # Where the KL in the loss applies: the trained tokens, or every token the policy generated in the
    # episode (RRR's first attempt and retry too: the anti-forgetting option of issue 15).
    kl_scope: Literal["trained", "generated"] = "trained"
    epochs: int = Field(1, ge=1)  # passes over each rollout batch
    minibatches: int = Field(1, ge=1)  # optimizer steps per pass
    gamma: float = Field(1.0, ge=0.0, le=1.0)  # GAE / REINFORCE++ discount
    lam: float = Field(0.95, ge=0.0, le=1.0)  # GAE lambda
    # GRPO's std scaling (TRL's scale_rewards): by the group's std, the batch's, or none; and the epsilon
    # added to the std (also REINFORCE++'s and GAE's whitening). TRL uses 1e-4.
    scale_rewards: Literal["group", "batch", "none"] = "group"
    std_eps: float = Field(1e-6, gt=0.0)
    vf_coef: float = Field(0.5, ge=0.0)
    value_clip: float | None = Field(0.2, ge=0.0)
    entropy_coef: float = Field(0.0, ge=0.0)
    # DAPO soft overlong penalty: 0 up to max_new_tokens - overlong_cache, then linear to -1 (0: off).
    overlong_cache: int = Field(0, ge=0)
    rollout_correction: RolloutCorrectionConfig = Field(default_factory=RolloutCorrectionConfig)

    @property
    def spec(self) -> "Estimator":
        from selfimprove.algos.advantages import ADVANTAGES

        return ADVANTAGES.get(self.estimator)

    @property
    def token_level(self) -> bool:
        """The estimator takes per-token KL rewards itself (declared where it is registered)."""
        return self.spec.token_level

    @property
    def kl_as_reward(self) -> bool:
        return self.kl_coef > 0 and (self.token_level if self.kl_in_reward is None else self.kl_in_reward)

    @model_validator(mode="after")
    def _kl_scope_needs_a_kl_in_the_loss(self) -> "LossConfig":
        if self.kl_scope == "generated" and (self.kl_coef == 0 or self.kl_in_reward):
            raise ValueError("kl_scope 'generated' needs kl_coef > 0 with the KL in the loss (kl_in_reward: false)")
        return self

    @field_validator("estimator")
    @classmethod
    def _known_estimator(cls, v: str) -> str:
        if not full_checks():
            return v
        from selfimprove.algos.advantages import ADVANTAGES

        return ADVANTAGES.require(v, "estimator")

    @field_validator("policy_loss")
    @classmethod
    def _known_policy_loss(cls, v: str) -> str:
        if not full_checks():
            return v
        from selfimprove.algos.policy_losses import POLICY_LOSSES

        return POLICY_LOSSES.require(v)


class EvalConfig(Strict):
    split: Literal["train", "test"] = "test"
    # The split's first index judged. A validation set for tuning is `split: train` with `start` far past
    # every train problem the run draws (generated tasks: e.g. 1,000,000), so the test split stays unseen.
    # Generated tasks draw with replacement: such a set may repeat prompts training saw (Countdown's
    # 3-number space: 11% of 200 against 6,000 draws), like any i.i.d. validation draw.
    start: int = Field(0, ge=0)
    num_problems: int = Field(200, ge=1)
    batch_size: int = Field(200, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    # Samples per problem (0: greedy only): then pass@k (unbiased) for each k in pass_k, maj@k (majority
    # vote over the first k samples' answers) for each k in maj_k, and avg@n (mean over all n samples).
    samples: int = Field(0, ge=0)
    temperature: float = Field(1.0, gt=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    pass_k: list[int] = Field(default_factory=lambda: [1])
    maj_k: list[int] | None = None  # None: the pass_k values

    @model_validator(mode="after")
    def _k_fits(self) -> "EvalConfig":
        if self.samples and any(k > self.samples for k in self.pass_k):
            raise ValueError(f"pass_k {self.pass_k} asks for more than samples={self.samples}")
        if self.samples and self.maj_k and any(not 1 <= k <= self.samples for k in self.maj_k):
            raise ValueError(f"maj_k {self.maj_k} must lie in 1..samples={self.samples}")
        return self

    @property
    def vote_k(self) -> list[int]:
        return list(self.pass_k if self.maj_k is None else self.maj_k)


class Schedule(Strict):
    """How often a long job evaluates, checkpoints and how many checkpoints it keeps."""

    eval_every: int = Field(0, ge=0)  # 0: only at the end
    checkpoint_every: int = Field(50, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    eval_problems: int = Field(100, ge=1)  # held-out problems for the periodic evaluation
    # Keep every trained episode (prompt, completion, reward) in RUN_DIR/buffers/rollouts.jsonl and
    # DPO's pairs in pairs.jsonl, for `selfimprove export` (TRL's column names).
    save_rollouts: bool = True
