"""Format warm-up: every layout, the demonstration as the (independent) second attempt, only it trained."""

from __future__ import annotations

from pathlib import Path

from selfimprove.methods.warmup import WarmupConfig, WarmupRecipe, run_warmup, warmup_episodes
from selfimprove.policy import HFPolicy
from selfimprove.rollout.correct import SHORT_INSTRUCTION
from selfimprove.rollout.reflect import FAILED_FEEDBACK, REVIEW_FEEDBACK
from selfimprove.tasks import make_task
from selfimprove.train.runlog import read_metrics

PARAMS = {"num_numbers": 2, "max_number": 9, "min_target": 1, "max_target": 20}


def test_traces_have_every_layout_and_train_only_the_new_parts(small_policy: HFPolicy) -> None:
    task = make_task("countdown", PARAMS)
    problems = task.problems("train", 3)
    episodes = warmup_episodes(small_policy, task, problems, WarmupConfig(max_new_tokens=6))
    assert [e.info["layout"] for e in episodes] == ["single", "two_attempt", "reflect_retry", "self_refine"] * 3
    single, two, rr, sr = episodes[:4]
    assert [(s.kind, s.trainable) for s in single.segments] == [("prompt", False), ("demo", True)]
    assert [(s.kind, s.trainable) for s in two.segments] == [
        ("prompt", False), ("attempt", False), ("instruction", False), ("demo", True)]
    # the retry marker is trained so the model learns where a reflection ends
    layout = [("prompt", False), ("attempt", False), ("feedback", False), ("reflection", True), ("retry_prompt", True), ("demo", True)]
    assert [(s.kind, s.trainable) for s in rr.segments] == layout == [(s.kind, s.trainable) for s in sr.segments]
    assert two.segment("instruction").text == SHORT_INSTRUCTION
    assert rr.segment("feedback").text == FAILED_FEEDBACK and sr.segment("feedback").text == REVIEW_FEEDBACK
    # the second attempt is the demonstration: independent of the first attempt, right by construction
    demo = task.target_text(problems[0])
    for e in (single, two, rr, sr):
        assert e.segment("demo").text == demo and task.verify(problems[0], demo).correct
    eos = small_policy.eos_ids[0]
    assert two.segment("demo").token_ids[-1] == eos and eos not in two.segment("attempt").token_ids
    # all layouts of one problem share its one sampled first attempt
    assert two.segment("attempt").token_ids == rr.segment("attempt").token_ids == sr.segment("attempt").token_ids


def test_single_layout_needs_no_sampling(small_policy: HFPolicy) -> None:
    task = make_task("countdown", PARAMS)
    calls = []
    original = small_policy.generate
    small_policy.generate = lambda *a, **k: calls.append(1) or original(*a, **k)  # type: ignore[method-assign]
    try:
        episodes = warmup_episodes(small_policy, task, task.problems("train", 2), WarmupConfig(layouts=["single"]))
    finally:
        small_policy.generate = original  # type: ignore[method-assign]
    assert not calls and [e.info["layout"] for e in episodes] == ["single", "single"]


def test_warmup_run_lowers_its_loss(small_model_dir: Path, tmp_path: Path) -> None:
    recipe = WarmupRecipe(
        run_dir=str(tmp_path / "warmup"),
        model={"path": str(small_model_dir)},
        task={"name": "countdown", "params": PARAMS},
        steps=30,
        batch_size=8,
        num_problems=8,
        optim={"lr": 1e-2, "warmup_steps": 0, "schedule": "constant"},
        schedule={"checkpoint_every": 100},
        eval={"num_problems": 4, "max_new_tokens": 6},
        warmup={"max_new_tokens": 6},
    )
    run_warmup(recipe)
    losses = [r["train/loss"] for r in read_metrics(tmp_path / "warmup" / "metrics.jsonl") if "train/loss" in r]
    assert len(losses) == 30 and sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_the_two_attempt_layout_in_the_step_format(small_policy) -> None:
    """Step format (issue 15): attempt 1 is several lines, the instruction follows it, attempt 2 (the
    demonstration, several lines) starts right after the instruction and is judged on its own."""
    from selfimprove.methods.warmup import WarmupConfig, warmup_episodes

    task = make_task("countdown", {"format": "steps"})
    problem = task.problem("train", 0)
    (episode,) = warmup_episodes(small_policy, task, [problem], WarmupConfig(layouts=["two_attempt"]))
    kinds = [s.kind for s in episode.segments]
    assert kinds == ["prompt", "attempt", "instruction", "demo"] and problem.prompt.endswith("\n")
    demo = episode.segment("demo")
    assert demo.text == "\n".join(problem.demonstration) and "\n" in demo.text and demo.trainable
    assert task.verify(problem, demo.text).correct
    text = small_policy.detokenize(episode.token_ids)
    assert text.endswith("\nagain:" + demo.text)
