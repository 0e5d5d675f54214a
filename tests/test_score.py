"""SCoRe (SPECS §2): per-turn rewards by hand, per-turn RLOO advantages on hand-made episodes, Stage I's
per-turn KL weights, and a short end-to-end run that logs the transition metrics and keeps `best/`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import Crash, crash_at
import torch

from selfimprove.algos.advantages import ADVANTAGES, EstimatorInputs
from selfimprove.methods.score import (
    ScoreConfig,
    ScoreRecipe,
    run_score,
    score_loss_config,
    set_turn_rewards,
    turn_rewards,
    turn_weights,
)
from selfimprove.policy import HFPolicy, SamplingParams
from selfimprove.rollout.correct import two_attempt_episodes
from selfimprove.rollout.episode import Episode, Segment, collate, segment_mask
from selfimprove.tasks import make_task
from selfimprove.tasks.base import TASKS, Problem, Split, Task, Verdict
from selfimprove.train.runlog import read_metrics

COUNTDOWN = {"num_numbers": 2, "max_number": 9, "min_target": 1, "max_target": 20}
# (r1, r2) of the four transitions: i->c, c->i, c->c, i->i
R1 = torch.tensor([0.0, 1.0, 1.0, 0.0])
R2 = torch.tensor([1.0, 0.0, 1.0, 0.0])


def test_stage_one_turn_rewards_are_zero_then_r2() -> None:
    t1, t2 = turn_rewards(R1, R2, ScoreConfig(stage="I"))
    assert t1.tolist() == [0.0, 0.0, 0.0, 0.0]
    assert t2.tolist() == [1.0, 0.0, 1.0, 0.0]


def test_stage_two_shaping_per_turn_and_episode_total() -> None:
    t1, t2 = turn_rewards(R1, R2, ScoreConfig(stage="II", alpha=10.0))
    assert t1.tolist() == [0.0, 1.0, 1.0, 0.0]  # turn 1: r1
    # turn 2: r2 + b, b = 10 (r2 - r1): i->c 1 + 10, c->i 0 - 10, c->c 1, i->i 0
    assert t2.tolist() == [11.0, -10.0, 1.0, 0.0]
    # episode total r1 + r2 + b (SPECS' sum over both turns): i->c 11, c->i -9, c->c 2, i->i 0
    assert (t1 + t2).tolist() == [11.0, -9.0, 2.0, 0.0]
    # the bonus alone is SPECS' +10 / -10 / 0 / 0 on top of r1 + r2
    assert (t1 + t2 - R1 - R2).tolist() == [10.0, -10.0, 0.0, 0.0]


def test_stage_two_without_shaping_is_r1_then_r2() -> None:
    t1, t2 = turn_rewards(R1, R2, ScoreConfig(stage="II", shaping=False))
    assert t1.tolist() == [0.0, 1.0, 1.0, 0.0]
    assert t2.tolist() == [1.0, 0.0, 1.0, 0.0]


def test_single_turn_trains_turn_one_only_and_is_a_stage_two_ablation() -> None:
    t1, t2 = turn_rewards(R1, R2, ScoreConfig(stage="II", single_turn=True))
    assert t1.tolist() == R1.tolist() and t2.tolist() == [0.0] * 4
    with pytest.raises(ValueError):
        ScoreConfig(stage="I", single_turn=True)
    with pytest.raises(ValueError):
        ScoreConfig(stage="II", unknown=1)  # type: ignore[call-arg]


def episode(group: int, r1: float, r2: float, prompt: list[int], a1: list[int], instr: list[int], a2: list[int]) -> Episode:
    return Episode(
        [
            Segment("prompt", prompt),
            Segment("attempt1", a1, trainable=True, reward=r1),
            Segment("instruction", instr),
            Segment("attempt2", a2, trainable=True, reward=r2),
        ],
        group=group,
        reward=r2,
    )


def score_advantages(episodes: list[Episode], config: ScoreConfig) -> torch.Tensor:
    """What SCoRe's step does with episodes: credit each turn, then the registered per-turn estimator."""
    set_turn_rewards(episodes, config)
    batch = collate(episodes, pad_id=0)
    inputs = EstimatorInputs(batch.rewards, batch.groups, batch.mask, turn_rewards=batch.turn_rewards,
                             turn_masks=batch.turn_masks)
    return ADVANTAGES.get(score_loss_config(ScoreRecipe(run_dir="-", score=config)).estimator)(inputs).advantages


def toy_episodes() -> list[Episode]:
    # Group 7: (r1, r2) = (0,1), (1,0), (1,1); group 3: (0,0), (0,1); interleaved, different lengths.
    return [
        episode(7, 0, 1, [1, 2], [3, 4], [5], [6, 7, 8]),  # attempt1 cols 1-2, attempt2 cols 4-6 (len 8)
        episode(3, 0, 0, [1], [3], [5], [6, 7]),  # attempt1 col 0, attempt2 cols 2-3 (len 5)
        episode(7, 1, 0, [1], [3, 4, 4], [5], [6]),  # attempt1 cols 0-2, attempt2 col 4 (len 6)
        episode(7, 1, 1, [1, 2, 2], [3], [5, 5], [6, 7]),  # attempt1 col 2, attempt2 cols 5-6 (len 8)
        episode(3, 0, 1, [1, 2], [3], [5], [6]),  # attempt1 col 1, attempt2 col 3 (len 5)
    ]


def test_score_advantages_are_per_turn_rloo_on_each_turns_columns() -> None:
    episodes = toy_episodes()
    batch = collate(episodes, pad_id=0)
    assert batch.mask.shape == (5, 7)
    adv = score_advantages(episodes, ScoreConfig(stage="II", alpha=10.0))
    # Group 7, turn 1 rewards (0, 1, 1): RLOO 0 - 1 = -1, 1 - 0.5 = 0.5, 1 - 0.5 = 0.5.
    # Group 7, turn 2 rewards (11, -10, 1): 11 - (-9/2) = 15.5, -10 - 12/2 = -16, 1 - 1/2 = 0.5.
    # Group 3, turn 1 rewards (0, 0): 0, 0; turn 2 rewards (0, 11): -11, 11.
    expected = torch.tensor(
        [
            [0, -1, -1, 0, 15.5, 15.5, 15.5],
            [0, 0, -11, -11, 0, 0, 0],
            [0.5, 0.5, 0.5, 0, -16, 0, 0],
            [0, 0, 0.5, 0, 0, 0.5, 0.5],
            [0, 0, 0, 11, 0, 0, 0],
        ]
    )
    torch.testing.assert_close(adv, expected)
    # nothing outside the trainable tokens
    assert (adv[batch.mask == 0] == 0).all()

    # Stage I: turn 1 has reward 0 for everyone, so only turn 2 carries an advantage (RLOO of r2).
    episodes = toy_episodes()
    adv1 = score_advantages(episodes, ScoreConfig(stage="I"))
    width = batch.mask.shape[1]
    assert (adv1 * segment_mask(episodes, "attempt1", width) == 0).all()
    # group 7 r2 = (1, 0, 1): 1 - 0.5, 0 - 1, 1 - 0.5; group 3 r2 = (0, 1): -1, 1
    turn2 = segment_mask(episodes, "attempt2", width)
    torch.testing.assert_close(adv1, torch.tensor([0.5, -1.0, -1.0, 0.5, 1.0]).unsqueeze(-1) * turn2)


def test_stage_one_kl_weights_put_beta_first_on_turn_one(small_policy: HFPolicy) -> None:
    config = ScoreConfig(stage="I", beta_first=0.2, beta=0.01)
    task = make_task("countdown", COUNTDOWN)
    episodes = two_attempt_episodes(
        small_policy, task, task.problems("train", 2), SamplingParams(n=2, temperature=1.0, max_new_tokens=6),
        kl_weights=turn_weights(config),
    )
    batch = collate(episodes, small_policy.pad_id)
    width = batch.mask.shape[1]
    m1, m2 = segment_mask(episodes, "attempt1", width), segment_mask(episodes, "attempt2", width)
    assert m1.sum() > 0 and m2.sum() > 0
    torch.testing.assert_close(batch.kl_weights[m1 == 1], torch.full((int(m1.sum()),), 20.0))
    torch.testing.assert_close(batch.kl_weights[m2 == 1], torch.ones(int(m2.sum())))
    # effective per-token beta = kl_coef * kl_weight: beta_first on turn 1, beta on turn 2
    recipe = ScoreRecipe(run_dir="unused", score=config)
    loss = score_loss_config(recipe)
    assert loss.kl_coef == 0.01 and not loss.kl_as_reward
    torch.testing.assert_close(loss.kl_coef * batch.kl_weights[m1 == 1], torch.full((int(m1.sum()),), 0.2))
    assert turn_weights(ScoreConfig(stage="II")) == turn_weights(ScoreConfig(stage="II", beta_first=0.5))
    assert turn_weights(ScoreConfig(stage="II")).first == 1.0


def score_recipe(run_dir: Path, stage: str, **score: object) -> ScoreRecipe:
    return ScoreRecipe(
        run_dir=str(run_dir),
        model={"path": "tiny:small"},
        task={"name": "countdown", "params": COUNTDOWN},
        steps=3,
        prompts_per_step=2,
        sampling={"n": 3, "temperature": 1.0, "max_new_tokens": 8},
        optim={"lr": 1e-3, "micro_batch_size": 12},
        schedule={"checkpoint_every": 2, "eval_every": 0},
        eval={"num_problems": 4, "batch_size": 4, "max_new_tokens": 8},
        score={"stage": stage, "best_window": 2, **score},
    )


@pytest.mark.parametrize("stage", ["I", "II"])
def test_run_score_logs_transitions_and_keeps_the_best_checkpoint(tmp_path: Path, stage: str) -> None:
    seen: list[int] = []
    summary = run_score(score_recipe(tmp_path / "run", stage), on_step=lambda done, m: seen.append(done))
    assert seen == [1, 2, 3]
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "train/reward" in r]
    assert len(rows) == 3
    for r in rows:
        for key in ("train/acc_t1", "train/acc_t2", "train/delta", "train/i_to_c", "train/c_to_i", "train/loss"):
            assert key in r, key
        assert r["train/delta"] == pytest.approx(r["train/i_to_c"] - r["train/c_to_i"])
        assert r["train/delta"] == pytest.approx(r["train/acc_t2"] - r["train/acc_t1"])
        assert r["train/reward"] == pytest.approx(r["train/reward_turn1"] + r["train/reward_turn2"])
        if stage == "I":
            assert r["train/reward"] == pytest.approx(r["train/acc_t2"])  # binary countdown reward
    best = tmp_path / "run" / "best"
    assert (best / "config.json").exists() and (best / "best.json").exists()
    assert summary["best_step"] in (1, 2, 3)
    running = [r["train/reward_running"] for r in rows]
    assert summary["best_reward"] == pytest.approx(max(running))
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["best_step"] == summary["best_step"]
    assert HFPolicy.load(best).model is not None


def test_single_turn_ablation_runs(tmp_path: Path) -> None:
    recipe = score_recipe(tmp_path / "run", "II", single_turn=True)
    recipe = recipe.model_copy(update={"steps": 1})
    summary = run_score(recipe)
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "train/reward" in r]
    assert len(rows) == 1 and "train/acc_t1" in rows[0] and "train/acc_t2" not in rows[0]
    assert rows[0]["train/reward"] == pytest.approx(rows[0]["train/acc_t1"])
    assert summary["best_step"] == 1


class ScoreDigitBandit(Task):
    """One-token toy problem: the reward is 1 when the first character written is a digit."""

    name = "score-digit-bandit"

    def problem(self, split: Split, index: int) -> Problem:
        return Problem(id=f"sbandit-{split}-{index}", prompt=f"{index % 7}?", answer="a digit")

    def verify(self, problem: Problem, text: str) -> Verdict:
        return Verdict.right() if text[:1].isdigit() else Verdict.wrong("not a digit")


if "score-digit-bandit" not in TASKS:
    TASKS.register("score-digit-bandit")(ScoreDigitBandit)


@pytest.mark.parametrize("stage", ["I", "II"])
def test_score_learns_the_toy_problem_on_turn_two(stage: str, small_model_dir: Path, tmp_path: Path) -> None:
    recipe = ScoreRecipe(
        run_dir=str(tmp_path / "run"),
        model={"path": str(small_model_dir)},
        task={"name": "score-digit-bandit"},
        steps=20,
        prompts_per_step=8,
        sampling={"n": 8, "temperature": 1.0, "max_new_tokens": 1},
        optim={"lr": 1e-2, "micro_batch_size": 64},
        schedule={"checkpoint_every": 100, "eval_every": 0},
        eval={"num_problems": 4, "batch_size": 4, "max_new_tokens": 1},
        score={"stage": stage},
    )
    summary = run_score(recipe)
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "train/reward" in r]
    acc2 = [r["train/acc_t2"] for r in rows]
    start, end = sum(acc2[:3]) / 3, sum(acc2[-3:]) / 3
    assert start < 0.3 and end > start + 0.4, acc2
    assert summary["best_step"] > 3 and summary["best_reward"] > 0
    assert all(r["train/kl"] >= 0 for r in rows)  # k3 to the frozen base model
    acc1 = [r["train/acc_t1"] for r in rows]
    if stage == "I":  # turn 1 has no reward, only the strong KL: it is pulled back to the base model
        assert sum(acc1[-3:]) / 3 < end - 0.4, (acc1, acc2)
    else:  # Stage II rewards turn 1 too
        assert sum(acc1[-3:]) / 3 > start + 0.4, (acc1, acc2)


def test_run_score_resumes_to_the_same_policy_and_best(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    straight = run_score(score_recipe(tmp_path / "straight", "II"))

    with pytest.raises(Crash):
        run_score(score_recipe(tmp_path / "resumed", "II"), on_step=crash_at(3))
    resumed = run_score(score_recipe(tmp_path / "resumed", "II"))
    a = load_file(str(tmp_path / "straight" / "final" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "final" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (straight["best_reward"], straight["best_step"]) == (resumed["best_reward"], resumed["best_step"])
