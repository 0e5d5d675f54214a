"""Policy-gradient surrogates: a registry of per-token losses, and `policy_loss` that aggregates one.

Every surrogate has one signature, so a recipe names it (`loss.policy_loss`) and the objective never
branches on it::

    fn(logp, old_logp, advantages, mask, *, eps_low, eps_high) -> (per_token_loss, is_clipped, ratio)

all [B, T]: the loss per token (before aggregation), where clipping removed the gradient, and the
importance ratio each token's loss used (its masked mean is reported as ``ratio_mean``).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from selfimprove.algos.losses import AggMode, KLKind, _check_same_shape, aggregate, kl_estimate, masked_mean
from selfimprove.registry import Registry

__all__ = ["POLICY_LOSSES", "PolicyLossFn", "clipped_pg_per_token", "gspo_per_token", "policy_loss"]

PolicyLossFn = Callable[..., tuple[Tensor, Tensor, Tensor]]
POLICY_LOSSES: Registry[PolicyLossFn] = Registry("policy loss")


def clipped_pg_per_token(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
) -> tuple[Tensor, Tensor]:
    """PPO clipped surrogate per token: -min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A).

    ``eps_high > eps_low`` is DAPO's clip-higher. Returns the per-token loss and a bool tensor of the
    tokens where clipping is active (rho < 1 - eps_low with A < 0, or rho > 1 + eps_high with A > 0),
    i.e. where the token gets no gradient; its masked mean is the clip fraction.
    ``advantages`` may be [B] (one per sequence) and is then broadcast over tokens.
    """
    if advantages.dim() == logp.dim() - 1:
        advantages = advantages.unsqueeze(-1)
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    with torch.no_grad():
        is_clipped = ((ratio < 1.0 - eps_low) & (advantages < 0)) | (
            (ratio > 1.0 + eps_high) & (advantages > 0)
        )
    return loss, is_clipped


@POLICY_LOSSES.register("clip")
def _clip(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *, eps_low: float, eps_high: float
          ) -> tuple[Tensor, Tensor, Tensor]:
    """PPO / GRPO / DAPO: the token-level clipped surrogate (`clipped_pg_per_token`)."""
    loss, is_clipped = clipped_pg_per_token(logp, old_logp, advantages, eps_low, eps_high)
    return loss, is_clipped, torch.exp(logp - old_logp)


@POLICY_LOSSES.register("gspo")
def gspo_per_token(logp: Tensor, old_logp: Tensor, advantages: Tensor, mask: Tensor, *, eps_low: float,
                   eps_high: float) -> tuple[Tensor, Tensor, Tensor]:
    """GSPO (Zheng et al. 2025): one importance ratio per sequence, the geometric mean of its tokens'
    ratios, s_i = exp(mean_t m_it (logp_it - old_it)), clipped like PPO's: -min(s_i A_it, clip(s_i) A_it)
    on every trainable token of row i. With `seq_mean` aggregation a row contributes exactly its
    sequence-level loss; the gradient reaches every token through s_i. Its clipping ranges are much
    narrower than PPO's (the paper uses 3e-4 / 4e-4), since s_i averages out token noise.
    """
    if advantages.dim() == logp.dim() - 1:
        advantages = advantages.unsqueeze(-1).expand_as(logp)
    m = (mask != 0).to(logp.dtype)
    log_ratio = torch.where(mask != 0, logp - old_logp, torch.zeros((), dtype=logp.dtype, device=logp.device))
    seq = torch.exp(log_ratio.sum(-1) / m.sum(-1).clamp(min=1.0))  # [B]
    ratio = seq.unsqueeze(-1).expand_as(logp)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages
    loss = -torch.minimum(unclipped, clipped)
    with torch.no_grad():
        is_clipped = ((ratio < 1.0 - eps_low) & (advantages < 0)) | ((ratio > 1.0 + eps_high) & (advantages > 0))
    return loss, is_clipped, ratio


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    ref_logp: Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: KLKind = "k3",
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    kind: str = "clip",
    agg: AggMode = "seq_mean",
    weights: Tensor | None = None,
    kl_weights: Tensor | None = None,
    pg_weights: Tensor | None = None,
    num_sequences: int | None = None,
    num_tokens: float | None = None,
    max_len: int | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """A registered surrogate (`kind`: "clip", "gspo") plus an optional KL penalty to a reference,
    aggregated over the batch.

    Per-token loss = weights * (pg_weights * pg + kl_coef * kl_weights * kl); the KL term is added only
    when ``ref_logp`` is given and ``kl_coef > 0``. ``kl_weights`` lets a method weight the KL per token
    (e.g. SCoRe's strong KL on turn 1), ``weights`` scales the whole token loss, ``pg_weights`` the
    policy-gradient term only (rollout correction's importance weights, `algos/rollout_correction.py`).

    Stats (detached scalars): ``pg_loss`` is the weighted pg part aggregated with the same
    normalisers (so it sums over micro-batches like the loss); ``kl`` (unweighted estimator; 0 without
    ``ref_logp``), ``clip_frac`` and ``ratio_mean`` are means over this call's trainable tokens.
    """
    if advantages.dim() == logp.dim() - 1:
        advantages = advantages.unsqueeze(-1).expand_as(logp)
    _check_same_shape(logp=logp, old_logp=old_logp, advantages=advantages, mask=mask)
    if weights is None:
        weights = torch.ones_like(logp)
    if kl_weights is None:
        kl_weights = torch.ones_like(logp)
    _check_same_shape(logp=logp, weights=weights, kl_weights=kl_weights)

    surrogate = POLICY_LOSSES.get(kind)
    pg, is_clipped, ratio = surrogate(logp, old_logp, advantages, mask, eps_low=eps_low, eps_high=eps_high)
    if pg_weights is not None:
        _check_same_shape(logp=logp, pg_weights=pg_weights)
        pg = pg_weights.detach() * pg
    norms = dict(num_sequences=num_sequences, num_tokens=num_tokens, max_len=max_len)
    per_token = pg
    kl: Tensor | None = None
    if ref_logp is not None:
        _check_same_shape(logp=logp, ref_logp=ref_logp)
        kl = kl_estimate(logp, ref_logp, kl_estimator)
        if kl_coef > 0:
            per_token = pg + kl_coef * kl_weights * kl
    loss = aggregate(weights * per_token, mask, agg, **norms)

    with torch.no_grad():
        zero = torch.zeros((), dtype=logp.dtype, device=logp.device)
        stats = {
            "pg_loss": aggregate((weights * pg).detach(), mask, agg, **norms),
            "kl": masked_mean(kl.detach(), mask) if kl is not None else zero,
            "clip_frac": masked_mean(is_clipped.to(logp.dtype), mask),
            "ratio_mean": masked_mean(ratio.detach(), mask),
        }
    return loss, stats


