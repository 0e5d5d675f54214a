"""The built-in tiny model: character tokenizer, presets, and an exact save/load round trip."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from selfimprove.cli import main
import pytest

from selfimprove.policy.load import is_builtin
from selfimprove.policy.tiny import CHARACTERS, build_config, build_tiny_model, build_tokenizer, preset_of, write_tiny_model


def test_tokenizer_is_one_token_per_character_and_round_trips() -> None:
    tok = build_tokenizer()
    text = "9 7 20 -> 22:\n(20-9)*2"
    ids = tok(text).input_ids
    assert ids[0] == tok.bos_token_id
    assert len(ids) == len(text) + 1
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.decode(tok(CHARACTERS, add_special_tokens=False).input_ids) == CHARACTERS


def test_tokenizer_has_pad_bos_eos_and_chat_markers() -> None:
    tok = build_tokenizer()
    assert {tok.pad_token, tok.bos_token, tok.eos_token} == {"<pad>", "<bos>", "<eos>"}
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id}) == 3
    chat = tok.apply_chat_template([{"role": "user", "content": "1 2 -> 3:"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<bos><|user|>1 2 -> 3:<|end|><|assistant|>"
    marker_ids = tok("<|user|>", add_special_tokens=False).input_ids
    assert len(marker_ids) == 1


def test_default_preset_has_about_2_6m_parameters() -> None:
    model, _ = build_tiny_model("default")
    n = sum(p.numel() for p in model.parameters())
    assert 2_500_000 < n < 2_800_000
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (256, 4, 4)


def test_small_preset_is_much_smaller() -> None:
    model, _ = build_tiny_model("small")
    assert sum(p.numel() for p in model.parameters()) < 200_000


@pytest.mark.parametrize("preset, low, high", [("medium", 10_000_000, 11_000_000), ("large", 25_000_000, 26_500_000)])
def test_the_capacity_presets_sizes(preset: str, low: int, high: int) -> None:
    """Counted from the config (4 h^2 attention + 3 h i MLP + 2 norms per layer, embeddings untied), without
    building the model: ~10.7M and ~25.8M parameters."""
    c = build_config(build_tokenizer(), preset)  # type: ignore[arg-type]
    h, i, layers, vocab = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
    n = layers * (4 * h * h + 3 * h * i + 2 * h) + 2 * vocab * h + h
    assert low < n < high and h // c.num_attention_heads == 64


def test_model_sources_name_every_preset() -> None:
    assert [preset_of(s) for s in ("tiny", "tiny:small", "tiny:medium", "tiny:large", "tiny:huge", "runs/x", "tinyx")] == [
        "default", "small", "medium", "large", None, None, None]
    assert is_builtin("tiny:medium") and not is_builtin("tiny:huge")


def test_written_model_loads_back_with_identical_logits(tmp_path: Path) -> None:
    out = write_tiny_model(tmp_path / "m", preset="small", seed=3)
    original, tok = build_tiny_model("small", seed=3)
    loaded = AutoModelForCausalLM.from_pretrained(out)
    loaded_tok = AutoTokenizer.from_pretrained(out)
    ids = torch.tensor([loaded_tok("12 3 4 -> 20:").input_ids])
    assert ids.tolist() == [tok("12 3 4 -> 20:").input_ids]
    assert torch.equal(original(ids).logits, loaded(ids).logits)


def test_same_seed_same_weights_different_seed_different() -> None:
    a, _ = build_tiny_model("small", seed=1)
    b, _ = build_tiny_model("small", seed=1)
    c, _ = build_tiny_model("small", seed=2)
    wa, wb, wc = (m.model.embed_tokens.weight for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)


def test_cli_init_model_writes_an_hf_folder(tmp_path: Path) -> None:
    assert main(["init-model", "--out", str(tmp_path / "cli"), "--set", "preset=small"]) == 0
    assert (tmp_path / "cli" / "config.json").is_file()
    assert (tmp_path / "cli" / "tokenizer.json").is_file()
    AutoModelForCausalLM.from_pretrained(tmp_path / "cli")
