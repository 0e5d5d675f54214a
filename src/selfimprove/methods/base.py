"""A method is a registered way of making episodes; the driver and the one learner do the rest.

A `Method` names its recipe class, its typed state, its problem stream and its step (how it makes
episodes and which objective it hands the learner), and says what it adds to the summary. The CLI
builds one subcommand per registered method (plus `selfimprove run RECIPE`, which reads the recipe's
`method:`), and `selfimprove compare` trains any registered method at a given budget: a new method is
one module with one `@register_method` class and its test, and touches neither the CLI nor compare.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from selfimprove.config import ConfigError, Recipe, load_recipe, read_yaml
from selfimprove.progress import StageBar, no_bar
from selfimprove.registry import Registry
from selfimprove.train.job import MethodState
from selfimprove.train.stream import ProblemStream, SequentialStream

if TYPE_CHECKING:  # the engines (torch) load when a run starts, not when a recipe is validated
    from selfimprove.policy.base import TrainableModel
    from selfimprove.policy.value import ValueModel
    from selfimprove.train.job import Job, StepCallback

__all__ = ["METHODS", "Method", "find_method", "load_method_recipe", "register_method", "run_recipe"]

R = TypeVar("R", bound=Recipe)


class Method(ABC, Generic[R]):
    """One method for the shared driver (a `train.job.TrainingPlan`). Subclasses set the class
    attributes and implement `step`; the defaults suit a method that samples every step."""

    name: ClassVar[str]  # registry name and the recipe's `method:` value
    command: ClassVar[str]  # CLI subcommand
    help: ClassVar[str]
    Recipe: ClassVar[type[Recipe]]
    State: ClassVar[type[MethodState]] = MethodState
    # Where a comparison's token budget goes (a dotted recipe field), and whether the driver ends the
    # run once it is spent (False: the method spends it in a sampling phase of its own).
    budget_path: ClassVar[str] = "max_sampled_tokens"
    budget_ends_run: ClassVar[bool] = True
    # Whether its episodes can be conversations with the recipe's environment (`env:`).
    supports_env: ClassVar[bool] = False

    def __init__(self, recipe: R) -> None:
        if not isinstance(recipe, self.Recipe):
            raise TypeError(f"{self.name} needs a {self.Recipe.__name__}, got {type(recipe).__name__}")
        refuse_env(type(self), recipe)
        self.recipe = recipe

    # ------------------------------------------------------------------ what the driver reads
    @property
    def use_reference(self) -> bool:
        return False

    @property
    def temperature(self) -> float:
        return 1.0

    @property
    def optimizer_steps_per_step(self) -> int:
        return 1

    def make_stream(self) -> ProblemStream:
        return SequentialStream(int(getattr(self.recipe, "first_problem", 0)))

    def value_model(self, policy: TrainableModel) -> ValueModel | None:
        return None

    @abstractmethod
    def step(self, job: Job, step: int) -> dict[str, Any]:
        """Make this step's episodes, update the learner, return the step's metrics."""

    def summarise(self, job: Job) -> dict[str, Any]:
        """Extra summary fields from the final job (the driver writes summary.json once)."""
        return {}

    def checkpoint_state(self, job: Job) -> Any:
        """What a checkpoint keeps besides the typed `State` (anything picklable; None: nothing)."""
        return None

    def restore_checkpoint_state(self, job: Job, state: Any) -> None:
        """Take back `checkpoint_state` on resume."""

    def close(self, job: Job) -> None:
        """Stop what runs beside the steps; the driver calls it before the engine closes."""

    # ------------------------------------------------------------------ running and reporting
    def label(self) -> str:
        return self.name

    def report(self, summary: dict[str, Any]) -> list[str]:
        """What the CLI prints when the run is done."""
        return [f"{self.label()} done: held-out greedy accuracy {summary['accuracy']:.1%} -> {summary['model']}",
                *self.notes(summary)]

    def notes(self, summary: dict[str, Any]) -> list[str]:
        """Method-specific lines under the accuracy line."""
        return []

    def run(self, on_step: StepCallback | None = None) -> dict[str, Any]:
        from selfimprove.train.driver import run_training

        return run_training(self, on_step)

    def execute(self, bar: StageBar = no_bar) -> dict[str, Any]:
        """Run with progress shown by `bar` (one bar for the driver's steps; a method made of several
        runs, such as AlphaLLM's loop, shows one per stage)."""
        with bar(self.label(), self.recipe.steps) as on_step:
            return self.run(on_step)


METHODS: Registry[type[Method[Any]]] = Registry("method")


def register_method(cls: type[Method[Any]]) -> type[Method[Any]]:
    """Class decorator: register a method under its `name` (written once, on the class)."""
    METHODS.register(cls.name)(cls)
    return cls


def find_method(name: str) -> type[Method[Any]]:
    import selfimprove.methods  # noqa: F401  (registers the built-in methods)

    try:
        return METHODS.get(name)
    except KeyError as err:
        raise ConfigError(f"method: {err.args[0]}") from None


def load_method_recipe(method: type[Method[Any]], path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Load a recipe for `method`; a recipe that names another method is refused, first (its fields are
    another method's, so a field error would only mislead)."""
    from selfimprove.config import apply_overrides

    named = apply_overrides(read_yaml(path) if path is not None else {}, overrides).get("method")
    if isinstance(named, str) and named != method.name:
        raise ConfigError(f"method: this recipe is for {named!r}, not {method.name!r} (use `selfimprove run`)")
    recipe = load_recipe(method.Recipe, path, overrides)
    refuse_env(method, recipe)
    return recipe


def refuse_env(method: type[Method[Any]], recipe: Recipe) -> None:
    """A recipe with an `env:` section for a method whose episodes are not conversations: one line."""
    if getattr(recipe, "env", None) is not None and not method.supports_env:
        known = ", ".join(n for n in METHODS.names() if METHODS.get(n).supports_env)
        raise ConfigError(f"env: {method.name} makes its own episodes and does not run environments "
                          f"(methods that do: {known}; and evaluation and search)")


def method_of_file(path: str | Path) -> str:
    """The `method:` a recipe file names (for `selfimprove run`)."""
    name = read_yaml(path).get("method")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"method: recipe {path} names no method (add `method: NAME`; known: {', '.join(METHODS.names())})")
    return name


def run_recipe(recipe: Recipe, on_step: StepCallback | None = None) -> dict[str, Any]:
    """Run a loaded recipe with the method it names."""
    if recipe.method is None:
        raise ConfigError("method: the recipe names no method")
    return find_method(recipe.method)(recipe).run(on_step)
