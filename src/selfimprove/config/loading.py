"""YAML recipes in, validated schemas out: `--set` overrides, one error line per mistake (naming the
field), the task's own parameter schema, and the two-pass validation (light first: no torch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from selfimprove.config.recipes import DemoRecipe, Recipe, RLRecipe, SFTRecipe
from selfimprove.config.parts import EnvSpec, TaskSpec
from selfimprove.errors import ConfigError
from selfimprove.registry import light_validation

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


def _merge(into: dict[str, Any], value: dict[str, Any]) -> dict[str, Any]:
    """`value` merged into a copy of `into`, mappings key by key (a None removes the key)."""
    out = dict(into)
    for key, item in value.items():
        if item is None:
            out.pop(key, None)
        elif isinstance(item, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], item)
        else:
            out[key] = item
    return out


def apply_overrides(data: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """`--set a.b=VALUE` for each override: a mapping VALUE merges into the mapping already there (the
    keys it does not name keep their values), anything else replaces it, and `null` removes the key (the
    field falls back to its default; to replace a whole section, remove it first; a field whose None means
    something other than its default is set to None in the recipe file)."""
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for part in path[:-1]:
            child = node.get(part)
            if child is None:
                if value is None:
                    break  # nothing there to remove: no section is made for it
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part!r} is not a section")
            node = child
        else:
            merged = _merge(node, {path[-1]: value})
            node.clear()
            node.update(merged)
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


def validate_env(spec: EnvSpec, prefix: str = "env") -> None:
    """Check an environment's name, its params against its own schema, and every tool (importable, a
    typed function whose docstring describes its arguments), so a mistake fails at load."""
    from selfimprove.envs.plugins import make_tools, resolve_env

    validate(resolve_env(spec.name, f"{prefix}.name").Config, spec.params, f"{prefix}.params")
    make_tools(spec.tools, spec.tool_timeout, f"{prefix}.tools")


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
    if isinstance(recipe, Recipe) and recipe.env is not None:
        validate_env(recipe.env)
    if isinstance(recipe, DemoRecipe):
        check_demo(recipe)
    return recipe


def check_demo(recipe: DemoRecipe) -> None:
    """Validate the demo's nested stage settings now, not halfway through the run."""
    for name, schema in (("sft", SFTRecipe), ("rl", RLRecipe)):
        validate(schema, {"run_dir": "-", **getattr(recipe, name)}, name)


def dump_yaml(model: BaseModel) -> str:
    return yaml.safe_dump(model.model_dump(mode="json"), sort_keys=False)
