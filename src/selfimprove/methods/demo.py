"""`selfimprove demo`: the first self-improvement loop end to end on the built-in tiny model.

Build the tiny model, SFT it on Countdown demonstrations, evaluate, improve it with GRPO on the
verifier's reward, evaluate the same held-out problems again, and write a table, a plot and a summary.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from selfimprove.config import DemoRecipe, RLRecipe, SFTRecipe, validate
from selfimprove.eval.report import learning_curve, markdown_table
from selfimprove.methods.rl import RL
from selfimprove.methods.sft import SFT
from selfimprove.train.runlog import read_metrics
from selfimprove.progress import StageBar, no_bar





def stage_recipes(recipe: DemoRecipe) -> tuple[SFTRecipe, RLRecipe]:
    root = Path(recipe.run_dir)
    shared = {"seed": recipe.seed, "task": recipe.task.model_dump(), "eval": recipe.eval.model_dump()}
    sft = validate(SFTRecipe, {**recipe.sft, **shared, "run_dir": str(root / "sft"), "model": {"path": str(root / "init")}}, "sft")
    rl = validate(RLRecipe, {**recipe.rl, **shared, "run_dir": str(root / "grpo"), "model": {"path": str(root / "sft" / "final")}}, "rl")
    return sft, rl


def run_demo(recipe: DemoRecipe, *, resume: bool = False, bar: StageBar = no_bar) -> dict[str, Any]:
    """The demo in `recipe.run_dir` (emptied first unless `resume`), locked against a second demo there."""
    from selfimprove.train.run_dir import check_run_dir, run_lock

    check_run_dir(recipe.run_dir)
    with run_lock(recipe.run_dir):
        return _run_demo(recipe, resume=resume, bar=bar)


def _run_demo(recipe: DemoRecipe, *, resume: bool, bar: StageBar) -> dict[str, Any]:
    from selfimprove.policy.tiny import write_tiny_model
    from selfimprove.train.run_dir import clear_run_dir

    root = Path(recipe.run_dir)
    if not resume:
        clear_run_dir(root)
    root.mkdir(parents=True, exist_ok=True)
    began = time.time()
    if not (root / "init" / "config.json").exists():
        write_tiny_model(root / "init", recipe.init.preset, recipe.init.seed, **recipe.init.overrides())
    sft_recipe, rl_recipe = stage_recipes(recipe)

    with bar("1/2 SFT on demonstrations", sft_recipe.steps) as on_step:
        sft = SFT(sft_recipe).run(on_step)
    with bar(f"2/2 RL ({rl_recipe.loss.estimator})", rl_recipe.steps) as on_step:
        rl = RL(rl_recipe).run(on_step)
    wall = time.time() - began

    sft_rows = read_metrics(root / "sft" / "metrics.jsonl")
    rl_rows = read_metrics(root / "grpo" / "metrics.jsonl")
    learning_curve([("SFT", sft_rows), (rl_recipe.loss.estimator.upper(), rl_rows)], root / "learning_curve.png")
    summary = {
        "task": recipe.task.name,
        "eval_problems": recipe.eval.num_problems,
        "eval_split": recipe.eval.split,
        "sft_accuracy": sft["accuracy"],
        "rl_accuracy": rl["accuracy"],
        "gain_points": round(100 * (rl["accuracy"] - sft["accuracy"]), 1),
        "sft_steps": sft_recipe.steps,
        "rl_steps": rl_recipe.steps,
        "sft_seconds": sft["train_seconds"],
        "rl_seconds": rl["train_seconds"],
        "wall_seconds": round(wall, 1),
        "resumed": resume,
        "seed": recipe.seed,
        "learning_curve": str(root / "learning_curve.png"),
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=2))
    table = markdown_table(
        ["stage", "steps", "seconds", f"held-out greedy accuracy ({recipe.eval.num_problems} problems)"],
        [
            ["SFT on demonstrations", sft_recipe.steps, sft["train_seconds"], sft["accuracy"]],
            [f"+ RL ({rl_recipe.loss.estimator})", rl_recipe.steps, rl["train_seconds"], rl["accuracy"]],
        ],
    )
    (root / "summary.md").write_text(table)
    return summary
