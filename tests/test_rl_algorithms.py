"""Every RL recipe shape learns or at least runs: PPO learns a one-step toy problem, DPO raises the
chosen answer, the other estimators and DAPO options run through the same loop."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import Crash, crash_at
import torch
from safetensors.torch import load_file

from selfimprove.config import DPORecipe, OptimConfig, RLRecipe
from selfimprove.policy import HFPolicy
from selfimprove.rollout.episode import Episode, Segment, collate
from selfimprove.tasks.base import TASKS, Problem, Split, Task, Verdict
from selfimprove.methods.dpo import preference_pairs, run_dpo
from selfimprove.train.learner import Learner
from selfimprove.methods.rl import informative, run_rl
from selfimprove.train.objectives import DPOObjective
from selfimprove.train.runlog import read_metrics


class DigitBandit(Task):
    """A one-step toy problem: the reward is 1 when the first character written is a digit."""

    name = "digit-bandit"

    def problem(self, split: Split, index: int) -> Problem:
        return Problem(id=f"bandit-{split}-{index}", prompt=f"{index % 7}?", answer="a digit")

    def verify(self, problem: Problem, text: str) -> Verdict:
        return Verdict.right() if text[:1].isdigit() else Verdict.wrong("not a digit")


if "digit-bandit" not in TASKS:
    TASKS.register("digit-bandit")(DigitBandit)

BANDIT = {"name": "digit-bandit"}
EVAL = {"num_problems": 4, "batch_size": 4, "max_new_tokens": 1}


def bandit_recipe(run_dir: Path, model: Path, **overrides) -> RLRecipe:
    fields = dict(
        run_dir=str(run_dir),
        model={"path": str(model)},
        task=BANDIT,
        steps=25,
        prompts_per_step=8,
        sampling={"n": 8, "temperature": 1.0, "max_new_tokens": 1},
        optim={"lr": 1e-2, "warmup_steps": 0, "micro_batch_size": 64},
        schedule={"checkpoint_every": 100, "eval_every": 0},
        eval=EVAL,
    )
    fields.update(overrides)
    return RLRecipe.model_validate(fields)


def reward_curve(run_dir: Path) -> list[float]:
    return [r["train/reward"] for r in read_metrics(run_dir / "metrics.jsonl") if "train/reward" in r]


@pytest.mark.parametrize("critic", ["head", "separate"])
def test_ppo_learns_the_one_step_toy_problem(critic: str, small_model_dir: Path, tmp_path: Path) -> None:
    value = {"kind": "head"} if critic == "head" else {"kind": "separate", "path": str(small_model_dir)}
    recipe = bandit_recipe(
        tmp_path / "ppo",
        small_model_dir,
        value=value,
        loss={"estimator": "gae", "epochs": 2, "minibatches": 2, "vf_coef": 0.5, "kl_coef": 0.01},
    )
    run_rl(recipe)
    rewards = reward_curve(tmp_path / "ppo")
    start, end = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert start < 0.3 and end > start + 0.4, rewards
    rows = read_metrics(tmp_path / "ppo" / "metrics.jsonl")
    assert all("train/value_loss" in r and "train/explained_variance" in r for r in rows if "train/reward" in r)
    assert (tmp_path / "ppo" / "final" / "value_model.pt").is_file()


def test_ppo_resumes_to_bit_identical_policy_and_critic(small_model_dir: Path, tmp_path: Path) -> None:
    def recipe(run_dir: Path) -> RLRecipe:
        return bandit_recipe(
            run_dir,
            small_model_dir,
            steps=6,
            value={"kind": "head"},
            schedule={"checkpoint_every": 2, "eval_every": 0},
            loss={"estimator": "gae", "epochs": 2, "minibatches": 2, "kl_coef": 0.01},
        )

    run_rl(recipe(tmp_path / "straight"))

    with pytest.raises(Crash):
        run_rl(recipe(tmp_path / "resumed"), on_step=crash_at(5))
    run_rl(recipe(tmp_path / "resumed"))
    a = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    va = torch.load(tmp_path / "straight" / "final" / "value_model.pt")
    vb = torch.load(tmp_path / "resumed" / "final" / "value_model.pt")
    assert va.keys() == vb.keys() and all(torch.equal(va[k], vb[k]) for k in va)


@pytest.mark.parametrize(
    "loss",
    [
        {"estimator": "grpo"},
        {"estimator": "dr_grpo", "aggregation": "dr_grpo"},
        {"estimator": "rloo", "kl_coef": 0.05, "kl_in_reward": True},
        {"estimator": "reinforce_pp", "kl_coef": 0.01},
        {"estimator": "reinforce_pp_baseline", "kl_coef": 0.01},
    ],
    ids=lambda loss: loss["estimator"],
)
def test_every_estimator_learns_the_toy_problem(loss: dict, small_model_dir: Path, tmp_path: Path) -> None:
    run_rl(bandit_recipe(tmp_path / "run", small_model_dir, loss=loss, steps=15))
    rewards = reward_curve(tmp_path / "run")
    assert sum(rewards[-3:]) / 3 > sum(rewards[:3]) / 3 + 0.3, rewards


def test_dapo_dynamic_sampling_keeps_only_informative_groups() -> None:
    def ep(group: int, reward: float) -> Episode:
        return Episode([Segment("completion", [1], trainable=True)], group=group, reward=reward)

    episodes = [ep(0, 1.0), ep(0, 1.0), ep(1, 0.0), ep(1, 1.0), ep(2, 0.0), ep(2, 0.0)]
    assert [(e.group, e.reward) for e in informative(episodes)] == [(1, 0.0), (1, 1.0)]


def test_dapo_options_run_and_refill_the_batch(small_model_dir: Path, tmp_path: Path) -> None:
    recipe = bandit_recipe(
        tmp_path / "dapo",
        small_model_dir,
        steps=3,
        sampling={"n": 4, "temperature": 1.0, "max_new_tokens": 3, "dynamic": True, "max_refills": 2},
        loss={"estimator": "grpo", "aggregation": "token_mean", "eps_high": 0.28, "overlong_cache": 2},
    )
    run_rl(recipe)
    rows = [r for r in read_metrics(tmp_path / "dapo" / "metrics.jsonl") if "train/reward" in r]
    assert len(rows) == 3
    assert all(8 <= r["train/sampled_groups"] <= 24 for r in rows)
    # overlong shaping: 3-token completions without eos get -1, 2-token ones -0.5
    assert all(r["train/shaped_reward"] <= r["train/reward"] for r in rows)


def test_dpo_objective_raises_the_chosen_answer(small_policy: HFPolicy) -> None:
    prompt = small_policy.encode_prompt("3 4 -> 12:")

    def row(answer: str) -> Episode:
        return Episode([Segment("prompt", prompt), Segment("completion", small_policy.encode_completion(answer), trainable=True)], group=0)

    batch = collate([row("3*4"), row("3+4")], small_policy.pad_id)
    learner = Learner(small_policy, OptimConfig(lr=1e-3), total_steps=10, reference=small_policy.frozen_copy())
    learner.add_reference_logprobs(batch)

    def seq_logps() -> torch.Tensor:
        return (learner.score(small_policy, batch) * batch.mask).sum(-1)

    before = seq_logps()
    for _ in range(8):
        stats = learner.step(batch, DPOObjective(beta=0.1))
    after = seq_logps()
    assert after[0] > before[0]  # chosen up
    assert (after[0] - after[1]) > (before[0] - before[1]) + 1.0  # margin up
    assert stats["reward_accuracy"] == 1.0


def test_preference_pairs_take_one_right_and_one_wrong_answer_per_prompt() -> None:
    def ep(group: int, correct: bool, tag: int) -> Episode:
        return Episode([Segment("completion", [tag], trainable=True)], group=group, info={"correct": correct})

    episodes = [ep(0, False, 1), ep(0, True, 2), ep(0, True, 3), ep(1, True, 4), ep(2, False, 5), ep(2, True, 6)]
    pairs = preference_pairs(episodes)
    assert [(c.token_ids[0], r.token_ids[0]) for c, r in pairs] == [(2, 1), (6, 5)]


def test_dpo_recipe_runs_on_the_models_own_answers(small_model_dir: Path, tmp_path: Path) -> None:
    recipe = DPORecipe(
        run_dir=str(tmp_path / "dpo"),
        model={"path": str(small_model_dir)},
        task=BANDIT,
        steps=3,
        prompts_per_step=4,
        sampling={"n": 8, "temperature": 1.0, "max_new_tokens": 1, "dynamic": True},
        optim={"lr": 1e-3, "micro_batch_size": 3},
        schedule={"checkpoint_every": 100},
        eval=EVAL,
    )
    run_dpo(recipe)
    rows = [r for r in read_metrics(tmp_path / "dpo" / "metrics.jsonl") if "train/pairs" in r]
    assert len(rows) == 3 and all(r["train/pairs"] >= 1 for r in rows)
    assert "train/reward_margin" in rows[-1]


def test_a_sampled_token_budget_ends_the_run_and_survives_resume(small_model_dir: Path, tmp_path: Path) -> None:
    # 8 prompts x 8 samples x 1 token = 64 sampled tokens a step: a budget of 150 ends after step 3.
    def recipe(run_dir: Path) -> RLRecipe:
        return bandit_recipe(run_dir, small_model_dir, max_sampled_tokens=150, schedule={"checkpoint_every": 1, "eval_every": 0})

    summary = run_rl(recipe(tmp_path / "straight"))
    assert summary["steps"] == 3 and summary["sampled_tokens"] == 192
    totals = [r["train/sampled_tokens_total"] for r in read_metrics(tmp_path / "straight" / "metrics.jsonl") if "train/sampled_tokens_total" in r]
    assert totals == [64, 128, 192]

    with pytest.raises(Crash):
        run_rl(recipe(tmp_path / "resumed"), on_step=crash_at(2))
    resumed = run_rl(recipe(tmp_path / "resumed"))
    assert resumed["steps"] == 3 and resumed["sampled_tokens"] == 192
    assert run_rl(recipe(tmp_path / "resumed"))["steps"] == 3  # a finished run does not train further
