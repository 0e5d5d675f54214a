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
    greedy = [s for s in samples if s["mode"] == "greedy"]
    assert len(greedy) == 6 and len({s["prompt"] for s in greedy}) == 6 and len(samples) == 6 + 6 * 4
    assert all({"text", "correct", "reason"} <= s.keys() for s in samples)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == report


def test_eval_with_a_missing_model_folder_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["eval", str(RECIPES / "countdown-eval.yaml"), "--set", f"run_dir={tmp_path / 'e'}", "--set", f"model.path={tmp_path / 'nope'}"])
    assert code == 2
    assert "model.path:" in (err := capsys.readouterr().err) and "does not exist" in err and len(err.strip().splitlines()) == 1


def test_tasks_lists_countdown_with_a_verified_demonstration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "countdown" in out and "-> correct" in out


@pytest.mark.parametrize("flags", [["--attempts", "2"], ["--self-refine"]])
def test_eval_two_attempts_prints_and_writes_self_correction_metrics(
    flags: list[str], small_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "eval"
    code = main(["eval", str(RECIPES / "countdown-eval.yaml"), *flags, "--set", f"run_dir={out}", "--set", f"model.path={small_model_dir}",
                 "--set", "eval.num_problems=4", "--set", "eval.max_new_tokens=4"])
    assert code == 0
    captured = capsys.readouterr()
    for name in ("Acc@t1", "Acc@t2", "Delta", "Delta_i->c", "Delta_c->i", "edit-distance ratio"):
        assert name in captured.out, name  # the table: results go to stdout
    report = json.loads((out / "eval.json").read_text())
    keys = {"eval/acc_t1", "eval/acc_t2", "eval/delta", "eval/delta_i_to_c", "eval/delta_c_to_i", "eval/edit_distance_ratio"}
    assert keys <= report.keys() and report["num_problems"] == 4
    assert report["protocol"] == ("self_refine" if "--self-refine" in flags else "two_attempts")
    assert json.loads(captured.out.strip().splitlines()[-1]) == report
    samples = [json.loads(line) for line in (out / "eval_samples.jsonl").read_text().splitlines()]
    assert len(samples) == 4 and all({"attempt1", "attempt2", "correct1", "correct2"} <= s.keys() for s in samples)
    assert all(("critique" in s) == ("--self-refine" in flags) for s in samples)


def test_self_refine_with_one_attempt_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", str(RECIPES / "countdown-eval.yaml"), "--attempts", "1", "--self-refine", "--set", f"run_dir={tmp_path}"]) == 2
    assert "--self-refine" in capsys.readouterr().err


def test_star_and_pair_sft_commands_train_and_report(small_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    tiny = ["--set", f"model.path={small_model_dir}", "--set", "sampling.n=2", "--set", "sampling.max_new_tokens=4",
            "--set", "prompts_per_call=2", "--set", "batch_size=2", "--set", "eval.num_problems=2", "--set", "eval.max_new_tokens=4"]
    code = main(["star", str(RECIPES / "star-countdown.yaml"), "--set", f"run_dir={tmp_path / 'star'}", *tiny,
                 "--set", "star.rounds=1", "--set", "star.steps_per_round=1", "--set", "star.problems_per_round=2"])
    assert code == 0
    summary = json.loads((tmp_path / "star" / "summary.json").read_text())
    assert summary["steps"] == 1 and len(summary["kept_per_round"]) == 1 and summary["sampled_tokens"] > 0
    code = main(["pair-sft", str(RECIPES / "pair-sft-countdown.yaml"), "--set", f"run_dir={tmp_path / 'pair'}", *tiny,
                 "--set", "steps=1", "--set", "pair_sft.max_sampled_tokens=10"])
    assert code == 0
    summary = json.loads((tmp_path / "pair" / "summary.json").read_text())
    assert summary["steps"] == 1 and summary["sampled_tokens"] >= 10 and "pairs" in summary
    err = capsys.readouterr().err
    assert "STaR done" in err and "pair-sft done" in err and "pairs from" in err
    assert main(["star", str(RECIPES / "star-countdown.yaml"), "--set", "star.roundz=2"]) == 2
    assert "star.roundz: unknown field" in capsys.readouterr().err
