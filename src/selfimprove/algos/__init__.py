"""Advantage estimators and losses: pure tensor functions, importable without a model or a task."""

from selfimprove.algos.advantages import ADVANTAGES, AdvantageFn, dr_grpo, group_mean_std, grpo, rloo
from selfimprove.algos.losses import (
    AggMode,
    KLKind,
    aggregate,
    clipped_pg_per_token,
    kl_estimate,
    policy_loss,
    sft_loss,
    token_entropy,
    token_logprobs,
)

__all__ = [
    "ADVANTAGES",
    "AdvantageFn",
    "AggMode",
    "KLKind",
    "aggregate",
    "clipped_pg_per_token",
    "dr_grpo",
    "group_mean_std",
    "grpo",
    "kl_estimate",
    "policy_loss",
    "rloo",
    "sft_loss",
    "token_entropy",
    "token_logprobs",
]
