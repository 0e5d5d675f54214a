"""Token-level advantage estimators (REINFORCE++, GAE) and their helpers.

Both build per-token rewards (``token_rewards``: -kl_coef * kl on each trainable token plus R on the
row's last trainable token), sum them backwards over the row's trainable tokens (GAE with a critic's
values, or plain discounted returns) and whiten over the whole batch. Each returns (advantages,
returns): the whitened advantages the loss uses and the unwhitened returns a value function regresses
on. Non-trainable positions are skipped, so a prompt or an untrained segment between two trained
ones does not break the recurrence.
"""

from __future__ import annotations

import torch
from torch import Tensor

from selfimprove.algos.groups import group_stats, out_dtype, work_dtype

__all__ = [
    "fold_kl_into_rewards",
    "gae",
    "gae_advantages",
    "last_token_mask",
    "masked_whiten",
    "reinforce_pp",
    "reinforce_pp_baseline",
    "token_rewards",
]


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
    rewards: Tensor, mask: Tensor, *, kl: Tensor | None = None, kl_coef: float = 0.0, paid: Tensor | None = None
) -> Tensor:
    """Per-token rewards [B, T]: -kl_coef * kl_t on trainable tokens, plus R at the last one.

    This is the reward of REINFORCE++ and of PPO/GAE with a per-token KL penalty (R^3). ``kl`` is
    only read on trainable positions; the result is exactly 0 elsewhere. A row with no trainable
    token drops its reward (there is no token to pay it to). ``paid`` [B, T] says where each reward is
    paid instead (a conversation's turns, each at its last token; `rollout.episode.collate`); a row's
    payments sum to its R, and only trainable positions are read.
    """
    if rewards.dim() != 1 or mask.dim() != 2 or mask.shape[0] != rewards.shape[0]:
        raise ValueError(
            f"rewards must be [B] and mask [B, T] with the same B, got {tuple(rewards.shape)} "
            f"and {tuple(mask.shape)}"
        )
    dtype = _float_dtype(rewards) if kl is None else _float_dtype(rewards, kl)
    if paid is not None:
        _check_token_tensor("paid", paid, mask)
        out = _zero_outside(paid.to(dtype), mask)
    else:
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
    result_dtype = _float_dtype(x)
    work = x.to(work_dtype(x.device))
    m = (mask != 0).to(work.dtype)
    n = m.sum()
    mean = _zero_outside(work, mask).sum() / n.clamp(min=1.0)
    centred = _zero_outside(work - mean, mask)
    var = (centred**2).sum() / (n - 1.0).clamp(min=1.0)
    std = var.sqrt()
    scaled = torch.where(std > eps, centred / std.clamp(min=eps), centred)
    if not shift_mean:
        scaled = scaled + mean
    return _zero_outside(scaled, mask).to(result_dtype)


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
    result_dtype = _float_dtype(token_rewards, values)
    work = work_dtype(values.device)
    r = _zero_outside(token_rewards.to(work), mask)
    v = _zero_outside(values.to(work), mask)
    trainable = mask != 0
    b, t = mask.shape
    adv = torch.zeros((b, t), dtype=work, device=values.device)
    next_value = torch.zeros(b, dtype=work, device=values.device)
    next_adv = torch.zeros_like(next_value)
    for i in range(t - 1, -1, -1):
        delta = r[:, i] + gamma * next_value - v[:, i]
        a = delta + gamma * lam * next_adv
        on = trainable[:, i]
        adv[:, i] = torch.where(on, a, torch.zeros_like(a))
        next_value = torch.where(on, v[:, i], next_value)
        next_adv = torch.where(on, a, next_adv)
    returns = _zero_outside(adv + v, mask)
    return adv.to(result_dtype), returns.to(result_dtype)


def _check_rows(rewards: Tensor, mask: Tensor) -> None:
    if mask.dim() != 2 or rewards.dim() != 1 or mask.shape[0] != rewards.shape[0]:
        raise ValueError(
            f"mask must be [B, T] with B = len(rewards) = {rewards.shape[0]}, got {tuple(mask.shape)}"
        )


def _discounted(rewards: Tensor, mask: Tensor, kl: Tensor | None, kl_coef: float, gamma: float,
                eps: float, paid: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(whitened returns, returns) of REINFORCE++: the per-token sums are GAE with V = 0, lambda = 1."""
    work = work_dtype(rewards.device)
    if kl is not None:
        kl = kl.detach().to(work)
    r_tok = token_rewards(rewards.detach().to(work), mask, kl=kl, kl_coef=kl_coef,
                          paid=None if paid is None else paid.detach().to(work))
    returns, _ = gae_advantages(r_tok, torch.zeros_like(r_tok), mask, gamma=gamma, lam=1.0)
    dtype = out_dtype(rewards)
    return masked_whiten(returns, mask, eps=eps).to(dtype), returns.to(dtype)


def reinforce_pp(
    rewards: Tensor, mask: Tensor, *, kl: Tensor | None = None, kl_coef: float = 0.0, gamma: float = 1.0,
    eps: float = 1e-6, paid: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """REINFORCE++: A_t = sum_{s>=t} r_s over trainable tokens, whitened over the whole batch.

    r_t = -kl_coef * kl_t, plus R at the row's last trainable token (``token_rewards``). Needs no
    critic and no group; the batch-wide whitening is its baseline. ``gamma`` discounts the sum per
    trainable token (1.0, the default, is the paper's plain sum); std <= ``eps`` only centres.
    Returns (advantages, unwhitened returns). ``paid`` places the rewards per turn (``token_rewards``).
    """
    _check_rows(rewards, mask)
    return _discounted(rewards, mask, kl, kl_coef, gamma, eps, paid)


def reinforce_pp_baseline(
    rewards: Tensor, groups: Tensor, mask: Tensor, *, kl: Tensor | None = None, kl_coef: float = 0.0,
    gamma: float = 1.0, eps: float = 1e-6, paid: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """REINFORCE++ with a group baseline: R is replaced by R - mean_g R before the per-token sums.

    Subtracting the group mean removes the prompt's difficulty from the return before the batch
    whitening, as in OpenRLHF's ``reinforce_baseline``. With ``paid`` (rewards per turn) the mean is
    taken off at the last token, so each row's payments still sum to R - mean_g R. Other arguments as
    ``reinforce_pp``.
    """
    _check_rows(rewards, mask)
    mean, _, _ = group_stats(rewards.detach(), groups)
    centred = rewards.detach().to(mean.dtype) - mean
    if paid is not None:
        paid = paid.detach().to(mean.dtype) - mean.unsqueeze(-1) * last_token_mask(mask).to(mean.dtype)
    advantages, returns = _discounted(centred, mask, kl, kl_coef, gamma, eps, paid)
    dtype = out_dtype(rewards)
    return advantages.to(dtype), returns.to(dtype)


def gae(
    rewards: Tensor, mask: Tensor, values: Tensor, *, kl: Tensor | None = None, kl_coef: float = 0.0,
    gamma: float = 1.0, lam: float = 0.95, eps: float = 1e-6, paid: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """PPO's GAE on ``token_rewards`` (-kl_coef * kl per token, R at the last), batch-whitened.

    ``values`` [B, T] are the critic's (read on trainable positions only). Returns (whitened
    advantages, returns = unwhitened advantages + values: the value loss's targets). std <= ``eps``
    only centres. ``paid`` places the rewards per turn (``token_rewards``).
    """
    if values is None:
        raise ValueError("the 'gae' estimator needs values=[B, T] from a critic (value head)")
    _check_rows(rewards, mask)
    work = work_dtype(rewards.device)
    if kl is not None:
        kl = kl.detach().to(work)
    r_tok = token_rewards(rewards.detach().to(work), mask, kl=kl, kl_coef=kl_coef,
                          paid=None if paid is None else paid.detach().to(work))
    adv, returns = gae_advantages(r_tok, values.detach().to(work), mask, gamma=gamma, lam=lam)
    dtype = out_dtype(rewards)
    return masked_whiten(adv, mask, eps=eps).to(dtype), returns.to(dtype)
