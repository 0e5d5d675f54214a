"""Advantage estimators: a registry of pure tensor functions from episode rewards to per-token
advantages and returns.

Every registered estimator takes one `EstimatorInputs` and returns an `Estimate` (advantages, returns),
and declares what it needs, so the training loop never branches on an estimator's name:
- `needs_critic`: it reads a value function's `values` (GAE); a recipe without a critic is refused;
- `token_level`: it takes the per-token KL itself (`kl`, `kl_coef`), so "KL in the reward" goes into
  its per-token rewards; for the other estimators the shared `prepare` folds the KL into the episode
  rewards first (`fold_kl_into_rewards`);
- `per_turn`: it reads each turn's own reward and tokens (`turn_rewards`, `turn_masks`), e.g. SCoRe's
  two attempts.

`returns` are what a value function would regress on: GAE's advantages + values, REINFORCE++'s
unwhitened per-token sums, and for the sequence-level estimators each episode's (or turn's) reward on
its trainable tokens.

The group estimators below (``grpo``, ``dr_grpo``, ``rloo``) give every trainable token of an episode
the same value. ``groups`` holds one id per episode; episodes of the same prompt share it. Ids may be
any integers (not necessarily 0..G-1) and members of a group need not be adjacent. Results hold
advantages on trainable tokens (``mask != 0``) and 0 elsewhere; statistics run in float64 (see
`algos/groups.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from selfimprove.algos.groups import broadcast_on_mask, group_mean_std, group_stats
from selfimprove.algos.token_advantages import gae, reinforce_pp, reinforce_pp_baseline
from selfimprove.registry import Registry

__all__ = [
    "ADVANTAGES",
    "Estimate",
    "Estimator",
    "EstimatorInputs",
    "dr_grpo",
    "group_mean_std",
    "grpo",
    "register_estimator",
    "rloo",
    "rloo_turns",
]


@dataclass(frozen=True)
class EstimatorInputs:
    """Everything an estimator may read; each reads only what it declares."""

    rewards: Tensor  # [B] each episode's reward (its outcome segment's)
    groups: Tensor  # [B] long: episodes of one prompt share an id
    mask: Tensor  # [B, T] trainable target tokens
    values: Tensor | None = None  # [B, T] a critic's values (needs_critic)
    kl: Tensor | None = None  # [B, T] per-token KL of the sampled tokens, for KL in the reward
    kl_coef: float = 0.0
    gamma: float = 1.0
    lam: float = 0.95
    eps: float = 1e-6
    scale: str = "group"  # GRPO's std scaling: group, batch or none (TRL's scale_rewards)
    turn_rewards: Tensor | None = None  # [B, K] the reward of each turn (trainable rewarded segment)
    turn_masks: Tensor | None = None  # [B, K, T] the target tokens of each turn
    # [B, T] where each reward is paid (a conversation's turns at their last tokens), for token-level
    # estimators; None: each episode's reward at its last trainable token
    paid: Tensor | None = None


@dataclass(frozen=True)
class Estimate:
    advantages: Tensor  # [B, T]
    returns: Tensor  # [B, T]


@dataclass(frozen=True)
class Estimator:
    """A registered estimator: its function and what it needs."""

    fn: Callable[[EstimatorInputs], Estimate]
    needs_critic: bool = False
    token_level: bool = False
    per_turn: bool = False

    def __call__(self, inputs: EstimatorInputs) -> Estimate:
        if self.needs_critic and inputs.values is None:
            raise ValueError("this estimator needs values=[B, T] from a critic (value head)")
        if self.per_turn and (inputs.turn_rewards is None or inputs.turn_masks is None):
            raise ValueError("this estimator needs turn_rewards=[B, K] and turn_masks=[B, K, T]")
        return self.fn(inputs)


ADVANTAGES: Registry[Estimator] = Registry("advantage estimator")


# ------------------------------------------------------------------------------ group estimators
def grpo(rewards: Tensor, groups: Tensor, mask: Tensor, *, eps: float = 1e-6, scale: str = "group") -> Tensor:
    """GRPO: A_i = (r_i - mean_g r) / (std + eps) on every trainable token of episode i.

    `scale` is TRL's `scale_rewards`: `group` divides by the group's std (GRPO), `batch` by the std of
    all the batch's rewards (robust when a group's std is tiny), `none` not at all (Dr.GRPO's
    numerator). std is the unbiased (n - 1) estimate, matching TRL's ``torch.std``; TRL's eps is 1e-4
    (`loss.std_eps`). A group whose rewards are all equal, and a group of one episode, carries no
    signal and gets advantage 0.
    """
    mean, std, _ = group_stats(rewards, groups, unbiased=True)
    centred = rewards.to(mean.dtype) - mean
    if scale == "group":
        centred = centred / (std + eps)
    elif scale == "batch":
        batch_std = rewards.to(mean.dtype).std() if rewards.numel() > 1 else torch.zeros((), dtype=mean.dtype)
        centred = centred / (batch_std + eps)
    elif scale != "none":
        raise ValueError(f"scale must be group, batch or none, got {scale!r}")
    return broadcast_on_mask(centred, rewards, mask)


def dr_grpo(rewards: Tensor, groups: Tensor, mask: Tensor) -> Tensor:
    """Dr.GRPO: A_i = r_i - mean_g r, without the std division that biases towards easy/hard prompts."""
    mean, _, _ = group_stats(rewards, groups)
    return broadcast_on_mask(rewards.to(mean.dtype) - mean, rewards, mask)


def rloo(rewards: Tensor, groups: Tensor, mask: Tensor) -> Tensor:
    """RLOO: A_i = r_i - mean_{j != i} r_j, a baseline that does not depend on the episode itself.

    Equals n/(n-1) * (r_i - mean_g r). A group of one has no other episode and gets advantage 0.
    """
    mean, _, counts = group_stats(rewards, groups)
    scale = torch.where(counts > 1, counts / (counts - 1.0).clamp(min=1.0), torch.zeros_like(counts))
    return broadcast_on_mask(scale * (rewards.to(mean.dtype) - mean), rewards, mask)


def rloo_turns(turn_rewards: Tensor, groups: Tensor, turn_masks: Tensor) -> Tensor:
    """RLOO per turn (SCoRe, SPECS §2): turn k's reward gets a leave-one-out baseline over the same turn
    of the group's other episodes, placed on turn k's tokens only; the turns' advantages add up.

    ``turn_rewards`` [B, K], ``turn_masks`` [B, K, T]; an episode with fewer turns has a zero mask
    (and reward) for the missing ones.
    """
    if turn_rewards.dim() != 2 or turn_masks.dim() != 3 or turn_masks.shape[:2] != turn_rewards.shape:
        raise ValueError(
            f"turn_rewards must be [B, K] and turn_masks [B, K, T], got {tuple(turn_rewards.shape)} "
            f"and {tuple(turn_masks.shape)}"
        )
    out = torch.zeros(turn_masks.shape[0], turn_masks.shape[2], device=turn_masks.device)
    for k in range(turn_rewards.shape[1]):
        out = out + rloo(turn_rewards[:, k], groups, turn_masks[:, k])
    return out


# ------------------------------------------------------------------------------ the registry
def _outcome_returns(x: EstimatorInputs) -> Tensor:
    return broadcast_on_mask(x.rewards, x.rewards, x.mask)


def register_estimator(
    name: str, *, needs_critic: bool = False, token_level: bool = False, per_turn: bool = False
) -> Callable[[Callable[[EstimatorInputs], Estimate]], Estimator]:
    """Decorator: register `fn(inputs) -> Estimate` under `name`, with what it needs declared here."""

    def wrap(fn: Callable[[EstimatorInputs], Estimate]) -> Estimator:
        return ADVANTAGES.register(name)(Estimator(fn, needs_critic=needs_critic, token_level=token_level, per_turn=per_turn))

    return wrap


@register_estimator("grpo")
def _grpo(x: EstimatorInputs) -> Estimate:
    return Estimate(grpo(x.rewards, x.groups, x.mask, eps=x.eps, scale=x.scale), _outcome_returns(x))


@register_estimator("dr_grpo")
def _dr_grpo(x: EstimatorInputs) -> Estimate:
    return Estimate(dr_grpo(x.rewards, x.groups, x.mask), _outcome_returns(x))


@register_estimator("rloo")
def _rloo(x: EstimatorInputs) -> Estimate:
    return Estimate(rloo(x.rewards, x.groups, x.mask), _outcome_returns(x))


@register_estimator("rloo_turns", per_turn=True)
def _rloo_turns(x: EstimatorInputs) -> Estimate:
    assert x.turn_rewards is not None and x.turn_masks is not None
    advantages = rloo_turns(x.turn_rewards, x.groups, x.turn_masks).to(x.mask.dtype)
    returns = (x.turn_rewards.unsqueeze(-1) * x.turn_masks).sum(1).to(x.mask.dtype)
    return Estimate(advantages, returns)


@register_estimator("reinforce_pp", token_level=True)
def _reinforce_pp(x: EstimatorInputs) -> Estimate:
    return Estimate(*reinforce_pp(x.rewards, x.mask, kl=x.kl, kl_coef=x.kl_coef, gamma=x.gamma, eps=x.eps, paid=x.paid))


@register_estimator("reinforce_pp_baseline", token_level=True)
def _reinforce_pp_baseline(x: EstimatorInputs) -> Estimate:
    return Estimate(*reinforce_pp_baseline(x.rewards, x.groups, x.mask, kl=x.kl, kl_coef=x.kl_coef,
                                           gamma=x.gamma, eps=x.eps, paid=x.paid))


@register_estimator("gae", needs_critic=True, token_level=True)
def _gae(x: EstimatorInputs) -> Estimate:
    assert x.values is not None
    return Estimate(*gae(x.rewards, x.mask, x.values, kl=x.kl, kl_coef=x.kl_coef, gamma=x.gamma, lam=x.lam,
                         eps=x.eps, paid=x.paid))
