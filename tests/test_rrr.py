"""Reflect, Retry, Reward: only reflection tokens train, the feedback never reveals the answer, episode
structure and rewards, end-to-end runs on countdown and function calling, and the two-accuracy eval."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import Crash, crash_at
import torch

from selfimprove.algos.advantages import grpo
from selfimprove.config import LossConfig, OptimConfig
from selfimprove.methods.rrr import RRRConfig, RRRRecipe, evaluate_rrr, run_rrr
from selfimprove.policy import HFPolicy, SamplingParams
from selfimprove.policy.base import Completion
from selfimprove.rollout.episode import Episode, Segment, collate, segment_mask
from selfimprove.rollout.reflect import (
    FAILED_FEEDBACK,
    PAPER_FEEDBACK,
    PAPER_RETRY,
    RETRY_PROMPT,
    episodes_for_failures,
    failures,
    first_attempts,
    reflect_retry_episodes,
)
from selfimprove.tasks import make_task
from selfimprove.train.learner import Learner, Norms
from selfimprove.train.objectives import PolicyGradientObjective
from selfimprove.train.runlog import read_metrics

COUNTDOWN = {"num_numbers": 2, "max_number": 9, "min_target": 1, "max_target": 20}
TASK = make_task("countdown", COUNTDOWN)
KINDS = ["prompt", "attempt", "feedback", "reflection", "retry_prompt", "retry"]


def hand_made(group: int, reward: float, offset: int) -> Episode:
    ids = lambda n: [10 + (offset + i) % 50 for i in range(n)]  # noqa: E731
    return Episode(
        [
            Segment("prompt", ids(4)),
            Segment("attempt", ids(3)),
            Segment("feedback", ids(2)),
            Segment("reflection", ids(3 + group), trainable=True),
            Segment("retry_prompt", ids(2)),
            Segment("retry", ids(4)),
        ],
        group=group,
        reward=reward,
    )


def test_the_mask_trains_only_reflection_tokens(small_policy: HFPolicy) -> None:
    episodes = [hand_made(g, r, 7 * g + k) for g in (0, 1) for k, r in enumerate((1.0, 0.0, 0.0))]
    batch = collate(episodes, small_policy.pad_id)
    batch.advantages = grpo(batch.rewards, batch.groups, batch.mask)
    # Non-zero advantages everywhere, even outside the reflection: the mask alone must stop the gradient.
    batch.advantages = batch.advantages + 0.5
    assert (batch.advantages != 0).all()
    learner = Learner(small_policy, OptimConfig(lr=1e-3, share_prefix=False), total_steps=1)
    objective = PolicyGradientObjective(LossConfig())
    out = learner.forward(batch)
    logp = out.logp.detach().requires_grad_(True)
    norms = Norms(num_sequences=batch.size, num_tokens=float(batch.mask.sum()), max_len=batch.mask.shape[1])
    loss, _ = objective(type(out)(logp), batch, norms)
    (grad,) = torch.autograd.grad(loss, logp)
    reflection = segment_mask(episodes, "reflection", batch.mask.shape[1])
    assert torch.equal(reflection, batch.mask)
    assert (grad[reflection == 0] == 0).all()
    assert (grad[reflection == 1] != 0).all()
    # And the learner's real step runs on it and moves the weights.
    before = [p.detach().clone() for p in small_policy.model.parameters()]
    stats = learner.step(batch, objective)
    assert stats["grad_norm"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, small_policy.model.parameters()))


@pytest.mark.parametrize("name,params", [("countdown", COUNTDOWN), ("function_call", {})])
def test_feedback_never_contains_the_answer(name: str, params: dict, small_policy: HFPolicy) -> None:
    task = make_task(name, params)
    problems = task.problems("train", 3)
    for text in (FAILED_FEEDBACK, PAPER_FEEDBACK, RETRY_PROMPT, PAPER_RETRY):
        assert not any(ch.isdigit() for ch in text)
        for p in problems:
            assert p.answer not in text
    # The feedback in real episodes is the fixed text, whatever the problem or the verifier's reason.
    wrong = [
        Completion(i, small_policy.encode_prompt(p.prompt), small_policy.encode_completion("x"), "x")
        for i, p in enumerate(problems)
    ]
    episodes = reflect_retry_episodes(small_policy, task, problems, wrong, SamplingParams(n=1, max_new_tokens=3))
    assert len(episodes) == 3
    for e, p in zip(episodes, problems):
        fb = e.segment("feedback")
        assert fb.text == FAILED_FEEDBACK and small_policy.detokenize(fb.token_ids) == FAILED_FEEDBACK
        assert p.answer not in small_policy.detokenize(fb.token_ids)


def test_episode_structure_groups_and_rewards(small_policy: HFPolicy) -> None:
    problems = TASK.problems("train", 4)
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=6)
    attempts = first_attempts(small_policy, TASK, problems, params)
    assert len(attempts) == 4 and [a.prompt_index for a in attempts] == [0, 1, 2, 3]
    failed = [k for k, a in enumerate(attempts) if not TASK.verify(problems[a.prompt_index], a.text).correct]
    episodes = reflect_retry_episodes(small_policy, TASK, problems, attempts, params, group_offset=100)
    assert len(episodes) == 3 * len(failed)
    assert [e.group for e in episodes] == [100 + k for k in failed for _ in range(3)]
    eos = small_policy.eos_ids[0]
    for e in episodes:
        assert [s.kind for s in e.segments] == KINDS
        assert [s.trainable for s in e.segments] == [False, False, False, True, False, False]
        assert e.num_trainable == len(e.segment("reflection").token_ids)
        assert eos not in e.segment("attempt").token_ids and eos not in e.segment("reflection").token_ids
        problem = next(p for p in problems if p.id == e.problem_id)
        retry = e.segment("retry")
        assert e.reward == (1.0 if TASK.verify(problem, retry.text).correct else 0.0)
        assert e.info["correct_retry"] == (e.reward == 1.0)
        assert len(e.segment("reflection").logprobs or []) == e.num_trainable
        assert e.segment("retry_prompt").text == RETRY_PROMPT


def test_the_retry_sees_the_reflection(small_policy: HFPolicy) -> None:
    problems = TASK.problems("train", 2)
    greedy = SamplingParams(n=1, temperature=0, max_new_tokens=5)
    wrong = [Completion(i, small_policy.encode_prompt(p.prompt), small_policy.encode_completion("0"), "0") for i, p in enumerate(problems)]
    for e in reflect_retry_episodes(small_policy, TASK, problems, wrong, greedy):
        context = [t for s in e.segments[:5] for t in s.token_ids]
        again = small_policy.generate_ids([context], greedy)[0]
        assert again.token_ids == e.segment("retry").token_ids


def test_failures_keep_one_failed_attempt_per_failed_problem(small_policy: HFPolicy) -> None:
    problems = TASK.problems("train", 5)
    found = failures(small_policy, TASK, problems, SamplingParams(temperature=1.0, max_new_tokens=6), samples=3)
    assert len({p.id for p, _ in found}) == len(found) <= 5
    for i, (p, c) in enumerate(found):
        assert c.prompt_index == i and not TASK.verify(p, c.text).correct
    episodes = episodes_for_failures(small_policy, TASK, found, SamplingParams(n=2, max_new_tokens=4))
    assert [e.group for e in episodes] == [i for i in range(len(found)) for _ in range(2)]


def test_evaluate_rrr_reports_both_accuracies(small_policy: HFPolicy) -> None:
    result = evaluate_rrr(small_policy, TASK, TASK.distinct_problems("test", 6), RRRConfig(), max_new_tokens=6)
    assert set(result) >= {"first_accuracy", "retry_accuracy", "fixed", "num_problems"}
    assert 0.0 <= result["first_accuracy"] <= result["retry_accuracy"] <= 1.0


def rrr_recipe(run_dir: Path, model: Path, task: dict, tokens: int, **rrr) -> RRRRecipe:
    return RRRRecipe(
        run_dir=str(run_dir),
        model={"path": str(model)},
        task=task,
        steps=2,
        prompts_per_step=3,
        sampling={"n": 3, "temperature": 1.0, "max_new_tokens": tokens},
        optim={"lr": 1e-3, "micro_batch_size": 16},
        schedule={"checkpoint_every": 2, "eval_every": 0},
        eval={"num_problems": 4, "batch_size": 4, "max_new_tokens": tokens},
        rrr=rrr,
    )


@pytest.mark.parametrize(
    "task,tokens", [({"name": "countdown", "params": COUNTDOWN}, 8), ({"name": "function_call", "params": {}}, 16)]
)
def test_run_rrr_end_to_end(task: dict, tokens: int, small_model_dir: Path, tmp_path: Path) -> None:
    summary = run_rrr(rrr_recipe(tmp_path / "rrr", small_model_dir, task, tokens, failure_samples=2, eval_problems=3))
    rows = [r for r in read_metrics(tmp_path / "rrr" / "metrics.jsonl") if "train/failures" in r]
    assert len(rows) == 2
    for r in rows:
        assert 0.0 <= r["train/first_accuracy"] <= 1.0 and 0.0 <= r["train/retry_accuracy"] <= 1.0
        assert r["train/failures"] <= 3
    # The untrained small model fails (nearly) everything, so each step makes one learner update (its
    # gradient is zero when every retry of a group fails: GRPO then has nothing to prefer).
    assert all(r["train/failures"] > 0 and "train/grad_norm" in r and "train/reflection_tokens" in r for r in rows)
    assert set(summary["rrr_before"]) >= {"first_accuracy", "retry_accuracy"}
    assert set(summary["rrr_after"]) >= {"first_accuracy", "retry_accuracy"}
    assert (tmp_path / "rrr" / "final" / "config.json").is_file()


def test_recipe_rejects_unknown_rrr_fields(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        RRRRecipe(run_dir=str(tmp_path), rrr={"no_such_field": 1})
    with pytest.raises(ValueError):
        RRRRecipe(run_dir=str(tmp_path), rrr={"feedback": "  "})


def test_run_rrr_resumes_to_bit_identical_weights(small_model_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    task = {"name": "countdown", "params": COUNTDOWN}

    def recipe(run_dir: Path) -> RRRRecipe:
        r = rrr_recipe(run_dir, small_model_dir, task, 8)
        return r.model_copy(update={"steps": 3, "schedule": r.schedule.model_copy(update={"checkpoint_every": 1})})

    run_rrr(recipe(tmp_path / "straight"))

    with pytest.raises(Crash):
        run_rrr(recipe(tmp_path / "resumed"), on_step=crash_at(2))
    run_rrr(recipe(tmp_path / "resumed"))
    a = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    cursor = lambda d: [r["train/first_accuracy"] for r in read_metrics(d / "metrics.jsonl") if "train/failures" in r]  # noqa: E731
    assert cursor(tmp_path / "straight") == cursor(tmp_path / "resumed")


def test_a_reflection_is_one_line_and_its_newline_is_dropped(small_policy: HFPolicy) -> None:
    from selfimprove.policy.base import Completion, SamplingParams
    from selfimprove.rollout.reflect import line_params, reflection_body

    assert line_params(SamplingParams(stop=("x",))).stop == ("x", "\n")
    assert line_params(SamplingParams(), None).stop == ()
    ids = small_policy.encode_completion(" check\nre", add_eos=False)
    newline = len(small_policy.encode_completion(" check", add_eos=False))
    stopped = Completion(0, [], ids[: newline + 1], " check", [-0.5] * (newline + 1), "stop")
    body, logprobs = reflection_body(small_policy, stopped)
    assert small_policy.detokenize(body) == " check" and logprobs == [-0.5] * newline
    ended = Completion(0, [], ids[:newline] + [small_policy.eos_ids[0]], " check", [-0.1] * (newline + 1), "eos")
    assert reflection_body(small_policy, ended)[0] == ids[:newline]


def test_rrr_with_the_anti_forgetting_options_runs(small_model_dir: Path, tmp_path: Path) -> None:
    recipe = rrr_recipe(tmp_path / "rrr", small_model_dir, {"name": "countdown", "params": COUNTDOWN}, 8,
                        failure_samples=2, first_attempt_weight=0.5)
    recipe = recipe.model_copy(update={"loss": recipe.loss.model_copy(update={"kl_coef": 0.05, "kl_scope": "generated"})})
    run_rrr(recipe)
    rows = [r for r in read_metrics(tmp_path / "rrr" / "metrics.jsonl") if "train/failures" in r]
    assert all(r["train/first_attempt_episodes"] == 6 and "train/kl" in r for r in rows)  # 3 prompts x 2 attempts
