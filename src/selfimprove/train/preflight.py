"""Everything a run reads, checked before it writes anything (`selfimprove.errors` for the one-line
errors): the run folder, the task and its data (built once, so a bad file names its line here), the
held-out split's size against what evaluation asks for, every model folder the recipe names, and what
the task's problems need of the model (`train/fit_checks.py`: demonstrations for SFT, prompts plus
generated tokens within the model's context; warnings for unreadable characters and oversized steps).

Works on any recipe by what it has (`run_dir`, `task`, `model`, `eval`, `schedule`, `value.path`,
`critic_model`...), so methods made of several runs (AlphaLLM, compare, the demo) get the same checks.
"""

from __future__ import annotations

from typing import Any

from selfimprove.config import validate_task
from selfimprove.errors import DataError, UserError
from selfimprove.policy.check import check_device, check_model_folder
from selfimprove.policy.load import is_builtin
from selfimprove.tasks.base import Task
from selfimprove.tasks.plugins import make_task
from selfimprove.train.fit_checks import check_fit
from selfimprove.train.run_dir import check_run_dir

__all__ = ["check_model", "check_task", "preflight"]


def check_task(spec: Any, *, field: str = "task") -> Task:
    """Build the task (reading its data); a loader's complaint becomes a `DataError` naming the task."""
    validate_task(spec, field)  # its params, with their paths (a ConfigError)
    try:
        return make_task(spec.name, spec.params)
    except UserError:
        raise
    except (ValueError, FileNotFoundError, ImportError, UnicodeDecodeError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DataError(f"{field} {spec.name!r}: {first}") from None


def _split_hint(task: Task) -> str:
    cfg = task.config
    if getattr(cfg, "test_path", None) or getattr(cfg, "split_field", None):
        return "or add rows to the test data"
    hint = f"or raise task.params.test_fraction (now {cfg.test_fraction})"
    if "test_path" in type(cfg).model_fields:
        hint += ", or give a test file (task.params.test_path)"
    return hint


def check_split_sizes(task: Task, recipe: Any) -> None:
    """The held-out split must hold what evaluation asks for (the final eval and the periodic one)."""
    if task.size("train") == 0:
        raise DataError(f"task {task.name!r}: the train split is empty: lower task.params.test_fraction or add rows")
    evals = getattr(recipe, "eval", None)
    if evals is None or not hasattr(evals, "num_problems"):
        return
    split = getattr(evals, "split", "test")
    size = task.size(split)
    if size is None:
        return
    start = getattr(evals, "start", 0)
    if start >= size:
        raise DataError(f"eval.start: the {split} split of task {task.name!r} has {size} problems, so it has none "
                        f"from index {start}: set eval.start below {size}")
    asked = [("eval.num_problems", evals.num_problems)]
    schedule = getattr(recipe, "schedule", None)
    if schedule is not None and getattr(schedule, "eval_every", 0):
        asked.append(("schedule.eval_problems", schedule.eval_problems))
    left = size - start
    for field, wanted in asked:
        if wanted > left:
            after = f" from eval.start {start}" if start else ""
            raise DataError(
                f"{field}: the {split} split of task {task.name!r} has {left} problem{'s' * (left != 1)}{after} but "
                f"{field} is {wanted}: set {field} to at most {left}, {_split_hint(task)}"
            )


def check_model(model: Any, *, field: str = "model") -> None:
    """A recipe's `model:` section: the built-in tiny model needs only the device."""
    if is_builtin(model.path):
        check_device(model.device)
        return
    check_model_folder(model.path, chat=model.chat, device=model.device, field=f"{field}.path")


def preflight(recipe: Any) -> Task | None:
    """Check the run folder, the task (and its data and split sizes) and the model folder(s) of a recipe."""
    run_dir = getattr(recipe, "run_dir", None)
    if run_dir:
        check_run_dir(run_dir)
    task = None
    spec = getattr(recipe, "task", None)
    if spec is not None and hasattr(spec, "params"):
        task = check_task(spec)
        check_split_sizes(task, recipe)
    model = getattr(recipe, "model", None)
    if model is not None and hasattr(model, "path"):
        check_model(model)
    if task is not None:
        check_fit(task, recipe)
    lora = getattr(recipe, "lora", None)
    if lora is not None and model is not None and not isinstance(lora.target_modules, str):
        from selfimprove.policy.lora import check_lora_targets

        check_lora_targets(model.path, lora.target_modules)
    value = getattr(recipe, "value", None)
    if value is not None and getattr(value, "path", None):
        check_model_folder(value.path, field="value.path")
    return task
