"""Training forward pass that computes each shared prompt once.

A rollout batch holds `n` samples of every prompt. The usual forward runs the prompt `n` times; here
the distinct prefixes (the tokens before each row's first trainable token) run once, their KV cache is
repeated for the rows that share them (gradients flow back through the copies), and only the rest of
each row runs on top. Log-probabilities and gradients equal the plain forward's (tests check it); the
saving is the prompt share of the batch (40% on Countdown).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from selfimprove.policy.logprobs import token_entropy, token_logprobs
from selfimprove.policy.cascade import CascadeCache, Packing, cascading
from selfimprove.policy.decode import accepts_logits_to_keep
from selfimprove.rollout.episode import TokenBatch

if TYPE_CHECKING:
    from transformers import PreTrainedModel


def prefix_lengths(batch: TokenBatch) -> Tensor:
    """Tokens before each row's first trainable token (column t of `mask` is token t+1)."""
    has = batch.mask.sum(-1) > 0
    first = batch.mask.float().argmax(-1)
    return torch.where(has, first + 1, batch.attention_mask.sum(-1))


def share_plan(batch: TokenBatch) -> tuple[list[tuple[int, ...]], Tensor, Tensor] | None:
    """Distinct prefixes, the prefix index of every row and the prefix lengths; None when sharing
    would not save anything (no two rows share a prefix, or a row has nothing after its prefix)."""
    lengths = prefix_lengths(batch)
    totals = batch.attention_mask.sum(-1)
    if bool((lengths >= totals).any()):
        return None
    ids = batch.input_ids.tolist()
    index: dict[tuple[int, ...], int] = {}
    rows = []
    for i, n in enumerate(lengths.tolist()):
        rows.append(index.setdefault(tuple(ids[i][:n]), len(index)))
    if len(index) == batch.size:
        return None
    return list(index), torch.tensor(rows), lengths


def shared_prefix_forward(
    model: PreTrainedModel, batch: TokenBatch, temperature: float, *, with_entropy: bool = False
) -> tuple[Tensor, Tensor | None] | None:
    """Target log-probs (and entropies) [B, L-1] with shared prefixes computed once; None if not worth it."""
    plan = share_plan(batch)
    if plan is None:
        return None
    prefixes, row_prefix, lengths = plan
    device = batch.input_ids.device
    row_prefix, lengths = row_prefix.to(device), lengths.to(device)
    width = max(len(p) for p in prefixes)
    p_ids = torch.zeros((len(prefixes), width), dtype=torch.long, device=device)  # padding is masked
    p_mask = torch.zeros_like(p_ids)
    for u, p in enumerate(prefixes):
        p_ids[u, width - len(p) :] = torch.tensor(p, device=device)
        p_mask[u, width - len(p) :] = 1
    p_pos = (p_mask.cumsum(-1) - 1).clamp(min=0)
    with cascading(model) as shared:
        return _forward(model, batch, temperature, with_entropy, p_ids, p_mask, p_pos, row_prefix, lengths, shared)


def _forward(model: PreTrainedModel, batch: TokenBatch, temperature: float, with_entropy: bool, p_ids: Tensor,
             p_mask: Tensor, p_pos: Tensor, row_prefix: Tensor, lengths: Tensor,
             shared: bool) -> tuple[Tensor, Tensor | None] | None:
    """The prefix pass, then the rows' own tokens on its cache: kept once per prefix (`shared`, the
    cascade of `policy/cascade.py`) or repeated for every row."""
    from transformers import DynamicCache

    device = batch.input_ids.device
    cache = CascadeCache.for_model(model) if shared else DynamicCache()
    keep = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
    out = model(input_ids=p_ids, attention_mask=p_mask, position_ids=p_pos, past_key_values=cache, use_cache=True, **keep)
    first_logits = out.logits[:, -1, :].index_select(0, row_prefix)  # predicts each row's first suffix token
    if not shared:
        if not all(hasattr(layer, "keys") and layer.keys is not None for layer in getattr(cache, "layers", [None])):
            return None  # a cache we cannot repeat row-wise (e.g. sliding-window or hybrid layers)
        for layer in cache.layers:
            layer.keys = layer.keys.index_select(0, row_prefix)
            layer.values = layer.values.index_select(0, row_prefix)

    suffix_len = batch.attention_mask.sum(-1) - lengths
    s_width = int(suffix_len.max())
    steps = torch.arange(s_width, device=device)[None, :]
    cols = lengths[:, None] + steps  # where suffix token j of each row sits in the row
    valid = steps < suffix_len[:, None]
    width_in = batch.input_ids.shape[1]
    s_ids = torch.where(valid, batch.input_ids.gather(1, cols.clamp(max=width_in - 1)), torch.zeros_like(cols))
    if shared:  # the rows' tokens packed into one sequence: no layer computes padding
        packing = Packing(valid)
        cache.share(p_mask, row_prefix, packing)
        logits = model(input_ids=s_ids[valid][None], position_ids=cols[valid][None], past_key_values=cache,
                       use_cache=True).logits
        logits = packing.scatter(logits[0])
    else:
        mask = torch.cat([p_mask.index_select(0, row_prefix), valid.long()], dim=1)
        logits = model(input_ids=s_ids, attention_mask=mask, position_ids=cols, past_key_values=cache, use_cache=True).logits
    # The target of suffix position j is suffix token j; token 0 is predicted by the prefix pass.
    all_logits = torch.cat([first_logits[:, None, :], logits[:, :-1, :]], dim=1)  # [B, s_width, V]
    lp = torch.where(valid, token_logprobs(all_logits, s_ids, temperature), torch.zeros((), device=device))
    # Back to target columns (token c is target column c - 1). Padding positions add 0 to some column,
    # so scatter_add keeps every real column exact even where a clamped index repeats.
    target_cols = (cols - 1).clamp(max=width_in - 2)
    logp = torch.zeros(batch.size, width_in - 1, dtype=lp.dtype, device=device).scatter_add(1, target_cols, lp)
    entropy = None
    if with_entropy:
        ent = torch.where(valid, token_entropy(all_logits, temperature), torch.zeros((), device=device))
        entropy = torch.zeros_like(logp).scatter_add(1, target_cols, ent)
    return logp, entropy
