"""Rollout correction: importance weights for the gap between the policy that sampled a batch (the
behaviour policy: a stale copy, another process, vLLM, bf16 numerics) and the learner's policy before
the update (the proximal policy).

The ratio r = pi_prox / pi_behav is taken per token (`level: token`) or per sequence (`level: sequence`:
the product over the row's trained tokens, broadcast to them), and becomes a detached weight on each
token's policy-gradient term:

- `tis` (truncated importance sampling, as TRL's and verl's): w = min(r, cap);
- `mis` (masked importance sampling): w = r where r <= cap (and r >= `low` when given, as verl's lower
  threshold), else 0: the token or the whole sequence is dropped from the policy gradient (the KL term
  still applies);
- `none`: w = 1, the correction's diagnostics are still measured.

Diagnostics, over trained tokens whose behaviour log-prob is known: `rollout_kl`, the k3 estimate of
KL(pi_behav || pi_prox) from the sampled tokens (exp(d) - d - 1 with d = log pi_prox - log pi_behav);
`rollout_ratio_max`, the largest ratio at the chosen level; `rollout_masked`, the share of tokens whose
weight was clipped (tis) or masked (mis).

With top_p < 1 the sampler's policy is the nucleus distribution and the learner's the full one, so the
ratio also holds the nucleus' mass (at most 1): the gap is real (tokens outside the nucleus are never
sampled) and a correction weights it; RL recipes here sample with top_p 1. Tokens without a behaviour log-prob (demonstrations) keep
weight 1 and are left out of the diagnostics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from selfimprove.algos.losses import kl_estimate

__all__ = ["CorrectionKind", "CorrectionLevel", "RolloutCorrection", "rollout_correction"]

CorrectionKind = Literal["none", "tis", "mis"]
CorrectionLevel = Literal["token", "sequence"]
MAX_LOG_RATIO = 50.0  # exp(50) ~ 5e21: finite, far past any cap


@dataclass(frozen=True)
class RolloutCorrection:
    weights: Tensor  # [B, T] detached per-token weights of the policy-gradient term
    stats: dict[str, Tensor]  # rollout_kl, rollout_ratio_max, rollout_masked (scalars)


def rollout_correction(
    proximal: Tensor,
    behaviour: Tensor,
    known: Tensor,
    mask: Tensor,
    *,
    kind: CorrectionKind = "none",
    level: CorrectionLevel = "token",
    cap: float = 2.0,
    low: float | None = None,
) -> RolloutCorrection:
    """Weights and diagnostics for one batch (see the module docstring); all tensors [B, T], `known` 1
    where the behaviour log-prob of the target token was recorded, `mask` 1 on trained tokens."""
    if cap <= 0:
        raise ValueError(f"rollout correction cap must be > 0, got {cap}")
    with torch.no_grad():
        valid = (known != 0) & (mask != 0)
        zero = torch.zeros((), dtype=proximal.dtype, device=proximal.device)
        log_ratio = torch.where(valid, proximal.detach() - behaviour, zero)
        if level == "sequence":
            log_ratio = torch.where(valid, log_ratio.sum(-1, keepdim=True).expand_as(log_ratio), zero)
        elif level != "token":
            raise ValueError(f"unknown rollout correction level {level!r} (known: token, sequence)")
        ratio = torch.exp(log_ratio.clamp(max=MAX_LOG_RATIO))
        over = valid & (ratio > cap)
        if kind == "mis" and low is not None:
            over = over | (valid & (ratio < low))
        if kind == "none":
            weights = torch.ones_like(ratio)
        elif kind == "tis":
            weights = torch.where(valid, ratio.clamp(max=cap), torch.ones_like(ratio))
        elif kind == "mis":
            weights = torch.where(valid, torch.where(over, zero, ratio), torch.ones_like(ratio))
        else:
            raise ValueError(f"unknown rollout correction {kind!r} (known: none, tis, mis)")
        count = valid.sum().clamp(min=1).to(proximal.dtype)
        k3 = kl_estimate(behaviour, proximal.detach(), "k3")
        stats = {
            "rollout_kl": torch.where(valid, k3, zero).sum() / count,
            "rollout_ratio_max": torch.where(valid, ratio, zero).max() if bool(valid.any()) else zero + 1.0,
            "rollout_masked": (over.sum().to(proximal.dtype) / count) if kind != "none" else zero,
        }
    return RolloutCorrection(weights, stats)
