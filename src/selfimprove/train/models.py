"""Build the engines a recipe names: the policy (from a folder, a checkpoint or the built-in tiny
model), the frozen KL reference, and PPO's value model."""

from __future__ import annotations

from pathlib import Path

from selfimprove.config import EngineConfig, LoraConfig, ModelConfig, ValueConfig
from selfimprove.policy.base import TrainableModel
from selfimprove.policy.hf import HFPolicy
from selfimprove.policy.load import load_engine
from selfimprove.policy.value import ValueModel


def load_policy(model: ModelConfig, *, engine: EngineConfig | None = None, seed: int = 0,
                path: str | Path | None = None, lora: LoraConfig | None = None,
                adapter: str | Path | None = None) -> HFPolicy:
    """The recipe's engine on `model.path` (or on `path`, e.g. a checkpoint's model folder), with a fresh
    LoRA adapter (`lora`) or a saved one to train on (`adapter`) put on the local model before the engine
    is built around it."""
    config = engine or EngineConfig()
    source = str(path) if path is not None else model.path
    return load_engine(config.kind, source, device=model.device, dtype=model.dtype, chat=model.chat, seed=seed,
                       lora=lora, adapter=adapter, **config.options())


def value_model(value: ValueConfig, model: ModelConfig, policy: TrainableModel) -> ValueModel | None:
    """PPO's critic: none, a zero-initialised head on the policy's trunk, or a separate trunk."""
    if value.kind == "none":
        return None
    if value.kind == "head":
        return ValueModel.on_policy(policy.module)
    if model.is_builtin and value.path is None:
        raise ValueError("value.kind 'separate' with a built-in tiny policy needs value.path (a model folder)")
    return ValueModel.separate(value.path or model.path)
