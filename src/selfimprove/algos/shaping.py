"""Reward shaping: terms added to a verifier's reward before advantages are computed."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["overlong_penalty"]


def overlong_penalty(lengths: Tensor, *, max_len: int, cache_len: int) -> Tensor:
    """DAPO's soft overlong punishment per completion length L (added to the reward).

    0 for L <= max_len - cache_len, (max_len - cache_len - L) / cache_len in the cache window
    (linear from 0 down to -1 at L = max_len), -1 beyond max_len. A graded penalty tells truncated
    answers apart from long ones without the noise of a hard cut.
    """
    if not 0 < cache_len <= max_len:
        raise ValueError(
            f"need 0 < cache_len <= max_len, got cache_len={cache_len}, max_len={max_len}"
        )
    dtype = lengths.dtype if lengths.dtype.is_floating_point else torch.float32
    length = lengths.to(dtype)
    start = max_len - cache_len
    ramp = (start - length) / cache_len
    zero = torch.zeros((), dtype=dtype, device=lengths.device)
    minus_one = torch.full((), -1.0, dtype=dtype, device=lengths.device)
    return torch.where(length <= start, zero, torch.where(length <= max_len, ramp, minus_one))
