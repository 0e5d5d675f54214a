"""Objectives: adapters from a `TokenBatch` to the pure losses of `algos.losses`."""

from __future__ import annotations

from torch import Tensor

from selfimprove.algos.losses import policy_loss, sft_loss
from selfimprove.config import LossConfig
from selfimprove.rollout.episode import TokenBatch
from selfimprove.train.learner import Norms


def sft_objective(logp: Tensor, batch: TokenBatch, norms: Norms) -> tuple[Tensor, dict[str, Tensor]]:
    """Token cross-entropy on the trainable tokens, averaged over the whole batch's tokens."""
    loss = sft_loss(logp, batch.mask, weights=batch.weights, num_tokens=norms.num_tokens)
    return loss, {}


class PolicyGradientObjective:
    """Clipped policy gradient with an optional KL to the reference (SPECS §1)."""

    def __init__(self, config: LossConfig, *, max_len: int | None = None) -> None:
        self.config = config
        self.max_len = max_len  # Dr.GRPO's constant divisor: the generation budget


    def __call__(self, logp: Tensor, batch: TokenBatch, norms: Norms) -> tuple[Tensor, dict[str, Tensor]]:
        if batch.advantages is None:
            raise ValueError("the batch has no advantages: run an estimator first")
        c = self.config
        # One update per rollout batch is exactly on-policy: the ratio is 1 and only its gradient matters.
        old_logp = logp.detach() if c.epochs == 1 else batch.old_logprobs
        return policy_loss(
            logp,
            old_logp,
            batch.advantages,
            batch.mask,
            ref_logp=batch.ref_logprobs if c.kl_coef > 0 else None,
            kl_coef=c.kl_coef,
            kl_estimator=c.kl_estimator,
            eps_low=c.eps_low,
            eps_high=c.eps_high,
            agg=c.aggregation,
            weights=batch.weights,
            kl_weights=batch.kl_weights,
            num_sequences=norms.num_sequences,
            num_tokens=norms.num_tokens,
            max_len=self.max_len or norms.max_len,
        )
