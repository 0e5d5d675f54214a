"""Recipes: every shipped recipe validates; mistakes give one clear line naming the field and exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfimprove.cli import main
from selfimprove.config import (
    ConfigError,
    DemoRecipe,
    DPORecipe,
    EvalRecipe,
    InitRecipe,
    RLRecipe,
    SFTRecipe,
    apply_overrides,
    load_recipe,
    parse_override,
)

from selfimprove.methods.rrr import RRRRecipe  # noqa: E402
from selfimprove.methods.score import ScoreRecipe  # noqa: E402
from selfimprove.methods.compare import CompareRecipe
from selfimprove.methods.star import StarRecipe
from selfimprove.methods.warmup import WarmupRecipe  # noqa: E402
from selfimprove.methods.pair_sft import PairSFTRecipe  # noqa: E402
from selfimprove.critics.recipe import CriticRecipe  # noqa: E402
from selfimprove.search.recipe import SearchRecipe  # noqa: E402
from selfimprove.methods.alphallm import AlphaLLMRecipe  # noqa: E402
from selfimprove.methods.r3 import R3Recipe  # noqa: E402

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SCHEMAS = {
    "tiny-model.yaml": InitRecipe,
    "countdown-sft.yaml": SFTRecipe,
    "countdown-grpo.yaml": RLRecipe,
    "countdown-dr_grpo.yaml": RLRecipe,
    "countdown-rloo.yaml": RLRecipe,
    "countdown-reinforce_pp.yaml": RLRecipe,
    "countdown-ppo.yaml": RLRecipe,
    "countdown-dapo.yaml": RLRecipe,
    "countdown-dpo.yaml": DPORecipe,
    "smollm2-eval-gsm.yaml": EvalRecipe,
    "score-countdown.yaml": ScoreRecipe,
    "star-countdown.yaml": StarRecipe,
    "pair-sft-countdown.yaml": PairSFTRecipe,
    "rrr-countdown.yaml": RRRRecipe,
    "rrr-function-calling.yaml": RRRRecipe,
    "smollm2-grpo-lora.yaml": RLRecipe,
    "countdown-eval.yaml": EvalRecipe,
    "demo.yaml": DemoRecipe,
    "critic-countdown.yaml": CriticRecipe,
    "search-countdown.yaml": SearchRecipe,
    "selfcorrect-warmup.yaml": WarmupRecipe,
    "function-call-sft.yaml": SFTRecipe,
    "function-call-warmup.yaml": WarmupRecipe,
    "selfcorrect-countdown.yaml": CompareRecipe,
    "countdown-steps-sft.yaml": SFTRecipe,
    "alphallm-countdown.yaml": AlphaLLMRecipe,
    "chain-sft.yaml": SFTRecipe,
    "r3-chain.yaml": R3Recipe,
    "dataset-sft.yaml": SFTRecipe,
    "selfcorrect-countdown-steps.yaml": CompareRecipe,
    "dataset-grpo.yaml": RLRecipe,
    "own-task-sft.yaml": SFTRecipe,
    "gsm8k-grpo.yaml": RLRecipe,
    "math-grpo.yaml": RLRecipe,
    "function-call-grpo.yaml": RLRecipe,
    "code-grpo.yaml": RLRecipe,
    "rgym-sft.yaml": SFTRecipe,
    "chain-tools-sft.yaml": SFTRecipe,
    "chain-tools-grpo.yaml": RLRecipe,
    "tools-sums-sft.yaml": SFTRecipe,
    "tools-sums-grpo.yaml": RLRecipe,
}


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_every_shipped_recipe_validates(name: str) -> None:
    load_recipe(SCHEMAS[name], RECIPES / name)


def test_every_recipe_file_has_a_schema_in_this_test() -> None:
    assert {p.name for p in RECIPES.glob("*.yaml")} <= set(SCHEMAS)


def test_overrides_parse_yaml_values_and_create_sections() -> None:
    assert parse_override("optim.lr=1e-4") == (["optim", "lr"], 1e-4)
    assert parse_override('sampling.stop=["\\n"]')[1] == ["\n"]
    data = apply_overrides({"steps": 3}, ["steps=7", "loss.kl_coef=0.1", "model.path=some/dir"])
    assert data == {"steps": 7, "loss": {"kl_coef": 0.1}, "model": {"path": "some/dir"}}
    with pytest.raises(ConfigError, match="expected key=value"):
        parse_override("steps")


def test_unknown_field_is_named_with_its_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_recipe(RLRecipe, RECIPES / "countdown-grpo.yaml", ["optim.learning_rate=1"])
    assert str(err.value) == "optim.learning_rate: unknown field"


def test_bad_value_is_named_with_its_path() -> None:
    with pytest.raises(ConfigError) as err:
        load_recipe(RLRecipe, RECIPES / "countdown-grpo.yaml", ["sampling.top_p=1.5"])
    assert str(err.value).startswith("sampling.top_p: Input should be less than or equal to 1")
    assert "(got 1.5)" in str(err.value)


def test_task_params_are_checked_by_the_task_schema() -> None:
    with pytest.raises(ConfigError, match=r"^task\.params\.num_numberz: unknown field$"):
        load_recipe(SFTRecipe, RECIPES / "countdown-sft.yaml", ["task.params.num_numberz=3"])
    with pytest.raises(ConfigError, match=r"task\.name: unknown task 'nope'"):
        load_recipe(SFTRecipe, RECIPES / "countdown-sft.yaml", ["task.name=nope"])


def test_unknown_estimator_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"loss\.estimator: .*unknown estimator 'ppo2'.*grpo"):
        load_recipe(RLRecipe, RECIPES / "countdown-grpo.yaml", ["loss.estimator=ppo2"])


def test_gae_without_a_critic_is_refused() -> None:
    with pytest.raises(ConfigError, match="estimator 'gae' needs a value model"):
        load_recipe(RLRecipe, RECIPES / "countdown-grpo.yaml", ["loss.estimator=gae"])


def test_demo_checks_its_stage_settings_up_front() -> None:
    with pytest.raises(ConfigError, match=r"^rl\.sampling\.n: Input should be greater than or equal to 1"):
        load_recipe(DemoRecipe, RECIPES / "demo.yaml", ["rl.sampling.n=0"])


@pytest.mark.parametrize(
    "command, override, field",
    [
        ("train", "optim.learning_rate=1", "optim.learning_rate: unknown field"),
        ("sft", "steps=-3", "steps: Input should be greater than or equal to 1"),
        ("eval", "eval.split=validation", "eval.split: Input should be 'train' or 'test'"),
        ("demo", "rl.loss.estimator=nope", "rl.loss.estimator"),
    ],
)
def test_cli_config_error_is_one_line_exit_2_and_writes_nothing(
    command: str, override: str, field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = {"train": "countdown-grpo.yaml", "sft": "countdown-sft.yaml", "eval": "countdown-eval.yaml", "demo": "demo.yaml"}[command]
    run_dir = tmp_path / "run"
    code = main([command, str(RECIPES / recipe), "--set", f"run_dir={run_dir}", "--set", override])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and field in err[0] and err[0].startswith("selfimprove: config error: ")
    assert not run_dir.exists()


def test_cli_missing_recipe_file_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sft", "no/such/recipe.yaml"]) == 2
    assert "recipe no/such/recipe.yaml does not exist" in capsys.readouterr().err
