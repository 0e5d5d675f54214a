"""The command line end to end on a small model the test writes: eval, tasks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from selfimprove.cli import main

RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def test_eval_writes_accuracy_and_pass_at_k(small_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    code = main(
        [
            "eval", str(RECIPES / "countdown-eval.yaml"),
            "--set", f"run_dir={out}", "--set", f"model.path={small_model_dir}",
            "--set", "eval.num_problems=6", "--set", "eval.samples=4", "--set", "eval.pass_k=[1,4]",
            "--set", "eval.max_new_tokens=8",
        ]
    )
    assert code == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["num_problems"] == 6
    assert {"eval/accuracy", "eval/pass@1", "eval/pass@4"} <= report.keys()
    assert 0.0 <= report["eval/pass@1"] <= report["eval/pass@4"] <= 1.0
    samples = [json.loads(line) for line in (out / "eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 6 and len({s["prompt"] for s in samples}) == 6
    assert all({"text", "correct", "reason"} <= s.keys() for s in samples)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report


def test_eval_with_a_missing_model_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", str(RECIPES / "countdown-eval.yaml"), "--set", f"run_dir={tmp_path / 'e'}", "--set", f"model.path={tmp_path / 'nope'}"])
    assert code == 2
    assert "is not a Hugging Face model folder" in capsys.readouterr().err


def test_tasks_lists_countdown_with_a_verified_demonstration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "countdown" in out and "-> correct" in out
