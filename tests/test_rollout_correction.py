"""Rollout correction: truncated and masked importance weights between the sampler's policy and the
learner's, per token and per sequence, checked against numbers worked by hand; the diagnostics every RL
step logs; and a real sampler/learner mismatch (a bf16 sampler, an fp32 learner) measured and corrected."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch

from selfimprove.algos.rollout_correction import rollout_correction
from selfimprove.config import ConfigError, LossConfig, RLRecipe, RolloutCorrectionConfig, load_recipe
from selfimprove.rollout.episode import Episode, Segment, collate
from selfimprove.train.learner import Forward, Norms
from selfimprove.train.objectives import PolicyGradientObjective

E = math.exp


def _t(*rows: list[float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


PROX = _t([-1.0, -2.0, -0.5])
BEHAV = _t([-1.5, -1.0, -0.5])  # log-ratios 0.5, -1.0, 0.0
ONES = _t([1.0, 1.0, 1.0])


def test_token_level_weights_and_diagnostics_by_hand() -> None:
    none = rollout_correction(PROX, BEHAV, ONES, ONES)
    assert none.weights.tolist() == [[1.0, 1.0, 1.0]]
    k3 = [E(0.5) - 0.5 - 1, E(-1.0) + 1.0 - 1, 0.0]
    assert float(none.stats["rollout_kl"]) == pytest.approx(sum(k3) / 3, rel=1e-6)
    assert float(none.stats["rollout_ratio_max"]) == pytest.approx(E(0.5), rel=1e-6)
    assert float(none.stats["rollout_masked"]) == 0.0
    tis = rollout_correction(PROX, BEHAV, ONES, ONES, kind="tis", cap=1.5)
    assert tis.weights[0].tolist() == pytest.approx([1.5, E(-1.0), 1.0], rel=1e-6)
    assert float(tis.stats["rollout_masked"]) == pytest.approx(1 / 3)
    mis = rollout_correction(PROX, BEHAV, ONES, ONES, kind="mis", cap=1.5)
    assert mis.weights[0].tolist() == pytest.approx([0.0, E(-1.0), 1.0], rel=1e-6)
    assert float(mis.stats["rollout_masked"]) == pytest.approx(1 / 3)


def test_masked_sampling_can_drop_ratios_below_a_lower_threshold_too() -> None:
    mis = rollout_correction(PROX, BEHAV, ONES, ONES, kind="mis", cap=1.5, low=0.5)
    assert mis.weights[0].tolist() == pytest.approx([0.0, 0.0, 1.0])  # e^0.5 > 1.5 and e^-1 < 0.5 both dropped
    assert float(mis.stats["rollout_masked"]) == pytest.approx(2 / 3)
    with pytest.raises(ConfigError, match="low .* applies to kind mis only"):
        load_recipe(RLRecipe, None, ["run_dir=x", "loss.rollout_correction={kind: tis, low: 0.5}"])


def test_sequence_level_uses_the_product_of_the_rows_ratios() -> None:
    low = rollout_correction(PROX, BEHAV, ONES, ONES, kind="tis", level="sequence", cap=1.5)
    assert low.weights[0].tolist() == pytest.approx([E(-0.5)] * 3, rel=1e-6)  # 0.5 - 1.0 + 0.0
    assert float(low.stats["rollout_masked"]) == 0.0
    high_prox = _t([-1.0, -0.6, -0.5])  # log-ratios 0.5, 0.4, 0.0: the sequence's ratio e^0.9 = 2.46
    tis = rollout_correction(high_prox, BEHAV, ONES, ONES, kind="tis", level="sequence", cap=2.0)
    assert tis.weights[0].tolist() == pytest.approx([2.0, 2.0, 2.0])
    mis = rollout_correction(high_prox, BEHAV, ONES, ONES, kind="mis", level="sequence", cap=2.0)
    assert mis.weights[0].tolist() == [0.0, 0.0, 0.0] and float(mis.stats["rollout_masked"]) == 1.0
    assert float(mis.stats["rollout_ratio_max"]) == pytest.approx(E(0.9), rel=1e-6)


def test_tokens_without_a_sampling_logprob_or_not_trained_are_left_alone() -> None:
    known = _t([1.0, 0.0, 1.0])  # token 1 was not sampled (a demonstration): weight 1, not measured
    out = rollout_correction(PROX, BEHAV, known, ONES, kind="mis", cap=1.5)
    assert out.weights[0].tolist() == pytest.approx([0.0, 1.0, 1.0])
    assert float(out.stats["rollout_kl"]) == pytest.approx((E(0.5) - 1.5) / 2, rel=1e-6)
    assert float(out.stats["rollout_masked"]) == pytest.approx(1 / 2)
    untrained = rollout_correction(PROX, BEHAV, ONES, _t([0.0, 1.0, 1.0]), kind="tis", cap=1.5)
    assert float(untrained.stats["rollout_ratio_max"]) == pytest.approx(1.0)  # e^0.5 sits on an untrained token
    nothing = rollout_correction(PROX, BEHAV, torch.zeros_like(ONES), ONES, kind="tis")
    assert nothing.weights.tolist() == [[1.0, 1.0, 1.0]] and float(nothing.stats["rollout_ratio_max"]) == 1.0


def _episode() -> Episode:
    return Episode([Segment("prompt", [1, 2]), Segment("completion", [3, 4, 5], trainable=True, reward=1.0,
                                                        logprobs=BEHAV[0].tolist())], group=0, reward=1.0)


def test_the_weights_scale_the_policy_gradient_of_the_objective() -> None:
    batch = collate([_episode()], pad_id=0)
    batch.advantages = torch.ones_like(batch.mask)
    logp = torch.zeros_like(batch.mask)
    logp[0, 1:] = PROX[0]
    norms = Norms(1, 3.0, batch.mask.shape[1])
    config = LossConfig(rollout_correction=RolloutCorrectionConfig(kind="tis", cap=1.5))
    current = logp.clone().requires_grad_()
    loss, stats = PolicyGradientObjective(config)(Forward(current), batch, norms)
    # Exactly on-policy: the ratio to the pre-update policy is 1; the weights are 1.5, e^-1, 1 on A = 1.
    assert float(loss.detach()) == pytest.approx(-(1.5 + E(-1.0) + 1.0) / 3, rel=1e-6)
    loss.backward()
    assert current.grad[0, 1:].tolist() == pytest.approx([-1.5 / 3, -E(-1.0) / 3, -1.0 / 3], rel=1e-6)
    assert float(stats["rollout_masked"]) == pytest.approx(1 / 3) and "rollout_ratio_max" in stats
    plain, plain_stats = PolicyGradientObjective(LossConfig())(Forward(logp.clone().requires_grad_()), batch, norms)
    assert float(plain.detach()) == pytest.approx(-1.0) and float(plain_stats["rollout_kl"]) == float(stats["rollout_kl"])


def test_stale_samples_without_a_correction_take_the_ratio_to_the_sampler() -> None:
    """Asynchronous rollouts: with epochs > 1 the proximal log-probs come from `prepare`, and the
    sampler's own stay in the batch (they were overwritten before)."""
    batch = collate([_episode()], pad_id=0)
    batch.advantages = torch.ones_like(batch.mask)
    batch.old_logprobs = torch.zeros_like(batch.mask)
    batch.old_logprobs[0, 1:] = PROX[0]
    current = batch.old_logprobs.clone()
    norms = Norms(1, 3.0, batch.mask.shape[1])
    config = LossConfig(epochs=2)
    stale, _ = PolicyGradientObjective(config, off_policy=True)(Forward(current), batch, norms)
    ratios = [1.2, E(-1.0), 1.0]  # -min(r A, clip(r, 0.8, 1.2) A) with A = 1: e^0.5 clipped at 1.2, e^-1 kept
    assert float(stale) == pytest.approx(-sum(ratios) / 3, rel=1e-6)
    fresh, _ = PolicyGradientObjective(config)(Forward(current), batch, norms)
    assert float(fresh) == pytest.approx(-1.0)  # to the proximal policy: ratio 1


def test_the_recipe_section_is_checked() -> None:
    recipe = load_recipe(RLRecipe, None, ["run_dir=x", "loss.rollout_correction={kind: mis, level: sequence, cap: 3}"])
    assert recipe.loss.rollout_correction == RolloutCorrectionConfig(kind="mis", level="sequence", cap=3.0)
    with pytest.raises(ConfigError, match="loss.rollout_correction.kind"):
        load_recipe(RLRecipe, None, ["run_dir=x", "loss.rollout_correction.kind=clip"])
    with pytest.raises(ConfigError, match="loss.rollout_correction.cap"):
        load_recipe(RLRecipe, None, ["run_dir=x", "loss.rollout_correction.cap=1"])


def test_a_bf16_sampler_against_an_fp32_learner_is_measured_and_corrected() -> None:
    """A real mismatch: episodes sampled by a bf16 copy of the policy, scored by the fp32 learner."""
    from selfimprove.policy.hf import HFPolicy
    from selfimprove.policy.load import load_hf
    from selfimprove.policy.base import SamplingParams
    from selfimprove.rollout.single import sample_episodes
    from selfimprove.tasks import make_task
    from selfimprove.train.update import prepare

    learner_policy = load_hf("tiny:small", seed=0)
    with torch.no_grad():  # sharpen the new model's near-uniform next-token distributions (larger logits)
        learner_policy.model.get_input_embeddings().weight.mul_(3.0)
    sampler = HFPolicy(copy.deepcopy(learner_policy.model).to(torch.bfloat16), learner_policy.tokenizer, seed=1)
    task = make_task("countdown", {"num_numbers": 2, "max_number": 9, "min_target": 1, "max_target": 18})
    episodes = sample_episodes(sampler, task, task.problems("train", 8), SamplingParams(n=4, max_new_tokens=8))
    for i, e in enumerate(episodes):
        e.reward = float(i % 2)  # mixed rewards in every group: non-zero advantages
    from selfimprove.config import OptimConfig
    from selfimprove.train.learner import Learner

    learner = Learner(learner_policy, OptimConfig(lr=1e-3), 10)
    stats = {}
    for kind in ("none", "tis", "mis"):
        batch = collate(episodes, learner_policy.pad_id)
        config = LossConfig(rollout_correction=RolloutCorrectionConfig(kind=kind, cap=1.005))
        prepare(learner, batch, config)
        with torch.no_grad():
            logp = learner.forward(batch).logp
        norms = Norms(batch.size, float(batch.mask.sum()), batch.mask.shape[1])
        loss, s = PolicyGradientObjective(config)(Forward(logp.requires_grad_()), batch, norms)
        stats[kind] = {k: float(v) for k, v in s.items()} | {"loss": float(loss.detach())}
    # bf16 rounding moves the sampler's log-probs: the gap is measured, the same whatever the correction.
    assert stats["none"]["rollout_kl"] > 1e-6 and stats["none"]["rollout_ratio_max"] > 1.005
    assert stats["tis"]["rollout_kl"] == stats["none"]["rollout_kl"] == stats["mis"]["rollout_kl"]
    assert stats["none"]["rollout_masked"] == 0.0 and 0.0 < stats["tis"]["rollout_masked"] == stats["mis"]["rollout_masked"] < 1
    assert stats["none"]["loss"] == pytest.approx(0.0, abs=1e-6)  # on-policy GRPO: the advantages sum to 0 per group
    assert len({round(stats[k]["loss"], 9) for k in stats}) == 3  # each correction reweights the tokens differently
    # An fp32 sampler (the same numerics) shows next to no gap.
    same = collate(sample_episodes(learner_policy, task, task.problems("train", 4), SamplingParams(n=2, max_new_tokens=8)),
                   learner_policy.pad_id)
    with torch.no_grad():
        out = learner.forward(same).logp
    fp32 = rollout_correction(out, same.behaviour_logprobs, same.behaviour_mask, same.mask)
    assert float(fp32.stats["rollout_kl"]) < stats["none"]["rollout_kl"] / 10


def test_every_rl_step_logs_the_rollout_gap(tmp_path: Path) -> None:
    from selfimprove.methods.rl import run_rl

    recipe = RLRecipe.model_validate({
        "run_dir": str(tmp_path / "run"), "model": {"path": "tiny:small"}, "steps": 2, "prompts_per_step": 2,
        "task": {"name": "countdown", "params": {"num_numbers": 2, "max_number": 9, "min_target": 1, "max_target": 18}},
        "sampling": {"n": 2, "max_new_tokens": 6}, "eval": {"num_problems": 2, "max_new_tokens": 6},
        "loss": {"rollout_correction": {"kind": "tis"}}})
    run_rl(recipe)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "train/loss" in r]
    assert len(steps) == 2
    for r in steps:
        assert 0.0 <= r["train/rollout_kl"] < 1e-4 and r["train/rollout_masked"] == 0.0
        assert abs(r["train/rollout_ratio_max"] - 1.0) < 1e-2  # the same fp32 model samples and learns
