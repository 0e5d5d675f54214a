"""Recipe schemas (pydantic) and YAML loading with one clear error line per mistake.

A recipe that names an unknown field or holds a bad value fails here, with the field's dotted path,
before any model is built or any file is written. `--set a.b=value` overrides are applied first.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Sequence, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from selfimprove.errors import ConfigError
from selfimprove.registry import full_checks, light_validation

__all__ = ["ConfigError", "full_checks", "light_validation"]  # and the schemas below

if TYPE_CHECKING:
    from selfimprove.algos.advantages import Estimator
    from selfimprove.policy.base import SamplingParams


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


# --------------------------------------------------------------------------------------- parts
class ModelConfig(Strict):
    """Where the policy comes from: a local HF folder, or `tiny` / `tiny:small` for a new built-in model."""

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
    gpu_memory_utilization: float = Field(0.3, gt=0.0, le=1.0)  # vllm: its share of the GPU (training needs the rest)
    sleep: bool = False  # vllm: sleep (weights offloaded, KV cache freed) between sampling calls

    OPTIONS: ClassVar[dict[str, tuple[str, ...]]] = {
        "hf": (), "ray": ("workers", "address", "cpus_per_worker"), "vllm": ("gpu_memory_utilization", "sleep")}

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
    # Run each prompt shared by several rows once and repeat its KV cache (same numbers, less work).
    share_prefix: bool = True


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
    num_problems: int = Field(200, ge=1)
    batch_size: int = Field(200, ge=1)
    max_new_tokens: int = Field(32, ge=1)
    samples: int = Field(0, ge=0)  # samples per problem for pass@k (0: greedy only)
    temperature: float = Field(1.0, gt=0.0)
    pass_k: list[int] = Field(default_factory=lambda: [1])

    @model_validator(mode="after")
    def _k_fits(self) -> "EvalConfig":
        if self.samples and any(k > self.samples for k in self.pass_k):
            raise ValueError(f"pass_k {self.pass_k} asks for more than samples={self.samples}")
        return self


class Schedule(Strict):
    """How often a long job evaluates, checkpoints and how many checkpoints it keeps."""

    eval_every: int = Field(0, ge=0)  # 0: only at the end
    checkpoint_every: int = Field(50, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    eval_problems: int = Field(100, ge=1)  # held-out problems for the periodic evaluation
    # Keep every trained episode (prompt, completion, reward) in RUN_DIR/buffers/rollouts.jsonl and
    # DPO's pairs in pairs.jsonl, for `selfimprove export` (TRL's column names).
    save_rollouts: bool = True


# --------------------------------------------------------------------------------------- recipes
class Recipe(Strict):
    """What every recipe has. `method` names the registered method a recipe is for (`selfimprove run`
    reads it; the method's own subcommand checks it)."""

    method: str | None = None
    run_dir: str
    seed: int = 0
    model: ModelConfig = Field(default_factory=ModelConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)
    task: TaskSpec = Field(default_factory=TaskSpec)


class InitRecipe(Strict):
    preset: Literal["default", "small"] = "default"
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
        if self.asynchronous is not None and self.asynchronous.max_staleness > 0 and self.sampling.dynamic:
            raise ValueError("async rollouts draw the next step's problems ahead: they do not combine with sampling.dynamic")
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


# --------------------------------------------------------------------------------------- loading
R = TypeVar("R", bound=BaseModel)


def parse_override(item: str) -> tuple[list[str], Any]:
    """`a.b.c=value` -> (["a", "b", "c"], value parsed as YAML, so 1e-4, true and [1, 2] work)."""
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected key=value")
    key, raw = item.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"--set {item!r}: empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str):
        try:  # YAML 1.1 reads 1e-4 (no dot) as a string; people mean the number
            value = float(value)
        except ValueError:
            pass
    return path, value


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section")
            node = child
        node[path[-1]] = value
    return data


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line per problem: `field.path: message (got value)`."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in (prefix.split(".") if prefix else []) + list(e["loc"]))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        got = "" if e["type"] in ("extra_forbidden", "missing") else f" (got {e.get('input')!r})"
        lines.append(f"{loc or '<recipe>'}: {msg}{got}")
    return "\n".join(lines)


def validate(schema: type[R], data: dict[str, Any], prefix: str = "") -> R:
    try:
        return schema.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, prefix)) from None


def validate_task(spec: TaskSpec, prefix: str = "task") -> None:
    """Check a task's name (registered, `package.module:Class`, or an entry point) and its params
    against the task's own schema, so typos fail at load."""
    from selfimprove.tasks.plugins import resolve_task

    validate(resolve_task(spec.name, f"{prefix}.name").Config, spec.params, f"{prefix}.params")


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {path} is not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of fields")
    return data


def load_recipe(schema: type[R], path: str | Path | None, overrides: Sequence[str] = ()) -> R:
    """Read YAML (or start empty), apply `--set` overrides, validate everything."""
    data = apply_overrides(read_yaml(path) if path is not None else {}, overrides)
    with light_validation():  # names, types and ranges first, before the registries load torch
        validate(schema, data)
    recipe = validate(schema, data)
    if isinstance(recipe, (Recipe, DemoRecipe)):
        validate_task(recipe.task)
    if isinstance(recipe, DemoRecipe):
        check_demo(recipe)
    return recipe


def check_demo(recipe: DemoRecipe) -> None:
    """Validate the demo's nested stage settings now, not halfway through the run."""
    for name, schema in (("sft", SFTRecipe), ("rl", RLRecipe)):
        validate(schema, {"run_dir": "-", **getattr(recipe, name)}, name)


def dump_yaml(model: BaseModel) -> str:
    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False)
