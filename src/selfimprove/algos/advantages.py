"""Advantage estimators: pure tensor functions from episode rewards to per-token advantages.

Every estimator has the same signature, so a recipe can name one and the learner never needs to know
which it got::

    fn(rewards: Tensor[B] float, groups: Tensor[B] long, mask: Tensor[B, T], *,
       values: Tensor[B, T] | None = None, kl: Tensor[B, T] | None = None, kl_coef: float = 0.0,
       gamma: float = 1.0, lam: float = 0.95, eps: float = 1e-6, **kwargs) -> Tensor[B, T]

Keyword arguments an estimator does not use are accepted and ignored. ``groups`` holds one id per
episode; episodes of the same prompt share it. Ids may be any integers (not necessarily 0..G-1) and
members of a group need not be adjacent. The result holds advantages on trainable tokens
(``mask != 0``) and 0 elsewhere. Sequence-level estimators (``grpo``, ``dr_grpo``, ``rloo``) give every
trainable token of an episode the same value; token-level ones (``reinforce_pp``,
``reinforce_pp_baseline``, ``gae``) build per-token rewards (``token_rewards``: -kl_coef * kl on each
trainable token plus R on the row's last trainable token) and whiten over the whole batch.

Statistics are computed in float64 (where the device supports it) so that a group of equal rewards
gets an advantage that is zero to within ~1e-11 rather than float32 rounding noise divided by ``eps``.
Results come back in the rewards' float dtype (float32 for integer or bool rewards).
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
    "fold_kl_into_rewards",
    "gae",
    "gae_advantages",
    "group_mean_std",
    "grpo",
    "last_token_mask",
    "masked_whiten",
    "reinforce_pp",
    "reinforce_pp_baseline",
    "rloo",
    "token_rewards",
]


class AdvantageFn(Protocol):
    """Estimator: episode rewards + group ids + token mask (+ optional values, KL) -> advantages."""

    def __call__(
        self,
        rewards: Tensor,
        groups: Tensor,
        mask: Tensor,
        *,
        values: Tensor | None = None,
        kl: Tensor | None = None,
        kl_coef: float = 0.0,
        gamma: float = 1.0,
        lam: float = 0.95,
        eps: float = 1e-6,
        **kwargs: Any,
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
    rewards: Tensor,
    groups: Tensor,
    mask: Tensor,
    *,
    eps: float = 1e-6,
    **unused: Any,
) -> Tensor:
    """GRPO: A_i = (r_i - mean_g r) / (std_g r + eps) on every trainable token of episode i.

    std is the unbiased (n - 1) estimate, matching TRL's ``torch.std``. A group whose rewards are all
    equal, and a group of one episode, carries no signal and gets advantage 0. The token-level keywords
    of the common signature are ignored (to penalise KL at the sequence level, fold it into the rewards
    first with ``fold_kl_into_rewards``).
    """
    mean, std, _ = _group_stats(rewards, groups, unbiased=True)
    adv = (rewards.to(mean.dtype) - mean) / (std + eps)
    return _check_and_broadcast(adv, rewards, mask)


@ADVANTAGES.register("dr_grpo")
def dr_grpo(
    rewards: Tensor,
    groups: Tensor,
    mask: Tensor,
    *,
    eps: float = 1e-6,
    **unused: Any,
) -> Tensor:
    """Dr.GRPO: A_i = r_i - mean_g r, without the std division that biases towards easy/hard prompts.

    The token-level keywords of the common signature are ignored.
    """
    mean, _, _ = _group_stats(rewards, groups)
    adv = rewards.to(mean.dtype) - mean
    return _check_and_broadcast(adv, rewards, mask)


@ADVANTAGES.register("rloo")
def rloo(
    rewards: Tensor,
    groups: Tensor,
    mask: Tensor,
    *,
    eps: float = 1e-6,
    **unused: Any,
) -> Tensor:
    """RLOO: A_i = r_i - mean_{j != i} r_j, a baseline that does not depend on the episode itself.

    Equals n/(n-1) * (r_i - mean_g r). A group of one has no other episode and gets advantage 0.
    The token-level keywords are ignored; SPECS' "KL folded into the reward" is ``rloo(fold_kl_into_rewards(r, kl, mask, kl_coef), groups, mask)``.
    """
    mean, _, counts = _group_stats(rewards, groups)
    scale = torch.where(counts > 1, counts / (counts - 1.0).clamp(min=1.0), torch.zeros_like(counts))
    adv = scale * (rewards.to(mean.dtype) - mean)
    return _check_and_broadcast(adv, rewards, mask)


# --- token-level estimators (REINFORCE++, GAE) and their helpers ---------------------------------


def _check_token_tensor(name: str, x: Tensor, mask: Tensor) -> None:
    if mask.dim() != 2:
        raise ValueError(f"mask must be [B, T], got {tuple(mask.shape)}")
    if x.shape != mask.shape:
        raise ValueError(
            f"{name} must have the mask's shape {tuple(mask.shape)}, got {tuple(x.shape)}"
        )


def _float_dtype(*tensors: Tensor) -> torch.dtype:
    """The promoted floating dtype of the inputs (float32 when none of them is floating)."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    return dtype if dtype.is_floating_point else torch.float32


def _zero_outside(x: Tensor, mask: Tensor) -> Tensor:
    """x on trainable positions and an exact 0 elsewhere, whatever x holds there (inf, nan)."""
    return torch.where(mask != 0, x, torch.zeros((), dtype=x.dtype, device=x.device))


def last_token_mask(mask: Tensor) -> Tensor:
    """1 at each row's last trainable position (where the episode reward is paid), 0 elsewhere.

    Same shape and dtype as ``mask``; rows without trainable tokens are all 0.
    """
    if mask.dim() != 2:
        raise ValueError(f"mask must be [B, T], got {tuple(mask.shape)}")
    trainable = mask != 0
    t = mask.shape[1]
    if t == 0:
        return torch.zeros_like(mask)
    # argmax returns the first maximum; on the flipped row that is the last trainable position.
    last = (t - 1) - trainable.flip(-1).to(torch.uint8).argmax(-1)
    out = torch.zeros_like(trainable)
    out.scatter_(1, last.unsqueeze(-1), True)
    out &= trainable.any(-1, keepdim=True)
    return out.to(mask.dtype)


def token_rewards(
    rewards: Tensor, mask: Tensor, *, kl: Tensor | None = None, kl_coef: float = 0.0
) -> Tensor:
    """Per-token rewards [B, T]: -kl_coef * kl_t on trainable tokens, plus R at the last one.

    This is the reward of REINFORCE++ and of PPO/GAE with a per-token KL penalty (R^3). ``kl`` is
    only read on trainable positions; the result is exactly 0 elsewhere. A row with no trainable
    token drops its reward (there is no token to pay it to).
    """
    if rewards.dim() != 1 or mask.dim() != 2 or mask.shape[0] != rewards.shape[0]:
        raise ValueError(
            f"rewards must be [B] and mask [B, T] with the same B, got {tuple(rewards.shape)} "
            f"and {tuple(mask.shape)}"
        )
    dtype = _float_dtype(rewards) if kl is None else _float_dtype(rewards, kl)
    last = last_token_mask(mask) != 0
    out = torch.where(
        last,
        rewards.to(dtype).unsqueeze(-1).expand(mask.shape),
        torch.zeros((), dtype=dtype, device=rewards.device),
    )
    if kl is not None and kl_coef != 0.0:
        _check_token_tensor("kl", kl, mask)
        out = out - kl_coef * _zero_outside(kl.to(dtype), mask)
    return out


def fold_kl_into_rewards(rewards: Tensor, kl: Tensor, mask: Tensor, kl_coef: float) -> Tensor:
    """r_i - kl_coef * sum_t kl_it m_it: the "KL in the reward" option for sequence-level estimators.

    Lets RLOO/GRPO penalise divergence from the reference through the baseline rather than the loss.
    """
    if rewards.dim() != 1 or mask.dim() != 2 or mask.shape[0] != rewards.shape[0]:
        raise ValueError(
            f"rewards must be [B] and mask [B, T] with the same B, got {tuple(rewards.shape)} "
            f"and {tuple(mask.shape)}"
        )
    _check_token_tensor("kl", kl, mask)
    dtype = _float_dtype(rewards, kl)
    return rewards.to(dtype) - kl_coef * _zero_outside(kl.to(dtype), mask).sum(-1)


def masked_whiten(
    x: Tensor, mask: Tensor, *, shift_mean: bool = True, eps: float = 1e-8
) -> Tensor:
    """Normalise x over all trainable positions of the batch to mean 0 and std 1 (unbiased std).

    Keeps advantage scale independent of reward scale and sequence length. When the std is <= eps
    (all values equal, or a single trainable token) the values are only centred, so noise is never
    blown up. ``shift_mean=False`` keeps the original mean (only rescales), like TRL's whiten.
    Computed in float64 where available; returned in x's float dtype, exactly 0 outside the mask.
    """
    _check_token_tensor("x", x, mask)
    out_dtype = _float_dtype(x)
    work = x.to(_work_dtype(x.device))
    m = (mask != 0).to(work.dtype)
    n = m.sum()
    mean = _zero_outside(work, mask).sum() / n.clamp(min=1.0)
    centred = _zero_outside(work - mean, mask)
    var = (centred**2).sum() / (n - 1.0).clamp(min=1.0)
    std = var.sqrt()
    scaled = torch.where(std > eps, centred / std.clamp(min=eps), centred)
    if not shift_mean:
        scaled = scaled + mean
    return _zero_outside(scaled, mask).to(out_dtype)


def gae_advantages(
    token_rewards: Tensor, values: Tensor, mask: Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over each row's trainable positions, in order.

    delta_t = r_t + gamma V_next - V_t, A_t = delta_t + gamma lam A_next, where "next" is the row's
    next trainable position and V after the last one is 0 (the episode ends there). Non-trainable
    positions are skipped, so a prompt or an untrained segment between two trained ones does not
    break the recurrence. Returns (advantages, returns = advantages + values), unwhitened and exactly
    0 outside the mask, in the inputs' promoted float dtype. Loops over T, vectorised over the batch.
    """
    _check_token_tensor("token_rewards", token_rewards, mask)
    _check_token_tensor("values", values, mask)
    out_dtype = _float_dtype(token_rewards, values)
    work_dtype = _work_dtype(values.device)
    r = _zero_outside(token_rewards.to(work_dtype), mask)
    v = _zero_outside(values.to(work_dtype), mask)
    trainable = mask != 0
    b, t = mask.shape
    adv = torch.zeros((b, t), dtype=work_dtype, device=values.device)
    next_value = torch.zeros(b, dtype=work_dtype, device=values.device)
    next_adv = torch.zeros_like(next_value)
    for i in range(t - 1, -1, -1):
        delta = r[:, i] + gamma * next_value - v[:, i]
        a = delta + gamma * lam * next_adv
        on = trainable[:, i]
        adv[:, i] = torch.where(on, a, torch.zeros_like(a))
        next_value = torch.where(on, v[:, i], next_value)
        next_adv = torch.where(on, a, next_adv)
    returns = _zero_outside(adv + v, mask)
    return adv.to(out_dtype), returns.to(out_dtype)


def _reinforce_pp(
    rewards: Tensor,
    mask: Tensor,
    kl: Tensor | None,
    kl_coef: float,
    gamma: float,
    eps: float,
) -> Tensor:
    work = _work_dtype(rewards.device)
    if kl is not None:
        kl = kl.detach().to(work)
    r_tok = token_rewards(rewards.detach().to(work), mask, kl=kl, kl_coef=kl_coef)
    # The return over trainable tokens is GAE with V = 0 and lambda = 1.
    returns, _ = gae_advantages(r_tok, torch.zeros_like(r_tok), mask, gamma=gamma, lam=1.0)
    return masked_whiten(returns, mask, eps=eps).to(_out_dtype(rewards))


@ADVANTAGES.register("reinforce_pp")
def reinforce_pp(
    rewards: Tensor,
    groups: Tensor,
    mask: Tensor,
    *,
    values: Tensor | None = None,
    kl: Tensor | None = None,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
    lam: float = 0.95,
    eps: float = 1e-6,
    **kwargs: Any,
) -> Tensor:
    """REINFORCE++: A_t = sum_{s>=t} r_s over trainable tokens, whitened over the whole batch.

    r_t = -kl_coef * kl_t, plus R at the row's last trainable token (``token_rewards``). Needs no
    critic and no group; the batch-wide whitening is its baseline. ``gamma`` discounts the sum per
    trainable token (1.0, the default, is the paper's plain sum); std <= ``eps`` only centres.
    ``groups``, ``values`` and ``lam`` are unused.
    """
    if mask.dim() != 2 or rewards.dim() != 1 or mask.shape[0] != rewards.shape[0]:
        raise ValueError(
            f"mask must be [B, T] with B = len(rewards) = {rewards.shape[0]}, got {tuple(mask.shape)}"
        )
    return _reinforce_pp(rewards, mask, kl, kl_coef, gamma, eps)


@ADVANTAGES.register("reinforce_pp_baseline")
def reinforce_pp_baseline(
    rewards: Tensor,
    groups: Tensor,
    mask: Tensor,
    *,
    values: Tensor | None = None,
    kl: Tensor | None = None,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
    lam: float = 0.95,
    eps: float = 1e-6,
    **kwargs: Any,
) -> Tensor:
    """REINFORCE++ with a group baseline: R is replaced by R - mean_g R before the per-token sums.

    Subtracting the group mean removes the prompt's difficulty from the return before the batch
    whitening, as in OpenRLHF's ``reinforce_baseline``. Other arguments as ``reinforce_pp``.
    """
    if mask.dim() != 2 or mask.shape[0] != rewards.shape[0]:
        raise ValueError(
            f"mask must be [B, T] with B = len(rewards) = {rewards.shape[0]}, got {tuple(mask.shape)}"
        )
    mean, _, _ = _group_stats(rewards.detach(), groups)
    centred = rewards.detach().to(mean.dtype) - mean
    return _reinforce_pp(centred, mask, kl, kl_coef, gamma, eps).to(_out_dtype(rewards))


@ADVANTAGES.register("gae")
def gae(
    rewards: Tensor,
    groups: Tensor,
    mask: Tensor,
    *,
    values: Tensor | None = None,
    kl: Tensor | None = None,
    kl_coef: float = 0.0,
    gamma: float = 1.0,
    lam: float = 0.95,
    eps: float = 1e-6,
    **kwargs: Any,
) -> Tensor:
    """PPO's GAE on ``token_rewards`` (-kl_coef * kl per token, R at the last), batch-whitened.

    Needs the critic's ``values`` [B, T] (read on trainable positions only). Returns only the
    whitened advantages; the value-loss targets are ``gae_advantages(...)[1]`` on the same inputs.
    std <= ``eps`` only centres. ``groups`` is unused.
    """
    if values is None:
        raise ValueError("the 'gae' estimator needs values=[B, T] from a critic (value head)")
    if mask.dim() != 2 or rewards.dim() != 1 or mask.shape[0] != rewards.shape[0]:
        raise ValueError(
            f"mask must be [B, T] with B = len(rewards) = {rewards.shape[0]}, got {tuple(mask.shape)}"
        )
    work = _work_dtype(rewards.device)
    if kl is not None:
        kl = kl.detach().to(work)
    r_tok = token_rewards(rewards.detach().to(work), mask, kl=kl, kl_coef=kl_coef)
    adv, _ = gae_advantages(r_tok, values.detach().to(work), mask, gamma=gamma, lam=lam)
    return masked_whiten(adv, mask, eps=eps).to(_out_dtype(rewards))
