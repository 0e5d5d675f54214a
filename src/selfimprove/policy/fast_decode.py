"""One decode step of a Llama-family model in few, large operations, for the decode loop's batches.

Why by hand: at the sizes this library trains on a CPU, a decode step through the Hugging Face modules
spends most of its time outside the matrix products, in ~50 small operations and module calls per
layer (each RMSNorm alone is eight). Here a step is the same arithmetic in about half the operations:
`F.rms_norm`, one product for q, k and v and one for the MLP's gate and up projections (their weights
concatenated once per decode call, so they always match the model's), the model's own rotary
embedding, and the shared-prefix attention of `policy/cascade.py`. `torch.compile` would fuse more
but costs tens of seconds per shape on a CPU and breaks on the cache objects; vLLM is GPU-only.

Only for models it matches exactly: Llama, Mistral and Qwen2 architectures in float32, without an
adapter, SiLU MLPs and plain full attention. The prefill still runs through the model itself. The
step's logits equal the model's to float rounding (tests compare the sampled tokens).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers.models.llama.modeling_llama import rotate_half

from selfimprove.policy.cascade import CascadeCache, attend

if TYPE_CHECKING:
    from transformers import PreTrainedModel

ARCHITECTURES = {"LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"}


class FastDecoder:
    """The model's weights laid out for `step` (built per decode call: no stale copies)."""

    def __init__(self, model: PreTrainedModel) -> None:
        inner = model.model
        self.embed = inner.embed_tokens.weight
        self.rotary = inner.rotary_emb
        self.norm, self.eps = inner.norm.weight, inner.norm.variance_epsilon
        self.head = model.lm_head.weight
        self.layers = []
        for layer in inner.layers:
            a, m = layer.self_attn, layer.mlp
            # The attention's scale goes into q's weights (rotary embedding is linear, so it commutes):
            # exact when the scale is a power of two (head dim 64, 256, ...).
            qkv_b = None
            if a.q_proj.bias is not None:
                qkv_b = torch.cat([a.q_proj.bias * a.scaling, a.k_proj.bias, a.v_proj.bias])
            self.layers.append((
                layer.input_layernorm.weight,
                torch.cat([a.q_proj.weight * a.scaling, a.k_proj.weight, a.v_proj.weight]), qkv_b,
                a.o_proj.weight, a.o_proj.bias, layer.post_attention_layernorm.weight,
                torch.cat([m.gate_proj.weight, m.up_proj.weight]), m.down_proj.weight,
            ))
        first = inner.layers[0].self_attn
        self.head_dim = first.head_dim
        self.heads = first.q_proj.weight.shape[0] // self.head_dim
        self.kv_heads = first.k_proj.weight.shape[0] // self.head_dim

    @classmethod
    def for_model(cls, model: PreTrainedModel) -> FastDecoder | None:
        """A decoder for this model, or None when it is not one the step matches exactly."""
        config = getattr(model, "config", None)
        if (config is None or type(model).__name__ not in ARCHITECTURES or hasattr(model, "peft_config")
                or getattr(config, "hidden_act", None) != "silu" or getattr(config, "mlp_bias", False)
                or getattr(config, "pretraining_tp", 1) != 1 or getattr(model, "dtype", None) != torch.float32):
            return None
        try:
            return cls(model)
        except AttributeError:  # pragma: no cover - a layout these classes do not have
            return None

    def step(self, tokens: Tensor, positions: Tensor, cache: CascadeCache) -> Tensor:
        """Logits `[B, V]` of the next token after `tokens` `[B]` at `positions` `[B]`, appending their keys
        and values to the cache."""
        b, d, hd = tokens.shape[0], self.embed.shape[1], self.head_dim
        x = F.embedding(tokens, self.embed)
        cos, sin = self.rotary(x[:, None, :], positions[:, None])  # [B, 1, D]
        cos, sin = cos[:, None], sin[:, None]  # broadcast over heads: [B, 1, 1, D]
        heads, kv = self.heads, self.kv_heads
        for layer, (ln1, w_qkv, b_qkv, w_o, b_o, ln2, w_gu, w_down) in zip(cache.layers, self.layers):
            h = F.rms_norm(x, (d,), ln1, self.eps)
            qkv = F.linear(h, w_qkv, b_qkv).view(b, heads + 2 * kv, 1, hd)
            qk = _rotate(qkv[:, : heads + kv], cos, sin)  # q and k in one go
            keys, values = layer.update(qk[:, heads:], qkv[:, heads + kv :])
            out = attend(qk[:, :heads], keys, values, layer, 1.0)  # [B, 1, H, D]; q is already scaled
            x = x + F.linear(out.reshape(b, self.heads * hd), w_o, b_o)
            gate, up = F.linear(F.rms_norm(x, (d,), ln2, self.eps), w_gu).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, w_down)
        return F.linear(F.rms_norm(x, (d,), self.norm, self.eps), self.head)


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding as Hugging Face's `apply_rotary_pos_emb` computes it (halves, not pairs)."""
    return x * cos + rotate_half(x) * sin
