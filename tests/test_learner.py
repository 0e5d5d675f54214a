"""The learner: micro-batching does not change the update; warm-up and schedules; gradient clipping."""

from __future__ import annotations

import copy

import pytest
import torch

from selfimprove.algos.advantages import grpo
from selfimprove.config import LossConfig, OptimConfig
from selfimprove.policy import HFPolicy
from selfimprove.rollout.episode import Episode, Segment, collate
from selfimprove.train.learner import Learner, lr_lambda
from selfimprove.train.objectives import PolicyGradientObjective, sft_objective


def make_batch(policy: HFPolicy):
    episodes = []
    for i, (prompt, answer, reward) in enumerate([("1 2 -> 3:", "1+2", 1.0), ("1 2 -> 3:", "2*1", 0.0), ("4 5 -> 20:", "4*5", 1.0), ("4 5 -> 20:", "5-4+", 0.0), ("7 -> 7:", "7", 1.0)]):
        episodes.append(
            Episode(
                [Segment("prompt", policy.encode_prompt(prompt)), Segment("completion", policy.encode_completion(answer), trainable=True)],
                group=i // 2,
                reward=reward,
            )
        )
    batch = collate(episodes, policy.pad_id)
    batch.advantages = grpo(batch.rewards, batch.groups, batch.mask)
    return batch


@pytest.mark.parametrize("objective", ["sft", "grpo_seq", "grpo_token"])
def test_micro_batch_size_does_not_change_the_update(small_policy: HFPolicy, objective: str) -> None:
    batch = make_batch(small_policy)
    fn = {
        "sft": sft_objective,
        "grpo_seq": PolicyGradientObjective(LossConfig(aggregation="seq_mean")),
        "grpo_token": PolicyGradientObjective(LossConfig(aggregation="token_mean")),
    }[objective]
    results = []
    for micro in (1, 2, 5):
        policy = HFPolicy(copy.deepcopy(small_policy.model), small_policy.tokenizer)
        learner = Learner(policy, OptimConfig(lr=1e-2, micro_batch_size=micro), total_steps=1)
        stats = learner.step(batch, fn)
        # Compare gradients, not post-Adam weights: Adam's first step g / (|g| + eps) magnifies float noise.
        results.append((stats["loss"], [p.grad.clone() for p in policy.model.parameters()]))
    for loss, grads in results[1:]:
        assert loss == pytest.approx(results[0][0], abs=1e-5)
        for a, b in zip(grads, results[0][1]):
            assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_sft_step_lowers_the_loss_on_its_batch(small_policy: HFPolicy) -> None:
    batch = make_batch(small_policy)
    learner = Learner(small_policy, OptimConfig(lr=3e-3), total_steps=20)
    first = learner.step(batch, sft_objective)["loss"]
    for _ in range(10):
        last = learner.step(batch, sft_objective)["loss"]
    assert last < first - 0.5


def test_gradient_is_clipped_to_max_norm(small_policy: HFPolicy) -> None:
    batch = make_batch(small_policy)
    learner = Learner(small_policy, OptimConfig(lr=1e-3, max_grad_norm=1e-3), total_steps=1)
    stats = learner.step(batch, sft_objective)
    assert stats["grad_norm"] > 1e-3  # reported before clipping
    clipped = torch.sqrt(sum((p.grad**2).sum() for p in small_policy.model.parameters() if p.grad is not None))
    assert float(clipped) == pytest.approx(1e-3, rel=1e-3)


def test_warmup_then_schedules() -> None:
    const = lr_lambda(OptimConfig(warmup_steps=4, schedule="constant"), total_steps=10)
    assert [const(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    lin = lr_lambda(OptimConfig(warmup_steps=0, schedule="linear"), total_steps=10)
    assert [lin(s) for s in (0, 5, 10)] == pytest.approx([1.0, 0.5, 0.0])
    cos = lr_lambda(OptimConfig(warmup_steps=2, schedule="cosine", min_lr_ratio=0.1), total_steps=12)
    # after warm-up: progress = (step - 2) / 10; factor = 0.1 + 0.9 * 0.5 * (1 + cos(pi * progress))
    assert [cos(s) for s in (2, 7, 12)] == pytest.approx([1.0, 0.55, 0.1])


def test_reference_logprobs_come_from_the_frozen_copy(small_policy: HFPolicy) -> None:
    batch = make_batch(small_policy)
    reference = small_policy.frozen_copy()
    learner = Learner(small_policy, OptimConfig(lr=1e-2), total_steps=5, reference=reference)
    learner.add_reference_logprobs(batch)
    before = batch.ref_logprobs.clone()
    learner.step(batch, sft_objective)
    learner.add_reference_logprobs(batch)
    assert torch.equal(before, batch.ref_logprobs)
    assert not torch.equal(learner.score(small_policy, batch), before)
    assert not any(p.requires_grad for p in reference.model.parameters())


def test_bf16_autocast_runs_the_products_in_bf16_and_keeps_weights_and_adam_in_fp32(small_policy: HFPolicy) -> None:
    batch = make_batch(small_policy)
    grads, logps = {}, {}
    for cast in ("none", "bfloat16"):
        policy = HFPolicy(copy.deepcopy(small_policy.model), small_policy.tokenizer)
        learner = Learner(policy, OptimConfig(lr=1e-3, autocast=cast), total_steps=2)
        logps[cast] = learner.score(policy, batch)
        learner.step(batch, sft_objective)
        grads[cast] = [p.grad.clone() for p in policy.model.parameters()]
        assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in policy.model.parameters())
        assert all(s["exp_avg"].dtype == torch.float32 for s in learner.optimizer.state.values())
    m = batch.mask.bool()
    gap = (logps["bfloat16"][m] - logps["none"][m]).abs()
    assert 0 < gap.max() < 0.1  # bf16 products: a different, close answer
    assert torch.isfinite(torch.cat([g.flatten() for g in grads["bfloat16"]])).all()
    cos = torch.nn.functional.cosine_similarity(torch.cat([g.flatten() for g in grads["bfloat16"]]),
                                                torch.cat([g.flatten() for g in grads["none"]]), dim=0)
    assert cos > 0.99
    # the update's products ran in bf16 too: its gradients are not the fp32 ones
    assert any(not torch.equal(a, b) for a, b in zip(grads["bfloat16"], grads["none"]))
