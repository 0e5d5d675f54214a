"""End to end on the small tiny-model preset: SFT, a few GRPO steps, and exact resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import Crash, crash_at
import torch
from safetensors.torch import load_file

from selfimprove.config import RLRecipe, SFTRecipe
from selfimprove.train.checkpoint import latest_checkpoint, list_checkpoints
from selfimprove.methods.rl import run_rl
from selfimprove.train.runlog import read_metrics
from selfimprove.methods.sft import run_sft

EVAL = {"num_problems": 16, "batch_size": 16, "max_new_tokens": 12}
# Two numbers: easy enough that 300 SFT steps (seconds) of the small preset solve some problems,
# so GRPO groups carry a learning signal.
TASK = {"name": "countdown", "params": {"num_numbers": 2, "max_number": 20, "min_target": 1, "max_target": 30}}


def sft_recipe(run_dir: Path, steps: int = 300) -> SFTRecipe:
    return SFTRecipe(
        run_dir=str(run_dir),
        model={"path": "tiny:small"},
        task=TASK,
        steps=steps,
        batch_size=32,
        optim={"lr": 1e-2, "warmup_steps": 10, "schedule": "cosine"},
        schedule={"checkpoint_every": 100, "eval_every": 100, "eval_problems": 16},
        eval=EVAL,
    )


def rl_recipe(run_dir: Path, model: Path, steps: int = 4) -> RLRecipe:
    return RLRecipe(
        run_dir=str(run_dir),
        model={"path": str(model)},
        task=TASK,
        steps=steps,
        prompts_per_step=4,
        sampling={"n": 4, "temperature": 1.0, "max_new_tokens": 12},
        loss={"kl_coef": 0.05},
        optim={"lr": 1e-3, "micro_batch_size": 8},
        schedule={"checkpoint_every": 2, "eval_every": 0},
        eval=EVAL,
    )


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run_dir = tmp_path_factory.mktemp("e2e") / "sft"
    run_sft(sft_recipe(run_dir))
    return run_dir


def test_sft_lowers_the_loss_and_writes_a_complete_run_dir(sft_run: Path) -> None:
    rows = read_metrics(sft_run / "metrics.jsonl")
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) == 300
    assert sum(losses[-10:]) / 10 < 0.3 * sum(losses[:10]) / 10
    assert any("eval/accuracy" in r for r in rows) and any("final/accuracy" in r for r in rows)
    assert (sft_run / "config.yaml").is_file()
    assert list((sft_run / "tb").glob("events.out.tfevents.*"))
    assert (sft_run / "final" / "config.json").is_file()
    summary = json.loads((sft_run / "summary.json").read_text())
    assert 0.0 <= summary["accuracy"] <= 1.0 and summary["eval_problems"] == 16
    assert [p.name for p in list_checkpoints(sft_run / "checkpoints")] == ["step_0000200", "step_0000300"]


def test_grpo_steps_change_the_policy_and_log_rl_metrics(sft_run: Path, tmp_path: Path) -> None:
    run_rl(rl_recipe(tmp_path / "rl", sft_run / "final"))
    rows = read_metrics(tmp_path / "rl" / "metrics.jsonl")
    steps = [r for r in rows if "train/reward" in r]
    assert len(steps) == 4
    for key in ("train/reward", "train/kl", "train/clip_frac", "train/grad_norm", "train/completion_tokens"):
        assert key in steps[-1]
    assert any(r["train/grad_norm"] > 0 for r in steps)
    before, after = weights(sft_run / "final"), weights(tmp_path / "rl" / "final")
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_grpo_resumes_to_bit_identical_weights(sft_run: Path, tmp_path: Path) -> None:
    straight = tmp_path / "straight"
    run_rl(rl_recipe(straight, sft_run / "final"))

    resumed = tmp_path / "resumed"
    with pytest.raises(Crash):
        run_rl(rl_recipe(resumed, sft_run / "final"), on_step=crash_at(3))
    assert latest_checkpoint(resumed / "checkpoints").name == "step_0000002"
    run_rl(rl_recipe(resumed, sft_run / "final"))

    a, b = weights(straight / "final"), weights(resumed / "final")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = read_metrics(resumed / "metrics.jsonl")
    assert [r["step"] for r in rows if "train/reward" in r] == [1, 2, 3, 4]
    straight_rows = [r for r in read_metrics(straight / "metrics.jsonl") if "train/reward" in r]
    assert [r["train/reward"] for r in rows if "train/reward" in r] == [r["train/reward"] for r in straight_rows]


def test_sft_resumes_to_bit_identical_weights(sft_run: Path, tmp_path: Path) -> None:
    run_dir = tmp_path / "sft"
    with pytest.raises(Crash):
        run_sft(sft_recipe(run_dir), on_step=crash_at(250))
    assert latest_checkpoint(run_dir / "checkpoints").name == "step_0000200"
    run_sft(sft_recipe(run_dir))
    a, b = weights(sft_run / "final"), weights(run_dir / "final")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_half_written_checkpoints_are_ignored(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoints"
    (ckpt / "step_0000004").mkdir(parents=True)
    (ckpt / "step_0000004" / "state.json").write_text("{}")
    (ckpt / ".step_0000006.tmp").mkdir()
    (ckpt / "step_0000008").mkdir()  # no state.json: never finished
    assert latest_checkpoint(ckpt).name == "step_0000004"
