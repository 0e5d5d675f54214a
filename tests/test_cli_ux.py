"""The command line as a new user meets it: `--set` merges into a section and `null` removes a key, a
recipe for another method is named as such first, tables are plain Markdown at full width when the
output is not a terminal, and `--help` is complete."""

from __future__ import annotations

from pathlib import Path

import pytest

from selfimprove.config import ConfigError, RLRecipe, load_recipe

ROOT = Path(__file__).resolve().parent.parent
SEARCH = ROOT / "recipes" / "search-countdown.yaml"


def test_set_on_a_section_merges_and_null_removes_a_key() -> None:
    from selfimprove.config import apply_overrides, read_yaml

    data = apply_overrides({"search": {"params": {"simulations": 8, "step": "line", "max_answer_tokens": 24}}},
                           ["search.params={simulations: 16}"])
    assert data["search"]["params"] == {"simulations": 16, "step": "line", "max_answer_tokens": 24}
    data = apply_overrides(data, ["search.params={step: null}", "search.params.max_answer_tokens=null"])
    assert data["search"]["params"] == {"simulations": 16}
    assert apply_overrides({"steps": 1}, ["lora.r=null"]) == {"steps": 1}  # removing makes no section (it would turn LoRA on)
    recipe = load_recipe(RLRecipe, ROOT / "recipes" / "countdown-grpo.yaml", ["sampling={n: 4}", "optim=null"])
    base = read_yaml(ROOT / "recipes" / "countdown-grpo.yaml")
    assert recipe.sampling.n == 4 and recipe.sampling.max_new_tokens == base["sampling"]["max_new_tokens"]
    assert recipe.optim.lr == RLRecipe.model_fields["optim"].default_factory().lr  # back to the default


def test_a_recipe_for_another_method_is_named_before_its_fields(capsys: pytest.CaptureFixture[str]) -> None:
    from selfimprove.cli import main

    assert main(["train", str(ROOT / "recipes" / "countdown-sft.yaml")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["selfimprove: config error: method: this recipe is for 'sft', not 'rl' (use `selfimprove run`)"]


def test_tables_are_markdown_at_full_width_when_not_a_terminal(capsys: pytest.CaptureFixture[str]) -> None:
    from selfimprove.progress import show_table

    wide = "simulations=16, critics=value+prm+orm, fast_rollouts=true, merge_retries=2"
    show_table("search on 200 problems", ["setting", "accuracy"], [[wide, "45.2%"], [wide.replace("16", "32"), "47.0%"],
                                                                  ["a|b", "1"]])
    out = capsys.readouterr().out
    assert out.splitlines() == ["search on 200 problems", "", "| setting | accuracy |", "|:---|---:|",
                                f"| {wide} | 45.2% |", f"| {wide.replace('16', '32')} | 47.0% |", "| a\\|b | 1 |"]


def test_the_top_level_help_is_complete(capsys: pytest.CaptureFixture[str]) -> None:
    from selfimprove.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "checked:\ntasks with verifiers, search and critics, and one learner under every method." in out
    assert out.rstrip().endswith("the guides are in docs/.") and "--set key=null` removes a key" in out


def test_a_wrong_section_value_still_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"sampling.n: Input should be greater than or equal to 1"):
        load_recipe(RLRecipe, ROOT / "recipes" / "countdown-grpo.yaml", ["sampling={n: 0}"])
