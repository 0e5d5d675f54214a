"""Format warm-up: traces whose second attempt is an independent sample, only the new parts trained."""

from __future__ import annotations

from pathlib import Path

from selfimprove.methods.warmup import WarmupConfig, WarmupRecipe, run_warmup, warmup_episodes
from selfimprove.policy import HFPolicy
from selfimprove.rollout.correct import SHORT_INSTRUCTION
from selfimprove.rollout.reflect import FAILED_FEEDBACK
from selfimprove.tasks import make_task
from selfimprove.train.runlog import read_metrics

PARAMS = {"num_numbers": 2, "max_number": 9, "min_target": 1, "max_target": 20}


def test_traces_have_both_layouts_and_train_only_the_new_parts(small_policy: HFPolicy) -> None:
    task = make_task("countdown", PARAMS)
    episodes = warmup_episodes(small_policy, task.problems("train", 3), WarmupConfig(max_new_tokens=6))
    assert [e.info["layout"] for e in episodes] == ["two_attempt", "reflect_retry"] * 3
    two, rr = episodes[0], episodes[1]
    assert [(s.kind, s.trainable) for s in two.segments] == [
        ("prompt", False), ("attempt1", False), ("instruction", False), ("attempt2", True)]
    assert [(s.kind, s.trainable) for s in rr.segments] == [
        ("prompt", False), ("attempt", False), ("feedback", False), ("reflection", True), ("retry_prompt", False), ("retry", True)]
    assert two.segment("instruction").text == SHORT_INSTRUCTION and rr.segment("feedback").text == FAILED_FEEDBACK
    eos = small_policy.eos_ids[0]
    assert two.segment("attempt2").token_ids[-1] == eos and eos not in two.segment("attempt1").token_ids
    # both layouts of one problem share its two independent samples
    assert two.segment("attempt1").token_ids == rr.segment("attempt").token_ids
    assert two.segment("attempt2").token_ids == rr.segment("retry").token_ids


def test_warmup_run_lowers_its_loss(small_model_dir: Path, tmp_path: Path) -> None:
    recipe = WarmupRecipe(
        run_dir=str(tmp_path / "warmup"),
        model={"path": str(small_model_dir)},
        task={"name": "countdown", "params": PARAMS},
        steps=30,
        batch_size=8,
        optim={"lr": 1e-2, "warmup_steps": 0, "schedule": "constant"},
        schedule={"checkpoint_every": 100},
        eval={"num_problems": 4, "max_new_tokens": 6},
        warmup={"max_new_tokens": 6},
    )
    run_warmup(recipe)
    losses = [r["train/loss"] for r in read_metrics(tmp_path / "warmup" / "metrics.jsonl") if "train/loss" in r]
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5

