"""Recipe schemas (pydantic) and YAML loading with one clear error line per mistake.

A recipe that names an unknown field or holds a bad value fails here, with the field's dotted path,
before any model is built or any file is written. `--set a.b=value` overrides are applied first.
`parts.py` holds the sections, `recipes.py` the built-in recipes, `loading.py` the YAML side.
"""

from selfimprove.config.loading import (
    apply_overrides,
    check_demo,
    dump_yaml,
    format_validation_error,
    load_recipe,
    parse_override,
    read_yaml,
    validate,
    validate_env,
    validate_task,
)
from selfimprove.config.parts import (
    EngineConfig,
    EnvSpec,
    EvalConfig,
    LoraConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    RolloutCorrectionConfig,
    SamplingConfig,
    Schedule,
    Strict,
    TaskSpec,
    ValueConfig,
)
from selfimprove.config.recipes import (
    AsyncConfig,
    DemoRecipe,
    DPORecipe,
    EvalRecipe,
    ImagineLayout,
    InitRecipe,
    Recipe,
    RLRecipe,
    SFTRecipe,
)
from selfimprove.errors import ConfigError
from selfimprove.registry import full_checks, light_validation

__all__ = [
    "AsyncConfig", "ConfigError", "DPORecipe", "DemoRecipe", "EngineConfig", "EnvSpec", "EvalConfig", "EvalRecipe", "ImagineLayout",
    "InitRecipe", "LoraConfig", "LossConfig", "ModelConfig", "OptimConfig", "RLRecipe", "Recipe", "RolloutCorrectionConfig", "SFTRecipe", "SamplingConfig",
    "Schedule", "Strict", "TaskSpec", "ValueConfig", "apply_overrides", "check_demo", "dump_yaml", "format_validation_error",
    "full_checks", "light_validation", "load_recipe", "parse_override", "read_yaml", "validate", "validate_env", "validate_task",
]
