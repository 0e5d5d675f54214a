"""Advantage estimators and losses: pure tensor functions, importable without a model or a task."""

from selfimprove.algos.advantages import ADVANTAGES, Estimate, Estimator, EstimatorInputs, dr_grpo, group_mean_std, grpo, rloo, rloo_turns
from selfimprove.algos.losses import (
    AggMode,
    KLKind,
    aggregate,
    dpo_loss,
    entropy_bonus,
    kl_estimate,
    masked_mean,
    sequence_logprob,
    sft_loss,
    value_loss,
)
from selfimprove.algos.policy_losses import POLICY_LOSSES, clipped_pg_per_token, gspo_per_token, policy_loss
from selfimprove.algos.shaping import overlong_penalty
from selfimprove.algos.token_advantages import (
    fold_kl_into_rewards,
    gae,
    gae_advantages,
    last_token_mask,
    masked_whiten,
    reinforce_pp,
    reinforce_pp_baseline,
    token_rewards,
)

__all__ = [
    "ADVANTAGES",
    "AggMode",
    "Estimate",
    "Estimator",
    "EstimatorInputs",
    "KLKind",
    "POLICY_LOSSES",
    "aggregate",
    "clipped_pg_per_token",
    "dpo_loss",
    "dr_grpo",
    "entropy_bonus",
    "fold_kl_into_rewards",
    "gae",
    "gae_advantages",
    "group_mean_std",
    "grpo",
    "gspo_per_token",
    "kl_estimate",
    "last_token_mask",
    "masked_mean",
    "masked_whiten",
    "overlong_penalty",
    "policy_loss",
    "reinforce_pp",
    "reinforce_pp_baseline",
    "rloo",
    "rloo_turns",
    "sequence_logprob",
    "sft_loss",
    "token_rewards",
    "value_loss",
]
