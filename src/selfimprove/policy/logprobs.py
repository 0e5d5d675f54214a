"""Per-token log-probabilities and entropies from a causal LM's logits.

They belong to the engine (every engine must give the learner and the search the same numbers for the
same tokens), so they live here rather than with the losses: `algos/` turns these tensors into losses
and never needs a model.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["token_entropy", "token_logprobs"]


def _scaled_float_logits(logits: Tensor, temperature: float) -> Tensor:
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = logits.float()  # no copy when already float32
    return logits if temperature == 1.0 else logits / temperature


def token_logprobs(logits: Tensor, targets: Tensor, temperature: float = 1.0) -> Tensor:
    """log_softmax(logits / temperature) at ``targets``: [B, T, V], [B, T] -> float32 [B, T].

    Gathers the target logit and subtracts the logsumexp, so the full [B, T, V] log-softmax is never
    materialised. Negative targets (e.g. the -100 ignore index) give 0.0; mask them out anyway.
    """
    if logits.dim() != targets.dim() + 1 or logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits must be targets' shape plus a vocab dim, got {tuple(logits.shape)} "
            f"and {tuple(targets.shape)}"
        )
    scaled = _scaled_float_logits(logits, temperature)
    ignore = targets < 0
    picked = scaled.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    out = picked - torch.logsumexp(scaled, dim=-1)
    return out.masked_fill(ignore, 0.0)


def token_entropy(logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Entropy of the next-token distribution per position: [B, T, V] -> float32 [B, T].

    H = logsumexp(z) - sum softmax(z) z, which needs one softmax and no log-softmax tensor.
    """
    scaled = _scaled_float_logits(logits, temperature)
    probs = torch.softmax(scaled, dim=-1)
    # 0 * -inf would be nan for vocab entries that are masked out with -inf logits.
    zero = torch.zeros((), dtype=scaled.dtype, device=scaled.device)
    p_z = torch.where(probs > 0, probs * scaled, zero)
    return torch.logsumexp(scaled, dim=-1) - p_z.sum(-1)
