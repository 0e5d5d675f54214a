"""Losses: pure functions on per-token tensors [B, T] with a mask [B, T] (1 = trainable token).

The policy-gradient surrogates have their own registry (`algos/policy_losses.py`); reward shaping is in
`algos/shaping.py`; per-token log-probabilities come from the engine (`policy/logprobs.py`).

Gradient accumulation: the learner splits a batch into micro-batches and sums their losses. For that
sum to equal the full-batch loss exactly, the normalisers (number of sequences, number of trainable
tokens, maximum length) must be those of the whole batch, and are passed in. When they are left as
``None`` each call uses its own batch's, which is right when the call sees the whole batch.

Masked-out positions are removed with ``torch.where`` before any multiplication, so padding whose
per-token value is inf or nan cannot poison the loss value. Keep the inputs finite at padding anyway:
a gradient flowing back through a non-finite value is nan even where it is multiplied by 0.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "AggMode",
    "KLKind",
    "aggregate",
    "dpo_loss",
    "entropy_bonus",
    "kl_estimate",
    "masked_mean",
    "sequence_logprob",
    "sft_loss",
    "value_loss",
]

KLKind = Literal["k1", "k2", "k3"]
AggMode = Literal["seq_mean", "token_mean", "dr_grpo"]


def _masked(values: Tensor, mask: Tensor) -> Tensor:
    """values * mask, with masked positions set to an exact 0 whatever ``values`` holds there."""
    m = mask.to(values.dtype)
    return torch.where(mask != 0, values * m, torch.zeros((), dtype=values.dtype, device=values.device))


def _check_same_shape(**tensors: Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shapes must match: {shapes}")


def kl_estimate(logp: Tensor, ref_logp: Tensor, kind: KLKind = "k3") -> Tensor:
    """Per-token estimate of KL(pi || ref) from log-probs of the sampled tokens (Schulman's k1/k2/k3).

    k1 = logp - ref_logp (unbiased, can be negative); k2 = 0.5 (logp - ref_logp)^2;
    k3 = exp(ref_logp - logp) - (ref_logp - logp) - 1 (unbiased and always >= 0; GRPO's default),
    computed as expm1(d) - d so it stays exactly >= 0 and accurate for small d.
    """
    if kind == "k1":
        return logp - ref_logp
    if kind == "k2":
        return 0.5 * (logp - ref_logp) ** 2
    if kind == "k3":
        d = ref_logp - logp
        return torch.expm1(d) - d
    raise ValueError(f"unknown KL estimator {kind!r} (known: k1, k2, k3)")


def aggregate(
    per_token: Tensor,
    mask: Tensor,
    mode: AggMode = "seq_mean",
    *,
    num_sequences: int | None = None,
    num_tokens: float | None = None,
    max_len: int | None = None,
) -> Tensor:
    """Reduce a per-token loss [B, T] to a scalar over trainable tokens.

    - ``seq_mean`` (GRPO): sum_i (sum_t l_it m_it / n_i) / num_sequences; rows with n_i = 0 give 0.
    - ``token_mean`` (DAPO): sum l m / num_tokens.
    - ``dr_grpo``: sum l m / (num_sequences * max_len), no length normalisation per sequence.

    Pass the whole batch's normalisers when ``per_token`` is one micro-batch, so micro-batch losses
    sum to the full-batch loss. Defaults: num_sequences = rows with any trainable token here,
    num_tokens = mask sum here, max_len = T (the padded length of this tensor).
    """
    _check_same_shape(per_token=per_token, mask=mask)
    if per_token.dim() != 2:
        raise ValueError(f"per_token must be [B, T], got {tuple(per_token.shape)}")
    lm = _masked(per_token, mask)
    m = mask.to(per_token.dtype)
    if mode == "seq_mean":
        n_i = m.sum(-1)
        row = lm.sum(-1) / n_i.clamp(min=1.0)
        if num_sequences is None:
            num_sequences = max(int((n_i > 0).sum().item()), 1)
        return row.sum() / num_sequences
    if mode == "token_mean":
        if num_tokens is None:
            num_tokens = max(float(m.sum().item()), 1.0)
        return lm.sum() / num_tokens
    if mode == "dr_grpo":
        if num_sequences is None:
            num_sequences = max(int((m.sum(-1) > 0).sum().item()), 1)
        if max_len is None:
            max_len = per_token.shape[-1]
        return lm.sum() / (num_sequences * max_len)
    raise ValueError(f"unknown aggregation {mode!r} (known: seq_mean, token_mean, dr_grpo)")


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    m = mask.to(values.dtype)
    return _masked(values, mask).sum() / m.sum().clamp(min=1.0)


def sft_loss(
    logp: Tensor,
    mask: Tensor,
    *,
    weights: Tensor | None = None,
    num_tokens: float | None = None,
) -> Tensor:
    """Token cross-entropy on trainable tokens: -sum(w * logp * m) / num_tokens.

    ``logp`` is the log-prob of each target token (see ``token_logprobs``). ``num_tokens`` defaults to
    this batch's mask sum; pass the whole batch's when summing micro-batches.
    """
    _check_same_shape(logp=logp, mask=mask)
    per_token = logp if weights is None else weights * logp
    if num_tokens is None:
        num_tokens = max(float(mask.to(logp.dtype).sum().item()), 1.0)
    return -_masked(per_token, mask).sum() / num_tokens


def value_loss(
    values: Tensor,
    old_values: Tensor,
    returns: Tensor,
    mask: Tensor,
    *,
    clip: float | None = 0.2,
    agg: AggMode = "token_mean",
    weights: Tensor | None = None,
    num_sequences: int | None = None,
    num_tokens: float | None = None,
    max_len: int | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """PPO value loss: 0.5 * max((V - R)^2, (clip(V, V_old - clip, V_old + clip) - R)^2) per token.

    The clipped term keeps the critic from moving far from the values the advantages were computed
    with; ``clip=None`` gives the plain 0.5 (V - R)^2. Aggregated with ``aggregate`` (same
    normaliser rules, so micro-batch losses sum to the full-batch loss).

    Stats (detached scalars): ``value_loss`` (the loss, same normalisers); over this call's trainable
    tokens ``value_clip_frac`` (fraction where the clipped term is strictly larger) and
    ``explained_variance`` = 1 - Var(R - V) / Var(R) (0 when all returns are equal).
    ``returns`` and ``old_values`` may hold anything at padding; ``values`` must be finite there.
    ``weights`` (default ones) scale each token's loss, like the episode's per-token weights do for
    the policy loss.
    """
    _check_same_shape(values=values, old_values=old_values, returns=returns, mask=mask)
    if clip is not None and clip < 0:
        raise ValueError(f"clip must be >= 0 or None, got {clip}")
    # Targets are constants: clearing them at padding keeps junk there out of the gradient.
    returns = _masked(returns, mask)
    old_values = _masked(old_values, mask)
    unclipped = (values - returns) ** 2
    if clip is None:
        per_token = 0.5 * unclipped
        clipped_larger = torch.zeros_like(values, dtype=torch.bool)
    else:
        v_clipped = old_values + torch.clamp(values - old_values, -clip, clip)
        clipped = (v_clipped - returns) ** 2
        per_token = 0.5 * torch.maximum(unclipped, clipped)
        clipped_larger = (clipped > unclipped).detach()
    if weights is not None:
        _check_same_shape(values=values, weights=weights)
        per_token = weights * per_token
    norms = dict(num_sequences=num_sequences, num_tokens=num_tokens, max_len=max_len)
    loss = aggregate(per_token, mask, agg, **norms)

    with torch.no_grad():
        stats = {
            "value_loss": loss.detach(),
            "value_clip_frac": masked_mean(clipped_larger.to(values.dtype), mask),
            "explained_variance": _explained_variance(values.detach(), returns.detach(), mask),
        }
    return loss, stats


def _explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """1 - Var(R - V) / Var(R) over trainable tokens (population variances; the n's cancel)."""
    out_dtype = values.dtype if values.dtype.is_floating_point else torch.float32
    zero = torch.zeros((), dtype=out_dtype, device=values.device)
    on = mask != 0
    if int(on.sum().item()) < 2:
        return zero
    r = returns[on].double() if returns.device.type != "mps" else returns[on].float()
    v = values[on].to(r.dtype)
    if bool((r.max() == r.min()).item()):
        return zero  # Var(R) = 0 exactly; a float noise variance would give a meaningless ratio
    var_r = ((r - r.mean()) ** 2).mean()
    diff = r - v
    var_d = ((diff - diff.mean()) ** 2).mean()
    return (1.0 - var_d / var_r).to(out_dtype)


def entropy_bonus(
    entropy: Tensor,
    mask: Tensor,
    *,
    agg: AggMode = "token_mean",
    weights: Tensor | None = None,
    num_sequences: int | None = None,
    num_tokens: float | None = None,
    max_len: int | None = None,
) -> Tensor:
    """Aggregated entropy of trainable tokens; the caller subtracts coef * this from the loss.

    Uses ``aggregate`` so an entropy bonus over micro-batches sums like the policy loss; pass the
    same ``agg`` and normalisers as the policy loss. ``weights`` (default ones) scale each token.
    """
    if weights is not None:
        _check_same_shape(entropy=entropy, weights=weights)
        entropy = weights * entropy
    return aggregate(
        entropy, mask, agg, num_sequences=num_sequences, num_tokens=num_tokens, max_len=max_len
    )


def sequence_logprob(logp: Tensor, mask: Tensor) -> Tensor:
    """Sum of log-probs over each row's trainable tokens: [B, T] -> [B] (log pi(y | x) for DPO)."""
    _check_same_shape(logp=logp, mask=mask)
    if logp.dim() != 2:
        raise ValueError(f"logp must be [B, T], got {tuple(logp.shape)}")
    return _masked(logp, mask).sum(-1)


def dpo_loss(
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    *,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    num_pairs: int | None = None,
) -> tuple[Tensor, dict[str, Tensor]]:
    """DPO: -log sigmoid(beta * ((pc - rc) - (pr - rr))), summed over pairs / num_pairs.

    Inputs are per-pair sequence log-probs [P] (see ``sequence_logprob``). With label smoothing eps
    (conservative DPO, labels flipped with probability eps) the loss is
    -(1 - eps) logsig(z) - eps logsig(-z). ``num_pairs`` defaults to this call's P; pass the whole
    batch's so micro-batches of pairs sum to the full-batch loss.

    Stats (detached, means over this call's pairs): ``chosen_reward`` = beta (pc - rc),
    ``rejected_reward`` = beta (pr - rr), ``reward_margin`` (their difference) and
    ``reward_accuracy`` (fraction with chosen reward > rejected reward).
    """
    _check_same_shape(
        policy_chosen=policy_chosen,
        policy_rejected=policy_rejected,
        ref_chosen=ref_chosen,
        ref_rejected=ref_rejected,
    )
    if policy_chosen.dim() != 1:
        raise ValueError(f"inputs must be per-pair [P] tensors, got {tuple(policy_chosen.shape)}")
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing <= 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5], got {label_smoothing}")
    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    z = chosen - rejected
    per_pair = -F.logsigmoid(z)
    if label_smoothing > 0:
        per_pair = (1.0 - label_smoothing) * per_pair - label_smoothing * F.logsigmoid(-z)
    if num_pairs is None:
        num_pairs = max(int(z.numel()), 1)
    loss = per_pair.sum() / num_pairs

    with torch.no_grad():
        c, r = chosen.detach(), rejected.detach()
        stats = {
            "chosen_reward": c.mean(),
            "rejected_reward": r.mean(),
            "reward_margin": (c - r).mean(),
            "reward_accuracy": (c > r).to(c.dtype).mean(),
        }
    return loss, stats
