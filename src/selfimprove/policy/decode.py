"""A lean batched decode loop with a KV cache, for any Hugging Face causal LM.

Why not `model.generate`: we need behaviour log-probabilities of the sampled tokens, stop strings that
cut both text and tokens, our own seeded generator (for exact resume), and little per-step overhead on
small models. Prompts are left-padded; each row keeps its own position ids.

What keeps it fast (bench/generate.py measures it against `model.generate`):
- the prefill runs once per *distinct prompt* and its KV cache is repeated `n` times, and it computes
  logits for the last position only (`logits_to_keep=1`);
- the KV cache is preallocated for the whole generation (no per-step concatenation of every layer);
- tokens, log-probabilities and finish steps live in preallocated tensors and are read back once;
- finished rows are dropped from the batch and the cache once enough of them have piled up;
- stop strings are checked only when there are some, and only on unfinished rows.
"""

from __future__ import annotations

import inspect
from contextlib import nullcontext
from typing import TYPE_CHECKING, Callable, Sequence

import torch
if TYPE_CHECKING:  # loaded when a run starts, not when a recipe is validated
    from transformers import DynamicCache, PreTrainedModel

from selfimprove.policy.base import Completion, SamplingParams
from selfimprove.policy.cascade import CascadeCache, cascading
from selfimprove.policy.fast_decode import FastDecoder

try:  # transformers >= 4.56: a cache is a list of layer objects
    from transformers.cache_utils import DynamicLayer
except ImportError:  # pragma: no cover - older transformers: plain DynamicCache only
    DynamicLayer = None  # type: ignore[assignment,misc]

# Finished rows stay in the batch (computing a token nobody reads) until they are at least this
# fraction of it; then the batch and the KV cache are compacted to the unfinished rows. Compacting
# copies the whole cache, so doing it for every single finished row would cost more than it saves.
COMPACT_FRACTION = 0.25

_LENGTH, _EOS, _STOP = 0, 1, 2
_REASONS = ("length", "eos", "stop")


def sample_next(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row; return (tokens [N], their log-probs under the distribution sampled from):
    the temperature-scaled model, renormalised over the nucleus when top_p < 1 (vLLM's processed
    log-probs), so they are the behaviour policy's log-probs. Greedy rows report the plain model's."""
    logits = logits.float()
    if params.greedy:
        logp = torch.log_softmax(logits, dim=-1)
        tokens = logits.argmax(dim=-1)
        return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)
    logp = torch.log_softmax(logits if params.temperature == 1.0 else logits / params.temperature, dim=-1)
    probs = logp.exp()
    if params.top_p < 1.0:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (always at least the top token).
        drop = (sorted_p.cumsum(-1) - sorted_p) >= params.top_p
        kept = sorted_p.masked_fill(drop, 0.0)
        tokens = order.gather(-1, _inverse_cdf(kept, generator)[:, None]).squeeze(-1)
        return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1) - kept.sum(-1).log()
    tokens = _inverse_cdf(probs, generator)
    return tokens, logp.gather(-1, tokens[:, None]).squeeze(-1)


def _inverse_cdf(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One draw per row from unnormalised non-negative weights, with one uniform number per row.

    Cheaper than `torch.multinomial` (which draws one exponential per vocabulary entry). The threshold
    lies in (0, total], so a zero-weight entry is never picked.
    """
    cdf = probs.cumsum(dim=-1)
    u = torch.rand((probs.shape[0], 1), generator=generator, device=probs.device, dtype=cdf.dtype)
    threshold = (1.0 - u) * cdf[:, -1:]
    return (cdf < threshold).sum(dim=-1).clamp_(max=probs.shape[-1] - 1)


# ------------------------------------------------------------------------------------------ KV cache
if DynamicLayer is not None:

    class PreallocatedLayer(DynamicLayer):
        """A `DynamicLayer` that writes into a buffer sized for the whole generation.

        `DynamicLayer.update` concatenates the new key/value states onto the old ones, copying the
        whole layer cache at every step; this writes one position in place and exposes views.
        """

        def __init__(self, capacity: int, **kwargs) -> None:
            super().__init__(**kwargs)
            self.capacity = capacity
            self.length = 0

        def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
            self.dtype, self.device = key_states.dtype, key_states.device
            b, h, _, d = key_states.shape
            self.key_buffer = key_states.new_empty((b, h, self.capacity, d))
            self.value_buffer = value_states.new_empty((b, value_states.shape[1], self.capacity, value_states.shape[-1]))
            self.length = 0
            self._expose()
            self.is_initialized = True

        def _expose(self) -> None:
            self.keys = self.key_buffer[:, :, : self.length]
            self.values = self.value_buffer[:, :, : self.length]

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            end = self.length + key_states.shape[-2]
            if end > self.capacity:  # a caller fed more tokens than planned: grow (rare, correct)
                grow = max(end, 2 * self.capacity) - self.capacity
                pad = lambda t: torch.cat([t, t.new_empty((*t.shape[:2], grow, t.shape[-1]))], dim=2)  # noqa: E731
                self.key_buffer, self.value_buffer = pad(self.key_buffer), pad(self.value_buffer)
                self.capacity += grow
            self.key_buffer[:, :, self.length : end] = key_states
            self.value_buffer[:, :, self.length : end] = value_states
            self.length = end
            self._expose()
            return self.keys, self.values

        def get_seq_length(self) -> int:
            return self.length if self.is_initialized else 0

        def reset(self) -> None:
            self.length = 0
            if self.is_initialized:
                self._expose()

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove > 0:
                raise ValueError("crop takes a negative number of tokens to remove")
            if self.is_initialized:
                self.length = max(0, self.length + tokens_to_remove)
                self._expose()

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self.is_initialized:
                self.key_buffer = self._repeat(self.key_buffer, repeats)
                self.value_buffer = self._repeat(self.value_buffer, repeats)
                self._expose()

        def _repeat(self, buffer: torch.Tensor, repeats: int) -> torch.Tensor:
            # Copy only the filled positions (after the prefill that is a fraction of the buffer).
            b, h, cap, d = buffer.shape
            out = buffer.new_empty((b * repeats, h, cap, d))
            out.view(b, repeats, h, cap, d)[:, :, :, : self.length] = buffer[:, None, :, : self.length]
            return out

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            if self.is_initialized:
                self.key_buffer = self.key_buffer.index_select(0, indices.to(self.key_buffer.device))
                self.value_buffer = self.value_buffer.index_select(0, indices.to(self.value_buffer.device))
                self._expose()

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            self.batch_select_indices(beam_idx)


def make_cache(model: PreTrainedModel, capacity: int) -> DynamicCache:
    """A KV cache for `capacity` positions: preallocated when every layer is plain full attention,
    otherwise (sliding-window, linear-attention or hybrid models) the model's own `DynamicCache`."""
    from transformers import DynamicCache

    config = getattr(model, "config", None)
    try:
        reference = DynamicCache(config=config) if config is not None else DynamicCache()
    except Exception:  # pragma: no cover - exotic configs
        return DynamicCache()
    if DynamicLayer is None or any(type(layer) is not DynamicLayer for layer in getattr(reference, "layers", [])):
        return reference
    cache = DynamicCache()
    if getattr(cache, "layer_class_to_replicate", None) is not DynamicLayer:  # pragma: no cover - API drift
        return reference
    if reference.layers:
        cache.layers = [PreallocatedLayer(capacity) for _ in reference.layers]
        cache.layer_class_to_replicate = None
    else:
        cache.layer_class_to_replicate = lambda: PreallocatedLayer(capacity)
    return cache


def accepts_logits_to_keep(model: PreTrainedModel) -> bool:
    """Whether `model(..., logits_to_keep=1)` works: the model's forward names it, or the model is a
    wrapper (PEFT) that passes keyword arguments through to a base model that names it."""
    try:
        params = inspect.signature(model.forward).parameters
        if "logits_to_keep" in params:
            return True
        base = getattr(model, "get_base_model", None)
        if callable(base) and any(p.kind is p.VAR_KEYWORD for p in params.values()):
            inner = base()
            return inner is not model and "logits_to_keep" in inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):  # pragma: no cover - callables without signatures
        pass
    return False


# ------------------------------------------------------------------------------------------ decode
@torch.inference_mode()
def decode(
    model: PreTrainedModel,
    prompt_ids: Sequence[Sequence[int]],
    params: SamplingParams,
    *,
    pad_id: int,
    eos_ids: Sequence[int],
    detokenize: Callable[[list[int]], str],
    generator: torch.Generator | None = None,
    cascade: bool = True,
    fast_steps: bool = True,
) -> list[Completion]:
    """Sample `params.n` completions for every prompt (prompt-major order) in one batch. With `cascade`
    (and n > 1, on a model it fits) the samples of a prompt share its KV cache (`policy/cascade.py`),
    and with `fast_steps` too the decode steps skip the model's modules (`policy/fast_decode.py`)."""
    prompts = [list(p) for p in prompt_ids]
    if not prompts:
        return []
    device = model.device
    steps = params.max_new_tokens

    # Prefill each distinct prompt once (left-padded), then repeat its cache for the n samples.
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(prompts), width + steps), dtype=torch.long)
    for i, p in enumerate(prompts):
        input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
        attention[i, width - len(p) :] = 1  # generated positions are always attended
    padded = any(len(p) < width for p in prompts)
    input_ids, attention = input_ids.to(device), attention.to(device)
    positions = (attention[:, :width].cumsum(-1) - 1).clamp(min=0)

    with cascading(model) if params.n > 1 and cascade else nullcontext(False) as shared:
        return _decode(model, prompts, params, input_ids, attention, positions, padded, shared, pad_id=pad_id,
                       eos_ids=eos_ids, detokenize=detokenize, generator=generator, fast_steps=fast_steps)


def _decode(model: PreTrainedModel, prompts: list[list[int]], params: SamplingParams, input_ids: torch.Tensor,
            attention: torch.Tensor, positions: torch.Tensor, padded: bool, shared: bool, *, pad_id: int,
            eos_ids: Sequence[int], detokenize: Callable[[list[int]], str],
            generator: torch.Generator | None, fast_steps: bool) -> list[Completion]:
    """The loop itself; with `shared`, the KV cache keeps each prompt once (`policy/cascade.py`) and,
    with `fast_steps` on a model it fits, the steps after the prefill run `policy/fast_decode.py`."""
    device = model.device
    n, steps = params.n, params.max_new_tokens
    total = len(prompts) * n
    width = input_ids.shape[1]
    fast = None
    if shared:
        cache = CascadeCache.for_model(model, steps - 1)  # the rows' own tokens; the last is never fed back
        fast = FastDecoder.for_model(model) if fast_steps else None
    else:
        cache = make_cache(model, width + steps - 1)
    extra = {"logits_to_keep": 1} if accepts_logits_to_keep(model) else {}
    out = model(
        input_ids=input_ids,
        attention_mask=attention[:, :width] if padded else None,
        position_ids=positions,
        past_key_values=cache,
        use_cache=True,
        **extra,
    )
    logits = out.logits[:, -1, :]
    last_pos = positions[:, -1]
    if shared:
        cache.share(attention[:, :width], torch.arange(len(prompts), device=device).repeat_interleave(n))
        padded = False  # the cascade masks the prompts' padding itself
    if n > 1:
        if not shared:
            cache.batch_repeat_interleave(n)
        logits = logits.repeat_interleave(n, dim=0)
        last_pos = last_pos.repeat_interleave(n, dim=0)
        if padded:  # the mask is read only for padded prompts on the plain cache
            attention = attention.repeat_interleave(n, dim=0)
    del out

    # Results, indexed by the original row (prompt-major); read back once at the end.
    out_tokens = torch.full((total, steps), pad_id, dtype=torch.long, device=device)
    out_logps = torch.zeros((total, steps), dtype=torch.float32, device=device)
    lengths = torch.full((total,), steps, dtype=torch.long, device=device)
    reasons = torch.full((total,), _LENGTH, dtype=torch.long, device=device)
    eos = torch.tensor(list(eos_ids), dtype=torch.long, device=device)

    rows = torch.arange(total, device=device)  # batch position -> original row
    live = torch.ones(total, dtype=torch.bool, device=device)  # unfinished rows in the batch
    num_live, compacted = total, False
    # Stop strings need the text so far: per-row token lists, kept only when there are stop strings.
    stop = tuple(params.stop)
    max_stop = max((len(s) for s in stop), default=0)
    history: list[list[int]] = [[] for _ in range(total)] if stop else []
    row_list = list(range(total)) if stop else []

    for step in range(steps):
        tok, lp = sample_next(logits, params, generator)
        # Finished rows write past their end; those columns are cut by `lengths` at the end.
        if compacted:
            out_tokens[rows, step] = tok
            out_logps[rows, step] = lp
        else:
            out_tokens[:, step] = tok
            out_logps[:, step] = lp
        finished = live & torch.isin(tok, eos) if eos.numel() else torch.zeros_like(live)
        if eos.numel():
            reasons[rows[finished]] = _EOS
        if stop:
            hit_stop = _stop_hits(tok, live & ~finished, row_list, history, detokenize, stop, max_stop)
            if hit_stop is not None:
                reasons[rows[hit_stop]] = _STOP
                finished = finished | hit_stop
        lengths[rows[finished]] = step + 1
        live = live & ~finished
        num_live = int(live.sum())
        if num_live == 0 or step == steps - 1:
            break
        dead = len(rows) - num_live
        if dead and dead >= COMPACT_FRACTION * len(rows):
            keep = live.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, tok, last_pos = rows[keep], tok[keep], last_pos[keep]
            if padded:
                attention = attention[keep]
            live = live[keep]
            compacted = True
            if stop:
                row_list = rows.tolist()
        last_pos = last_pos + 1
        if fast is not None:
            logits = fast.step(tok, last_pos, cache)
            continue
        out = model(
            input_ids=tok[:, None],
            attention_mask=attention[:, : width + step + 1] if padded else None,
            position_ids=last_pos[:, None],
            past_key_values=cache,
            use_cache=True,
        )
        logits = out.logits[:, -1, :]
        del out

    tokens_all = out_tokens.cpu().tolist()
    logps_all = out_logps.cpu().tolist()
    lengths_all = lengths.cpu().tolist()
    reasons_all = reasons.cpu().tolist()
    completions = []
    for i in range(total):
        length, reason = lengths_all[i], _REASONS[reasons_all[i]]
        ids = tokens_all[i][:length]
        text = detokenize(ids[:-1] if reason == "eos" else ids)
        if reason == "stop":
            cut = min((text.find(s) for s in stop if s in text), default=-1)
            text = text[:cut] if cut >= 0 else text
        p = i // n
        completions.append(Completion(p, list(prompts[p]), ids, text, logps_all[i][:length], reason))  # type: ignore[arg-type]
    return completions


def _stop_hits(
    tok: torch.Tensor,
    check: torch.Tensor,
    row_list: list[int],
    history: list[list[int]],
    detokenize: Callable[[list[int]], str],
    stop: tuple[str, ...],
    max_stop: int,
) -> torch.Tensor | None:
    """Append this step's tokens to the unfinished rows' histories; mark rows whose recent text holds
    a stop string (None when none does). Only the last few tokens are detokenized per row."""
    tok_list, check_list = tok.tolist(), check.tolist()
    hits = []
    for b, (t, c) in enumerate(zip(tok_list, check_list)):
        if not c:
            continue
        h = history[row_list[b]]
        h.append(t)
        tail = detokenize(h[-(max_stop + 2) :])
        if any(s in tail for s in stop):
            hits.append(b)
    if not hits:
        return None
    mask = torch.zeros_like(check)
    mask[torch.tensor(hits, dtype=torch.long, device=check.device)] = True
    return mask
