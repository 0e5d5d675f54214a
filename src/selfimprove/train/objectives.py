"""Objectives: adapters from a forward pass over a `TokenBatch` to the pure losses of `algos.losses`."""

from __future__ import annotations

import torch
from torch import Tensor

from selfimprove.algos.losses import dpo_loss, entropy_bonus, kl_estimate, sequence_logprob, sft_loss, value_loss
from selfimprove.algos.policy_losses import policy_loss
from selfimprove.algos.rollout_correction import rollout_correction
from selfimprove.config import LossConfig
from selfimprove.rollout.episode import TokenBatch
from selfimprove.train.learner import Forward, Norms


class SFTObjective:
    """Token cross-entropy on the trainable tokens, averaged over the whole batch's tokens."""

    needs_entropy = False

    def __call__(self, out: Forward, batch: TokenBatch, norms: Norms) -> tuple[Tensor, dict[str, Tensor]]:
        return sft_loss(out.logp, batch.mask, weights=batch.weights, num_tokens=norms.num_tokens), {}


sft_objective = SFTObjective()


def generated_kl(logp: Tensor, batch: TokenBatch, estimator: str, norms: Norms) -> tuple[Tensor, Tensor]:
    """The KL to the reference on every token the policy generated in the episode (`batch.kl_mask`),
    weighted per token (`kl_weights`), summed over this micro-batch and divided by the whole batch's
    generated-token count: a token mean that adds up over micro-batches. Returns (loss, mean KL)."""
    if batch.ref_logprobs is None:
        raise ValueError("kl_scope 'generated' needs the reference log-probs in the batch")
    kl = kl_estimate(logp, batch.ref_logprobs, estimator)  # type: ignore[arg-type]
    loss = (batch.kl_weights * kl * batch.kl_mask).sum() / max(norms.num_generated_tokens, 1.0)
    mean = ((kl * batch.kl_mask).sum() / batch.kl_mask.sum().clamp(min=1.0)).detach()
    return loss, mean


class PolicyGradientObjective:
    """The recipe's policy-gradient surrogate (`loss.policy_loss`, clipped by default), optional KL to
    the reference, and for PPO the clipped value loss and an entropy bonus (SPECS §1).

    The ratio is to the learner's pre-update (proximal) policy; the gap between it and the sampler's
    policy (staleness, another engine's numerics) is measured on every step (`rollout_kl`,
    `rollout_ratio_max`, `rollout_masked`) and, with `loss.rollout_correction`, corrected by truncated
    or masked importance weights on the policy-gradient term. Asynchronous rollouts without a
    correction keep PPO's classic form instead: the ratio to the sampler's log-probs."""

    def __init__(self, config: LossConfig, *, max_len: int | None = None, off_policy: bool = False) -> None:
        self.config = config
        self.max_len = max_len  # Dr.GRPO's constant divisor: the generation budget
        self.needs_entropy = config.entropy_coef > 0
        self.off_policy = off_policy  # asynchronous rollouts: the ratio is against the behaviour log-probs

    def __call__(self, out: Forward, batch: TokenBatch, norms: Norms) -> tuple[Tensor, dict[str, Tensor]]:
        if batch.advantages is None:
            raise ValueError("the batch has no advantages: run an estimator first")
        c = self.config
        # One update per rollout batch: this forward pass is the pre-update (proximal) policy, so the
        # ratio to it is 1 and only its gradient matters (as in TRL); otherwise `prepare` computed it.
        proximal = out.logp.detach() if c.epochs == 1 and c.minibatches == 1 else batch.old_logprobs
        if proximal is None:
            raise ValueError("the batch has no pre-update log-probs: run train.update.prepare first")
        fix = c.rollout_correction
        correction = rollout_correction(proximal, batch.behaviour_logprobs, batch.behaviour_mask, batch.mask,
                                        kind=fix.kind, level=fix.level, cap=fix.cap, low=fix.low)
        old_logp = proximal
        if self.off_policy and fix.kind == "none":  # stale samples, no correction: the ratio is to the sampler's
            old_logp = torch.where(batch.behaviour_mask != 0, batch.behaviour_logprobs, proximal)
        kl_in_loss = c.kl_coef > 0 and not c.kl_as_reward
        everywhere = kl_in_loss and c.kl_scope == "generated"  # the KL term below, over generated tokens
        norm_args = dict(num_sequences=norms.num_sequences, num_tokens=norms.num_tokens, max_len=self.max_len or norms.max_len)
        loss, stats = policy_loss(
            out.logp,
            old_logp,
            batch.advantages,
            batch.mask,
            ref_logp=batch.ref_logprobs if kl_in_loss and not everywhere else None,
            kl_coef=c.kl_coef if kl_in_loss and not everywhere else 0.0,
            kl_estimator=c.kl_estimator,
            eps_low=c.eps_low,
            eps_high=c.eps_high,
            kind=c.policy_loss,
            agg=c.aggregation,
            weights=batch.weights,
            kl_weights=batch.kl_weights,
            pg_weights=None if fix.kind == "none" else correction.weights,
            **norm_args,
        )
        stats.update(correction.stats)
        if everywhere:
            kl_loss, kl_mean = generated_kl(out.logp, batch, c.kl_estimator, norms)
            loss = loss + c.kl_coef * kl_loss
            stats["kl"] = kl_mean
        if out.values is not None:
            if batch.returns is None or batch.old_values is None:
                raise ValueError("a value model needs returns and old values in the batch")
            v_loss, v_stats = value_loss(
                out.values, batch.old_values, batch.returns, batch.mask,
                clip=c.value_clip, agg="token_mean", weights=batch.weights, **norm_args,
            )
            loss = loss + c.vf_coef * v_loss
            stats.update(v_stats)
        if self.needs_entropy and out.entropy is not None:
            entropy = entropy_bonus(out.entropy, batch.mask, agg="token_mean", weights=batch.weights, **norm_args)
            loss = loss - c.entropy_coef * entropy
            stats["entropy_loss"] = entropy.detach()
        return loss, stats


class DPOObjective:
    """DPO over a batch whose rows alternate chosen, rejected (pair i = rows 2i and 2i+1)."""

    needs_entropy = False

    def __init__(self, beta: float = 0.1, label_smoothing: float = 0.0) -> None:
        self.beta = beta
        self.label_smoothing = label_smoothing

    def __call__(self, out: Forward, batch: TokenBatch, norms: Norms) -> tuple[Tensor, dict[str, Tensor]]:
        if batch.ref_logprobs is None:
            raise ValueError("DPO needs reference log-probs in the batch")
        if batch.size % 2:
            raise ValueError("DPO micro-batches must hold whole (chosen, rejected) pairs")
        policy = sequence_logprob(out.logp, batch.mask)
        reference = sequence_logprob(batch.ref_logprobs, batch.mask)
        return dpo_loss(
            policy[0::2],
            policy[1::2],
            reference[0::2],
            reference[1::2],
            beta=self.beta,
            label_smoothing=self.label_smoothing,
            num_pairs=norms.num_sequences // 2,
        )
