"""Shared-prefix ("cascade") attention: `n` rows that share a prompt read its keys and values once.

A rollout batch holds `n` samples of every prompt. Repeating the prompt's KV cache for every sample
(what `generate` and a plain forward do) makes attention read the same prompt keys `n` times, and on a
CPU attention over a cache is bound by those reads. Here a cache keeps one copy of each distinct
prefix (`[P, heads, Lp, dim]`) beside each row's own tokens (`[B, heads, Ls, dim]`); a row's queries
meet its prefix in one batched matmul per prefix (the rows of a prefix stacked as extra queries) and
its own tokens in another, and one softmax spans both. It is the same attention (tests compare it to
the plain forward), computed in another order, so results agree to float rounding.

How it plugs into a Hugging Face model: `cascading(model)` switches the model's attention function
to one registered here (`AttentionInterface`), for the length of a `with` block, when the model uses
the stock `sdpa` attention; the cache's layers mark themselves when they are updated, and the
attention function uses the cascade only for a layer of a `CascadeCache` that holds a prefix. Anything
else (the prefill, another thread's model, a model without such a cache) goes to `sdpa` unchanged.
Hand-written because no library offers it for CPU (FlashInfer's cascade kernels are CUDA-only).
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Iterator

import torch
from torch import Tensor

if TYPE_CHECKING:
    from transformers import PreTrainedModel

try:  # transformers >= 4.56: a cache is a list of layer objects
    from transformers.cache_utils import DynamicCache, DynamicLayer
except ImportError:  # pragma: no cover
    DynamicCache = DynamicLayer = None  # type: ignore[assignment,misc]

NAME = "selfimprove_cascade"
_current = threading.local()  # the cache layer updated last on this thread (its attention call comes next)
_switch = threading.Lock()


def _sdpa() -> Any:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward


class Groups:
    """Where each row's prefix is: rows stacked per prefix into `[P, slots, ...]` for one batched
    matmul per prefix. Rows in prefix-major order with `slots` rows each need no copy (the usual case:
    `n` samples per prompt); otherwise rows are scattered into slots (after finished rows were dropped)."""

    def __init__(self, row_prefix: Tensor, num_prefixes: int) -> None:
        self.row_prefix = row_prefix
        self.num_prefixes = num_prefixes
        rows = row_prefix.numel()
        counts = torch.bincount(row_prefix, minlength=num_prefixes)
        self.slots = max(1, int(counts.max()))
        self.plain = rows == num_prefixes * self.slots and bool(
            torch.equal(row_prefix, torch.arange(num_prefixes, device=row_prefix.device).repeat_interleave(self.slots)))
        if not self.plain:
            order = torch.argsort(row_prefix, stable=True)
            starts = torch.cumsum(counts, 0) - counts
            rank = torch.empty_like(row_prefix)
            rank[order] = torch.arange(rows, device=row_prefix.device) - starts[row_prefix[order]]
            self.slot = row_prefix * self.slots + rank  # [B]: the row's place among P * slots

    def stack(self, x: Tensor) -> Tensor:
        """[B, H, R, X] -> [P, H, slots * R, X]."""
        b, h, r, d = x.shape
        if not self.plain:
            full = x.new_zeros((self.num_prefixes * self.slots, h, r, d))
            x = full.index_copy(0, self.slot, x)
        return x.view(self.num_prefixes, self.slots, h, r, d).transpose(1, 2).reshape(self.num_prefixes, h, self.slots * r, d)

    def unstack(self, y: Tensor, r: int) -> Tensor:
        """[P, H, slots * R, X] -> [B, H, R, X]."""
        p, h, _, d = y.shape
        y = y.view(p, h, self.slots, r, d).transpose(1, 2).reshape(p * self.slots, h, r, d)
        return y if self.plain else y.index_select(0, self.slot)


class Packing:
    """The rows' own tokens packed into one sequence without padding: token t is position
    `index[t] % width` of row `index[t] // width`. The model's linear layers then run on real tokens
    only; attention unpacks them to `[rows, width]` (where padding sits after each row's last token)."""

    def __init__(self, valid: Tensor) -> None:
        rows, self.width = valid.shape
        self.rows = rows
        self.index = torch.arange(rows * self.width, device=valid.device).view(rows, self.width)[valid]

    def unpack(self, x: Tensor) -> Tensor:
        """[1, H, T, D] -> [rows, H, width, D] (zeros where a row has no token)."""
        _, h, _, d = x.shape
        flat = x.new_zeros((self.rows * self.width, h, d)).index_copy(0, self.index, x[0].transpose(0, 1))
        return flat.view(self.rows, self.width, h, d).transpose(1, 2)

    def pack(self, y: Tensor) -> Tensor:
        """[rows, width, H, D] -> [1, T, H, D]."""
        return y.reshape(self.rows * self.width, *y.shape[2:]).index_select(0, self.index)[None]

    def scatter(self, x: Tensor) -> Tensor:
        """Per-token values [T, ...] -> [rows, width, ...] (zeros where a row has no token)."""
        flat = x.new_zeros((self.rows * self.width, *x.shape[1:])).index_copy(0, self.index, x)
        return flat.view(self.rows, self.width, *x.shape[1:])


if DynamicLayer is not None:

    class CascadeLayer(DynamicLayer):
        """One layer's cache: the prefixes' keys and values once, then each row's own tokens (appended
        into a buffer of `capacity` positions when given, else kept as the tensors passed in)."""

        def __init__(self, cache: "CascadeCache", capacity: int | None) -> None:
            super().__init__()
            self.cache, self.capacity = cache, capacity
            self.prefix_keys: Tensor | None = None
            self.prefix_values: Tensor | None = None
            self.length = 0

        def update(self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
            if self.prefix_keys is None:  # the prefill: the prefixes themselves, plain attention
                self.prefix_keys, self.prefix_values = key_states, value_states
                self.dtype, self.device, self.is_initialized = key_states.dtype, key_states.device, True
                return key_states, value_states
            _current.layer = self
            if self.capacity is None:  # one call (a training forward): the rows' tokens as given
                if self.length:
                    raise RuntimeError("a cascade cache without capacity takes the rows' tokens in one call")
                self.keys, self.values = key_states, value_states
            else:
                self._append(key_states, value_states)
            self.length += key_states.shape[-2]
            return self.keys, self.values

        def _append(self, key_states: Tensor, value_states: Tensor) -> None:
            if self.length == 0:
                b, h, _, d = key_states.shape
                self.key_buffer = key_states.new_empty((b, h, self.capacity, d))
                self.value_buffer = value_states.new_empty((b, value_states.shape[1], self.capacity, value_states.shape[-1]))
            end = self.length + key_states.shape[-2]
            if end > self.capacity:
                raise RuntimeError(f"cascade cache holds {self.capacity} positions per row, asked for {end}")
            self.key_buffer[:, :, self.length : end] = key_states
            self.value_buffer[:, :, self.length : end] = value_states
            self.keys = self.key_buffer[:, :, :end]
            self.values = self.value_buffer[:, :, :end]

        def get_seq_length(self) -> int:
            return (0 if self.prefix_keys is None else self.prefix_keys.shape[-2]) + self.length

        def batch_select_indices(self, indices: Tensor) -> None:
            """Keep these rows (their own tokens); the prefixes stay whole."""
            if self.length and self.capacity is not None:
                self.key_buffer = self.key_buffer.index_select(0, indices)
                self.value_buffer = self.value_buffer.index_select(0, indices)
                self.keys = self.key_buffer[:, :, : self.length]
                self.values = self.value_buffer[:, :, : self.length]

    class CascadeCache(DynamicCache):
        """A KV cache for rows that share prefixes: call the model once on the distinct prefixes, then
        `share(prefix_mask, row_prefix)`, then on the rows' own tokens (see the module docstring)."""

        def __init__(self, num_layers: int, capacity: int | None = None) -> None:
            """`capacity`: positions per row for tokens appended step by step (decoding); None for one
            call with all the rows' tokens (a training forward)."""
            super().__init__()
            self.layers = [CascadeLayer(self, capacity) for _ in range(num_layers)]
            self.layer_class_to_replicate = None
            self.groups: Groups | None = None
            self.prefix_padding: Tensor | None = None
            self.packing: Packing | None = None

        @classmethod
        def for_model(cls, model: PreTrainedModel, capacity: int | None = None) -> "CascadeCache":
            return cls(len(DynamicCache(config=model.config).layers), capacity)

        def share(self, prefix_mask: Tensor, row_prefix: Tensor, packing: "Packing | None" = None) -> None:
            """After the prefill: which prefix positions are real (`[P, Lp]`, left padding false) and
            which prefix each row continues (`[B]`); with `packing`, the rows' tokens come next as one
            sequence without padding (a training forward)."""
            self.prefix_padding = ~prefix_mask.bool()[:, None, None, :]  # [P, 1, 1, Lp]: what no query sees
            self.groups = Groups(row_prefix, prefix_mask.shape[0])
            self.packing = packing

        def batch_select_indices(self, indices: Tensor) -> None:
            assert self.groups is not None
            for layer in self.layers:
                layer.batch_select_indices(indices)
            self.groups = Groups(self.groups.row_prefix.index_select(0, indices), self.groups.num_prefixes)


def cascade_attention(module: torch.nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                      scaling: float | None = None, dropout: float = 0.0, **kwargs: Any) -> tuple[Tensor, None]:
    """The attention function registered as NAME: the cascade for a `CascadeCache` layer past its
    prefill, `sdpa` for everything else. Returns `[B, S, H, D]` as Hugging Face's attention functions do."""
    layer = getattr(_current, "layer", None)
    _current.layer = None
    cache = getattr(layer, "cache", None)
    if layer is None or cache is None or cache.groups is None or key is not layer.keys:
        return _sdpa()(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    packing: Packing | None = cache.packing
    if packing is not None:
        query, key, value = packing.unpack(query), packing.unpack(key), packing.unpack(value)
    out = attend(query, key, value, layer, scaling)
    return (out.contiguous() if packing is None else packing.pack(out)), None


def attend(query: Tensor, key: Tensor, value: Tensor, layer: "CascadeLayer", scaling: float | None = None) -> Tensor:
    """Attention of a cascade layer's rows: queries `[B, H, S, D]` (the last S of each row's own tokens),
    the rows' own keys and values `[B, Hkv, Ls, D]` and the layer's prefixes; returns `[B, S, H, D]`."""
    cache = layer.cache
    b, heads, s, d = query.shape
    kv_heads = key.shape[1]
    scale = d**-0.5 if scaling is None else scaling
    q = query.reshape(b, kv_heads, (heads // kv_heads) * s, d)  # query head h uses key head h // group
    if scale != 1.0:  # once, on the queries, for both products
        q = q * scale
    groups: Groups = cache.groups
    own = torch.matmul(q, key.transpose(-1, -2))  # [B, Hkv, g*S, Ls]
    span = key.shape[-2]
    if s > 1:  # query i sits at own position span - s + i: it sees own tokens up to there
        i = torch.arange(s, device=q.device).repeat(heads // kv_heads)[:, None]
        own = own.masked_fill(torch.arange(span, device=q.device)[None, :] > span - s + i, float("-inf"))
    shared = torch.matmul(groups.stack(q), layer.prefix_keys.transpose(-1, -2))  # [P, Hkv, slots*g*S, Lp]
    shared = groups.unstack(shared.masked_fill(cache.prefix_padding, float("-inf")), q.shape[2])
    weights = torch.softmax(torch.cat([shared, own], dim=-1).float(), dim=-1).to(q.dtype)
    lp = shared.shape[-1]
    out = groups.unstack(torch.matmul(groups.stack(weights[..., :lp]), layer.prefix_values), q.shape[2])
    return (out + torch.matmul(weights[..., lp:], value)).reshape(b, heads, s, d).transpose(1, 2)


def supports_cascade(model: PreTrainedModel) -> bool:
    """Models whose layers all use plain full attention through the stock `sdpa` function."""
    config = getattr(model, "config", None)
    if DynamicLayer is None or config is None or getattr(config, "_attn_implementation", None) not in ("sdpa", NAME):
        return False
    if getattr(config, "attn_logit_softcapping", None) or getattr(config, "sliding_window", None) and getattr(
            config, "use_sliding_window", True):
        return False
    try:
        layers = DynamicCache(config=config).layers
    except Exception:  # pragma: no cover - exotic configs
        return False
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, cascade_attention)
        ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)  # the prefill's masks are sdpa's


@contextmanager
def cascading(model: PreTrainedModel) -> Iterator[bool]:
    """Within the block, the model attends through `cascade_attention` (yields True), or, for a model
    it does not fit, nothing changes (yields False)."""
    if not supports_cascade(model):
        yield False
        return
    _register()
    config = model.config
    with _switch:
        before = config._attn_implementation
        config._attn_implementation = NAME
    try:
        yield True
    finally:
        with _switch:
            if before != NAME:  # an outer block restores
                config._attn_implementation = before
        _current.layer = None
