"""Build a policy from a recipe's `model:` section: a local HF folder or a new built-in tiny model."""

from __future__ import annotations

from pathlib import Path

from selfimprove.config import ModelConfig
from selfimprove.policy.hf import HFPolicy
from selfimprove.policy.tiny import build_tiny_model


def load_policy(config: ModelConfig, *, seed: int = 0, path: str | Path | None = None) -> HFPolicy:
    """`path` (e.g. a checkpoint's model folder) overrides `config.path`."""
    source = str(path) if path is not None else config.path
    if path is None and config.is_builtin:
        preset = "small" if source == "tiny:small" else "default"
        model, tokenizer = build_tiny_model(preset, seed=seed)  # type: ignore[arg-type]
        return HFPolicy(model.to(config.device), tokenizer, chat=config.chat, seed=seed)
    return HFPolicy.load(source, device=config.device, dtype=config.dtype, chat=config.chat, seed=seed)
