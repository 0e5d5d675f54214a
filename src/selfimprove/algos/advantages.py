"""Advantage estimators: pure tensor functions from episode rewards to per-token advantages.

Every outcome-reward estimator has the same signature, so a recipe can name one and the learner never
needs to know which it got::

    fn(rewards: Tensor[B] float, groups: Tensor[B] long, mask: Tensor[B, T], *, eps=1e-6, **kwargs)
        -> Tensor[B, T]

``groups`` holds one id per episode; episodes of the same prompt share it. Ids may be any integers
(not necessarily 0..G-1) and members of a group need not be adjacent. The result holds the episode's
advantage on each of its trainable tokens (``mask != 0``) and 0 elsewhere.

Group statistics are computed in float64 (where the device supports it) so that a group of equal
rewards gets an advantage that is zero to within ~1e-11 rather than float32 rounding noise divided by
``eps``.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from selfimprove.registry import Registry

__all__ = [
    "ADVANTAGES",
    "AdvantageFn",
    "dr_grpo",
    "group_mean_std",
    "grpo",
    "rloo",
]


class AdvantageFn(Protocol):
    """Outcome-reward estimator: episode rewards + group ids + token mask -> per-token advantages."""

    def __call__(
        self, rewards: Tensor, groups: Tensor, mask: Tensor, *, eps: float = 1e-6, **kwargs: Any
    ) -> Tensor: ...


ADVANTAGES: Registry[AdvantageFn] = Registry("advantage estimator")


def _work_dtype(device: torch.device) -> torch.dtype:
    # MPS has no float64; everywhere else the extra precision is free at these sizes (B elements).
    return torch.float32 if device.type == "mps" else torch.float64


def _out_dtype(rewards: Tensor) -> torch.dtype:
    return rewards.dtype if rewards.dtype in (torch.float32, torch.float64) else torch.float32


def _group_stats(
    values: Tensor, groups: Tensor, *, unbiased: bool = True
) -> tuple[Tensor, Tensor, Tensor]:
    """Per-element (group mean, group std, group size), with scatter ops instead of Python loops."""
    if values.dim() != 1 or groups.dim() != 1 or values.shape != groups.shape:
        raise ValueError(
            f"values and groups must be 1-D of the same length, got {tuple(values.shape)} "
            f"and {tuple(groups.shape)}"
        )
    if groups.dtype.is_floating_point or groups.dtype == torch.bool:
        raise ValueError(f"groups must be an integer tensor, got {groups.dtype}")
    work = values.to(_work_dtype(values.device))
    _, inverse = torch.unique(groups, return_inverse=True)
    num_groups = int(inverse.max().item()) + 1 if inverse.numel() else 0
    counts = torch.zeros(num_groups, dtype=work.dtype, device=work.device).index_add_(
        0, inverse, torch.ones_like(work)
    )
    sums = torch.zeros_like(counts).index_add_(0, inverse, work)
    mean = (sums / counts)[inverse]
    sq_dev = torch.zeros_like(counts).index_add_(0, inverse, (work - mean) ** 2)
    denom = (counts - 1.0).clamp(min=1.0) if unbiased else counts
    # A group of one has no spread: std 0 (torch.std would give nan for the unbiased estimate).
    std = torch.where(counts > 1, (sq_dev / denom).sqrt(), torch.zeros_like(counts))[inverse]
    return mean, std, counts[inverse]


def group_mean_std(values: Tensor, groups: Tensor, *, unbiased: bool = True) -> tuple[Tensor, Tensor]:
    """Mean and std of ``values`` over each element's group, broadcast back to every element.

    ``unbiased=True`` (default) divides by n - 1 like ``torch.std`` and TRL's GRPO; groups of one
    element get std 0. Computed in float64 and returned in that working precision.
    """
    mean, std, _ = _group_stats(values, groups, unbiased=unbiased)
    return mean, std


def _check_and_broadcast(adv: Tensor, rewards: Tensor, mask: Tensor) -> Tensor:
    if mask.dim() != 2 or mask.shape[0] != rewards.shape[0]:
        raise ValueError(
            f"mask must be [B, T] with B = len(rewards) = {rewards.shape[0]}, got {tuple(mask.shape)}"
        )
    dtype = _out_dtype(rewards)
    return adv.to(dtype).unsqueeze(-1) * (mask != 0).to(dtype)


@ADVANTAGES.register("grpo")
def grpo(
    rewards: Tensor, groups: Tensor, mask: Tensor, *, eps: float = 1e-6, **kwargs: Any
) -> Tensor:
    """GRPO: A_i = (r_i - mean_g r) / (std_g r + eps) on every trainable token of episode i.

    std is the unbiased (n - 1) estimate, matching TRL's ``torch.std``. A group whose rewards are all
    equal, and a group of one episode, carries no signal and gets advantage 0.
    """
    mean, std, _ = _group_stats(rewards, groups, unbiased=True)
    adv = (rewards.to(mean.dtype) - mean) / (std + eps)
    return _check_and_broadcast(adv, rewards, mask)


@ADVANTAGES.register("dr_grpo")
def dr_grpo(
    rewards: Tensor, groups: Tensor, mask: Tensor, *, eps: float = 1e-6, **kwargs: Any
) -> Tensor:
    """Dr.GRPO: A_i = r_i - mean_g r, without the std division that biases towards easy/hard prompts.

    ``eps`` is accepted for the common signature and unused.
    """
    mean, _, _ = _group_stats(rewards, groups)
    adv = rewards.to(mean.dtype) - mean
    return _check_and_broadcast(adv, rewards, mask)


@ADVANTAGES.register("rloo")
def rloo(
    rewards: Tensor, groups: Tensor, mask: Tensor, *, eps: float = 1e-6, **kwargs: Any
) -> Tensor:
    """RLOO: A_i = r_i - mean_{j != i} r_j, a baseline that does not depend on the episode itself.

    Equals n/(n-1) * (r_i - mean_g r). A group of one has no other episode and gets advantage 0.
    ``eps`` is accepted for the common signature and unused.
    """
    mean, _, counts = _group_stats(rewards, groups)
    scale = torch.where(counts > 1, counts / (counts - 1.0).clamp(min=1.0), torch.zeros_like(counts))
    adv = scale * (rewards.to(mean.dtype) - mean)
    return _check_and_broadcast(adv, rewards, mask)
