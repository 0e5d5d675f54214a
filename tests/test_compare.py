"""`selfimprove compare`: every self-correction method from one base model, at one budget, one table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfimprove.config import ConfigError
from selfimprove.methods.compare import BUILTIN_ARMS, METRICS, CompareRecipe, plan, run_compare

ALL_ARMS = list(BUILTIN_ARMS)

PARAMS = {"num_numbers": 2, "max_number": 9, "min_target": 1, "max_target": 20}
SMALL_EVAL = {"num_problems": 4, "max_new_tokens": 6}
BUDGET = 120


def compare_recipe(tmp_path: Path, model: Path, **overrides) -> CompareRecipe:
    fields = dict(
        run_dir=str(tmp_path / "cmp"),
        seeds=[0],
        task={"name": "countdown", "params": PARAMS},
        base={"model": {"path": str(model)},
              "warmup": {"steps": 2, "batch_size": 4, "num_problems": 8, "eval": SMALL_EVAL, "warmup": {"max_new_tokens": 6},
                         "schedule": {"checkpoint_every": 100}}},
        budget_tokens=BUDGET,
        defaults={
            "score": {"steps": 100, "prompts_per_step": 2, "sampling": {"n": 2, "max_new_tokens": 6},
                      "schedule": {"checkpoint_every": 100, "eval_every": 0}, "eval": SMALL_EVAL},
            "star": {"prompts_per_call": 2, "sampling": {"n": 2, "max_new_tokens": 6}, "batch_size": 4,
                     "star": {"rounds": 3, "steps_per_round": 1}, "schedule": {"checkpoint_every": 100, "eval_every": 0},
                     "eval": SMALL_EVAL},
            "pair_sft": {"prompts_per_call": 2, "sampling": {"n": 2, "max_new_tokens": 6}, "steps": 2, "batch_size": 4,
                         "schedule": {"checkpoint_every": 100, "eval_every": 0}, "eval": SMALL_EVAL},
        },
        eval={"num_problems": 6, "max_new_tokens": 6},
    )
    fields.update(overrides)
    return CompareRecipe.model_validate(fields)


def test_the_plan_gives_every_method_the_same_budget(small_model_dir: Path, tmp_path: Path) -> None:
    arms = [a if a != "score" else {"name": "score", "stages": [
        {"method": "score", "name": "score_stage1", "budget": 0.25, "set": {"score": {"stage": "I"}}},
        {"method": "score", "set": {"score": {"stage": "II"}}}]} for a in ALL_ARMS]
    arms = [a if a != "score_no_shaping" else {"name": "score_no_shaping", "stages": [
        {"method": "score", "name": "score_stage1", "budget": 0.25, "set": {"score": {"stage": "I"}}},
        {"method": "score", "set": {"score": {"stage": "II", "shaping": False}}}]} for a in arms]
    recipe = compare_recipe(tmp_path, small_model_dir, arms=arms)
    plans = plan(recipe, seed=3)
    stages = {arm: [(name, method.recipe) for name, method in runs] for arm, runs in plans.items()}
    assert stages["base"] == [] and stages["self_refine"] == []
    (n1, s1), (n2, s2) = stages["score"]
    assert (n1, s1.score.stage, s1.max_sampled_tokens) == ("score_stage1", "I", 30)
    assert (n2, s2.score.stage, s2.max_sampled_tokens, s2.score.shaping) == ("score", "II", 90, True)
    assert s2.model.path == str(Path(recipe.run_dir) / "seed3" / "score_stage1" / "final")
    assert stages["score_no_shaping"][0][1] is s1 and stages["score_no_shaping"][1][1].score.shaping is False
    (_, alone), = stages["score_no_stage1"]
    assert alone.score.stage == "II" and alone.max_sampled_tokens == BUDGET and alone.model.path.endswith("base/final")
    (_, single), = stages["score_single_turn"]
    assert single.score.single_turn and single.max_sampled_tokens == BUDGET
    assert stages["star"][0][1].star.max_sampled_tokens == BUDGET and stages["star"][0][1].seed == 3
    assert stages["pair_sft"][0][1].pair_sft.max_sampled_tokens == BUDGET


def test_a_bad_method_field_fails_before_training(small_model_dir: Path, tmp_path: Path) -> None:
    with pytest.raises((ConfigError, ValueError), match="learning_rate"):
        compare_recipe(tmp_path, small_model_dir, defaults={"score": {"optim": {"learning_rate": 1.0}}})
    with pytest.raises((ConfigError, ValueError), match="unknown built-in arm"):
        compare_recipe(tmp_path, small_model_dir, arms=["base", "scor"])
    with pytest.raises((ConfigError, ValueError), match="unknown method"):
        compare_recipe(tmp_path, small_model_dir, arms=[{"name": "x", "stages": [{"method": "nope"}]}])


def test_any_registered_method_is_an_arm(small_model_dir: Path, tmp_path: Path) -> None:
    """compare has no per-method list: an arm of plain RL (GRPO) at the same budget needs only a recipe."""
    rl = {"name": "grpo", "label": "single-attempt GRPO",
          "stages": [{"method": "rl", "set": {"steps": 100, "prompts_per_step": 2, "sampling": {"n": 2, "max_new_tokens": 6},
                                               "schedule": {"checkpoint_every": 100}, "eval": SMALL_EVAL}}]}
    recipe = compare_recipe(tmp_path, small_model_dir, arms=["base", rl])
    (name, method), = plan(recipe, seed=0)["grpo"]
    assert name == "grpo" and method.name == "rl" and method.recipe.max_sampled_tokens == BUDGET
    summary = run_compare(recipe)
    assert list(summary["methods"]) == ["base", "grpo"]
    assert BUDGET <= summary["methods"]["grpo"]["sampled_tokens"] < 3 * BUDGET
    assert "single-attempt GRPO" in (Path(recipe.run_dir) / "summary.md").read_text()


def test_compare_writes_one_row_per_method_and_resumes(small_model_dir: Path, tmp_path: Path) -> None:
    recipe = compare_recipe(tmp_path, small_model_dir)
    summary = run_compare(recipe)
    root = Path(recipe.run_dir)
    saved = json.loads((root / "summary.json").read_text())
    assert list(saved["methods"]) == ALL_ARMS == list(summary["methods"])
    for method, row in saved["methods"].items():
        assert all(0.0 <= row[k] <= 1.0 for k in METRICS if k != "delta")
        assert row["delta"] == pytest.approx(row["delta_i_to_c"] - row["delta_c_to_i"])
        assert row["delta"] == pytest.approx(row["acc_t2"] - row["acc_t1"])
        if method in ("base", "self_refine"):
            assert row["sampled_tokens"] == 0
        else:  # each trained method spends the budget (and stops within about one step of it)
            assert BUDGET <= row["sampled_tokens"] < 3 * BUDGET, method
    table = (root / "summary.md").read_text()
    assert table.count("\n|") >= len(ALL_ARMS) + 1 and "SCoRe (Stage I + II)" in table
    # Re-running trains nothing again: every stage's metrics log is unchanged.
    logs = {p: p.read_text() for p in root.glob("seed0/*/metrics.jsonl")}
    # star, pair_sft, score_stage1 (shared by score and score_no_shaping), score, score_no_shaping,
    # score_no_stage1, score_single_turn
    assert len(logs) == 7
    run_compare(recipe)
    assert {p: p.read_text() for p in root.glob("seed0/*/metrics.jsonl")} == logs
