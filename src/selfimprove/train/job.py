"""What a training step may use (`Job`) and what a method gives the driver (`TrainingPlan`).

The driver (`train/driver.py`) owns everything methods share: the problem stream, the sampled-token
budget, checkpoints, evaluation, the summary and the final state. A method supplies its recipe, its
stream, its typed state and one step function; `methods/base.py` builds that from a registered method.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Protocol, TypeVar

from typing import TYPE_CHECKING

from selfimprove.config import EvalConfig, LoraConfig, ModelConfig, OptimConfig, Schedule, TaskSpec
from selfimprove.train.buffer import JsonlBuffer
from selfimprove.train.stream import ProblemStream

if TYPE_CHECKING:  # annotations only: method modules (and the CLI's recipe checks) need no torch
    from selfimprove.policy.base import Engine, TrainableModel
    from selfimprove.policy.value import ValueModel
    from selfimprove.rollout.conversation import EnvRun
    from selfimprove.tasks.base import Task
    from selfimprove.train.learner import Learner

StepCallback = Callable[[int, dict[str, Any]], None]
S = TypeVar("S", bound="MethodState")

BUFFERS = "buffers"


@dataclass
class MethodState:
    """A method's own state, saved in every checkpoint as JSON. Subclasses add typed fields (numbers,
    short lists); anything large goes into a `Job.buffer` instead."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls: type[S], data: dict[str, Any]) -> S:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"{cls.__name__}: the checkpoint holds unknown state {sorted(unknown)}")
        return cls(**data)


class TrainingRecipe(Protocol):
    run_dir: str
    seed: int
    steps: int
    model: ModelConfig
    task: TaskSpec
    optim: OptimConfig
    schedule: Schedule
    eval: EvalConfig


@dataclass
class Job:
    """What a step function may use. `state` is the method's typed state; `stream` hands out problems;
    `sampled_tokens` is the driver's running total (the budget)."""

    policy: Engine
    learner: Learner
    task: Task
    stream: ProblemStream
    state: MethodState
    run_dir: Path
    sampled_tokens: int = 0
    reward_failures: int = 0  # completions whose reward function call failed (`train/reward_failures`), summed
    buffers: dict[str, JsonlBuffer] = field(default_factory=dict)
    env: EnvRun | None = None  # the recipe's environment: episodes are conversations (`env:`)

    def buffer(self, name: str) -> JsonlBuffer:
        """A JSONL buffer in the run directory whose length each checkpoint records (see `train/buffer.py`)."""
        if name not in self.buffers:
            self.buffers[name] = JsonlBuffer(self.run_dir / BUFFERS / f"{name}.jsonl")
        return self.buffers[name]


class TrainingPlan(Protocol):
    """What the driver needs from a method (see `methods.base.Method`)."""

    recipe: Any
    use_reference: bool  # a frozen reference model (or the adapter-disabled policy) for KL terms
    temperature: float  # the temperature log-probs are computed at
    optimizer_steps_per_step: int  # learner steps per driver step (for the lr schedule)
    budget_ends_run: bool  # stop after the step whose sampling reaches `max_sampled_tokens`
    State: ClassVar[type[MethodState]]

    def make_stream(self) -> ProblemStream: ...

    def value_model(self, policy: TrainableModel) -> ValueModel | None: ...

    def step(self, job: Job, step: int) -> dict[str, Any]:
        """Run training step `step` (0-based) and return its metrics (`train/sampled_tokens` if it sampled)."""
        ...

    def summarise(self, job: Job) -> dict[str, Any]:
        """What the method adds to the run's summary, from the final job."""
        ...

    def checkpoint_state(self, job: Job) -> Any:
        """The method's state that JSON cannot hold (e.g. asynchronous rollouts in flight), or None."""
        ...

    def restore_checkpoint_state(self, job: Job, state: Any) -> None:
        """Take back what `checkpoint_state` returned (called once, on resume)."""
        ...

    def close(self, job: Job) -> None:
        """Stop whatever the method runs beside the steps (a rollout thread), before the engine closes."""
        ...


def lora_of(recipe: Any) -> LoraConfig | None:
    return getattr(recipe, "lora", None)
