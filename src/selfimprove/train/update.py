"""From a rollout batch to learner updates, shared by every RL-style method (GRPO family, PPO, SCoRe,
RRR): reward shaping, `prepare` (reference and old log-probs, values, where the KL goes, the
registered estimator's advantages and returns), then `epochs x minibatches` learner steps.

`prepare` never branches on an estimator's name: what an estimator needs (a critic's values, per-token
KL, per-turn rewards) is declared where it is registered (`algos.advantages.ADVANTAGES`).
"""

from __future__ import annotations

from typing import Sequence

import torch

from selfimprove.algos.advantages import EstimatorInputs
from selfimprove.algos.shaping import overlong_penalty
from selfimprove.algos.token_advantages import fold_kl_into_rewards
from selfimprove.config import LossConfig
from selfimprove.rollout.episode import Episode, TokenBatch
from selfimprove.timing import phase
from selfimprove.train.learner import Learner, Objective, is_max


def shape_rewards(episodes: Sequence[Episode], loss: LossConfig, max_new_tokens: int) -> None:
    """DAPO's soft overlong penalty, added to each episode's reward (on its outcome segment)."""
    cache = loss.overlong_cache
    if not cache:
        return
    lengths = torch.tensor([float(e.num_trainable) for e in episodes])
    penalty = overlong_penalty(lengths, max_len=max_new_tokens, cache_len=cache)
    for e, p in zip(episodes, penalty.tolist()):
        e.reward += p


def needs_proximal(loss: LossConfig) -> bool:
    """Whether the update needs the learner's pre-update log-probs computed ahead: with one epoch and one
    minibatch the update's own forward pass gives them (the optimizer steps only after it)."""
    return loss.epochs > 1 or loss.minibatches > 1 or loss.kl_as_reward


def prepare(learner: Learner, batch: TokenBatch, loss: LossConfig) -> None:
    """Fill the proximal (pre-update) log-probs, values, reference log-probs, advantages and returns of a
    rollout batch. The sampler's behaviour log-probs stay as collated (`batch.behaviour_logprobs`)."""
    spec = loss.spec
    if loss.kl_coef > 0:
        with phase("reference"):
            learner.add_reference_logprobs(batch)
    if learner.value_model is not None:
        with phase("old_logprobs"):
            batch.old_logprobs, batch.old_values = learner.score_values(batch)
    elif needs_proximal(loss):
        with phase("old_logprobs"):
            batch.old_logprobs = learner.score(learner.policy, batch)
    kl = None
    rewards = batch.rewards
    if loss.kl_as_reward:
        assert batch.ref_logprobs is not None and batch.old_logprobs is not None
        kl = (batch.old_logprobs - batch.ref_logprobs) * batch.mask  # k1 of the sampled tokens
        if not spec.token_level:
            rewards = fold_kl_into_rewards(rewards, kl, batch.mask, loss.kl_coef)
            kl = None
    with phase("advantages"):
        estimate = spec(_inputs(batch, loss, rewards, kl))
    batch.advantages = estimate.advantages
    batch.returns = estimate.returns


def _inputs(batch: TokenBatch, loss: LossConfig, rewards: torch.Tensor, kl: torch.Tensor | None) -> EstimatorInputs:
    return EstimatorInputs(
        rewards=rewards,
        groups=batch.groups,
        mask=batch.mask,
        values=None if batch.old_values is None else batch.old_values * batch.mask,
        kl=kl,
        kl_coef=loss.kl_coef if kl is not None else 0.0,
        gamma=loss.gamma,
        lam=loss.lam,
        eps=loss.std_eps,
        scale=loss.scale_rewards,
        turn_rewards=batch.turn_rewards,
        turn_masks=batch.turn_masks,
        paid=batch.paid_rewards,
    )


def minibatch_order(size: int, parts: int, seed: int, step: int, epoch: int) -> list[torch.Tensor]:
    """Row indices of each minibatch: a fresh permutation per epoch, a function of (seed, step, epoch)."""
    if parts == 1:
        return [torch.arange(size)]
    g = torch.Generator().manual_seed((seed * 1_000_003 + step) * 1_009 + epoch)
    return list(torch.randperm(size, generator=g).tensor_split(parts))


def update(learner: Learner, batch: TokenBatch, objective: Objective, loss: LossConfig, seed: int, step: int) -> dict[str, float]:
    """`loss.epochs` passes over a rollout batch, `loss.minibatches` learner steps each (deterministic
    shuffle); returns the learner's stats averaged over the updates, as `train/...` metrics."""
    totals: dict[str, float] = {}
    updates = 0
    for epoch in range(loss.epochs):
        for rows in minibatch_order(batch.size, loss.minibatches, seed, step, epoch):
            for k, v in learner.step(batch.rows(rows), objective).items():
                totals[k] = max(totals.get(k, v), v) if is_max(k) else totals.get(k, 0.0) + v
            updates += 1
    return {f"train/{k}": v if is_max(k) else v / updates for k, v in totals.items()}
