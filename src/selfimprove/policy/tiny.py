"""The built-in tiny model: a character-level tokenizer and a small Llama, trained from scratch.

It exists so every method runs on a laptop CPU in minutes with no download. Both halves are ordinary
Hugging Face objects (`PreTrainedTokenizerFast`, `LlamaForCausalLM`), saved and loaded like any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from tokenizers import Tokenizer, decoders, models, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
USER, ASSISTANT, END = "<|user|>", "<|assistant|>", "<|end|>"
SPECIAL_TOKENS = [PAD, BOS, EOS, UNK, USER, ASSISTANT, END]
CHARACTERS = "\n\t" + "".join(chr(c) for c in range(32, 127))

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}<|user|>{{ m['content'] }}<|end|>"
    "{% elif m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}<|end|>"
    "{% else %}{{ m['content'] }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

Preset = Literal["default", "small", "medium", "large"]
PRESETS: dict[str, dict[str, int]] = {
    # ~2.65M parameters: the size SPECS §7 measured on a 2-core machine.
    "default": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4),
    # For tests: seconds, not minutes.
    "small": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2),
    # ~10.7M and ~25.8M: the larger sizes of the capacity study (head dim 64 throughout, as the default).
    "medium": dict(hidden_size=384, intermediate_size=1024, num_hidden_layers=6, num_attention_heads=6),
    "large": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8),
}


def preset_of(source: str) -> Preset | None:
    """The preset a model source names (`tiny` is the default, `tiny:<preset>` any other); None when the
    source is not the built-in model."""
    if source == "tiny":
        return "default"
    name = source.removeprefix("tiny:")
    return name if source.startswith("tiny:") and name in PRESETS else None  # type: ignore[return-value]


def build_tokenizer() -> PreTrainedTokenizerFast:
    """One token per printable ASCII character plus pad/bos/eos/unk and chat markers."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in CHARACTERS:
        vocab.setdefault(ch, len(vocab))
    # BPE with no merges splits text into single characters; Fuse joins them back without spaces.
    core = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    core.decoder = decoders.Fuse()
    core.add_special_tokens(SPECIAL_TOKENS)
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        additional_special_tokens=[USER, ASSISTANT, END],
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.model_max_length = 512
    return tok


def build_config(tokenizer: PreTrainedTokenizerFast, preset: Preset = "default", **overrides: int) -> LlamaConfig:
    """A small Llama whose vocabulary and special ids match the character tokenizer."""
    sizes = {**PRESETS[preset], **overrides}
    sizes.setdefault("num_key_value_heads", sizes["num_attention_heads"])  # fewer: grouped-query attention
    return LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        attention_dropout=0.0,
        **sizes,
    )


def build_tiny_model(preset: Preset = "default", seed: int = 0, **overrides: int) -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A freshly initialised tiny model and its tokenizer (deterministic for a given seed)."""
    tokenizer = build_tokenizer()
    config = build_config(tokenizer, preset, **overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def write_tiny_model(out: str | Path, preset: Preset = "default", seed: int = 0, **overrides: int) -> Path:
    """Write a new tiny model as a normal Hugging Face folder (`from_pretrained` loads it)."""
    out = Path(out)
    model, tokenizer = build_tiny_model(preset, seed, **overrides)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
