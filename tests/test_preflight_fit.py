"""Pre-run checks on what the task's problems need of the model: mistakes that ended a run with
"unexpected ..." after its folder was written are one line, exit 2, with nothing written; oversized
steps and unreadable characters are warned about."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from helpers import write_gpt2

from selfimprove.cli import main

ROOT = Path(__file__).resolve().parent.parent
RL = str(ROOT / "recipes" / "countdown-grpo.yaml")


def _one_line(capsys: pytest.CaptureFixture[str]) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("selfimprove:")]
    assert len(lines) == 1, lines
    return lines[0]


def test_a_context_too_short_for_prompt_and_answer_is_refused_before_anything_is_written(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = write_gpt2(tmp_path / "gpt2", n_positions=20)
    run = tmp_path / "run"
    code = main(["train", RL, "--set", f"model.path={model}", "--set", f"run_dir={run}", "--set", "sampling.max_new_tokens=24",
                 "--set", "eval.max_new_tokens=24", "--set", "task.params={num_numbers: 2, max_number: 9, min_target: 1, max_target: 18}"])
    line = _one_line(capsys)
    assert code == 2 and not run.exists()
    assert line.startswith("selfimprove: model error: model.path: the model's context is 20 tokens (config.json n_positions) "
                           "but prompts take up to ")
    assert "sampling.max_new_tokens is 24: lower sampling.max_new_tokens to at most" in line


def test_sft_on_a_dataset_without_demonstrations_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"q": f"{a}+{a}", "a": 2 * a, "s": f"{a}+{a}={2 * a}"}) + "\n" for a in range(300)))
    run = tmp_path / "run"
    code = main(["sft", str(ROOT / "recipes" / "dataset-sft.yaml"), "--set", "model.path=tiny:small", "--set", f"run_dir={run}",
                 "--set", "task.params=null", "--set",
                 "task.params=" + json.dumps({"path": str(data), "prompt_field": "q", "answer_field": "a", "demonstration_field": None}),
                 "--set", "eval.num_problems=10", "--set", "schedule.eval_every=0"])
    line = _one_line(capsys)
    assert code == 2 and not run.exists()
    assert line == ("selfimprove: data error: task 'dataset' gives no demonstrations (worked solutions) for SFT to train on: "
                    "set task.params.demonstration_field to a column of solutions (or give chat messages ending with the answer)")


def test_oversized_steps_and_unreadable_characters_are_warned_about(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from selfimprove.config import RLRecipe
    from selfimprove.train.preflight import preflight

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"q": f"{a} apples 🍎 plus {a}", "a": 2 * a}) + "\n" for a in range(20)))
    recipe = RLRecipe.model_validate({"run_dir": str(tmp_path / "run"), "prompts_per_step": 32, "model": {"path": "tiny:small"},
                                      "task": {"name": "dataset", "params": {"path": str(data), "prompt_field": "q",
                                                                             "answer_field": "a", "test_fraction": 0.5,
                                                                             "min_test_problems": 1}},
                                      "eval": {"num_problems": 2}})
    with caplog.at_level(logging.WARNING):
        preflight(recipe)
    assert "prompts_per_step 32 is larger than the train split of task 'dataset'" in caplog.text
    assert "100%) hold characters the tokenizer maps to <unk>" in caplog.text and "🍎" in caplog.text
