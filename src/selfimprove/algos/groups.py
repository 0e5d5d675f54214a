"""Group statistics and dtype rules shared by the advantage estimators.

Statistics are computed in float64 (where the device supports it) so that a group of equal rewards
gets an advantage that is zero to within ~1e-11 rather than float32 rounding noise divided by ``eps``.
Results come back in the rewards' float dtype (float32 for integer or bool rewards).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["broadcast_on_mask", "group_mean_std", "group_stats", "out_dtype", "work_dtype"]


def work_dtype(device: torch.device) -> torch.dtype:
    # MPS has no float64; everywhere else the extra precision is free at these sizes (B elements).
    return torch.float32 if device.type == "mps" else torch.float64


def out_dtype(rewards: Tensor) -> torch.dtype:
    return rewards.dtype if rewards.dtype in (torch.float32, torch.float64) else torch.float32


def group_stats(values: Tensor, groups: Tensor, *, unbiased: bool = True) -> tuple[Tensor, Tensor, Tensor]:
    """Per-element (group mean, group std, group size), with scatter ops instead of Python loops."""
    if values.dim() != 1 or groups.dim() != 1 or values.shape != groups.shape:
        raise ValueError(
            f"values and groups must be 1-D of the same length, got {tuple(values.shape)} "
            f"and {tuple(groups.shape)}"
        )
    if groups.dtype.is_floating_point or groups.dtype == torch.bool:
        raise ValueError(f"groups must be an integer tensor, got {groups.dtype}")
    work = values.to(work_dtype(values.device))
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
    mean, std, _ = group_stats(values, groups, unbiased=unbiased)
    return mean, std


def broadcast_on_mask(per_row: Tensor, rewards: Tensor, mask: Tensor) -> Tensor:
    """A per-episode value [B] on every trainable token of its row [B, T] (0 elsewhere), in the
    rewards' output dtype."""
    if mask.dim() != 2 or mask.shape[0] != rewards.shape[0]:
        raise ValueError(
            f"mask must be [B, T] with B = len(rewards) = {rewards.shape[0]}, got {tuple(mask.shape)}"
        )
    dtype = out_dtype(rewards)
    return per_row.to(dtype).unsqueeze(-1) * (mask != 0).to(dtype)
