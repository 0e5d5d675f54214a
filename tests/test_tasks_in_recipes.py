"""Every registered task is usable from a recipe: a few SFT steps on its demonstrations, then a greedy
evaluation of held-out problems through the verifier, on the small tiny-model preset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfimprove.cli import main
from selfimprove.tasks import TASKS

BUILT_IN = ["chain", "code", "countdown", "function_call", "gsm8k", "gsm_symbolic", "math", "reasoning_gym"]


def test_every_built_in_task_is_registered() -> None:
    assert set(BUILT_IN) <= set(TASKS.names())


@pytest.mark.parametrize("name", BUILT_IN)
def test_task_runs_in_an_sft_recipe(name: str, tmp_path: Path) -> None:
    run_dir = tmp_path / name
    code = main(
        [
            "sft", "recipes/countdown-sft.yaml",
            "--set", f"run_dir={run_dir}", "--set", "model.path=tiny:small",
            "--set", "task=null", "--set", f"task={{name: {name}}}",  # another task: drop the recipe's section first
            "--set", "steps=2", "--set", "batch_size=4", "--set", "num_problems=8",
            "--set", "schedule.eval_every=0", "--set", "schedule.checkpoint_every=2",
            "--set", "eval.num_problems=1", "--set", "eval.max_new_tokens=8",
        ]
    )
    assert code == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["eval_problems"] == 1
    record = json.loads((run_dir / "eval_samples.jsonl").read_text().splitlines()[0])
    assert record["reason"]  # the verifier judged the model's text and said why
