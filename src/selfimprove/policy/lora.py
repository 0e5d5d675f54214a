"""LoRA (PEFT) on an `HFPolicy`: wrap, reload for resume, and save as an adapter (optionally merged).

The policy keeps one copy of the base weights; the KL reference is the same model with the adapter
switched off (`PeftModel.disable_adapter()`), so LoRA runs need no second model in memory.
"""

from __future__ import annotations

import copy
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Protocol, Sequence

import peft
from peft import PeftModel
from transformers import PreTrainedModel

from selfimprove.errors import ModelError
from selfimprove.policy.hf import HFPolicy

class LoraSettings(Protocol):
    """What `apply_lora` reads (a recipe's `lora:` section has these fields)."""

    r: int
    alpha: float
    dropout: float
    target_modules: Sequence[str] | str


MERGED = "merged"
BASE = "base"


@contextmanager
def _quiet() -> Iterator[None]:
    # peft reads a transformers attribute that transformers now flags as deprecated: noise, not news.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        yield


def is_lora(policy: HFPolicy) -> bool:
    """True when the policy's model is a PEFT model (its trainable weights are an adapter)."""
    return isinstance(policy.model, PeftModel)


def _check_plain(policy: HFPolicy) -> None:
    # Stacking a second adapter would make "adapter off" (the KL reference) a different model than the
    # run started from, and the saved adapter would not apply to any folder on disk.
    if is_lora(policy):
        raise ValueError(
            "the policy already carries a LoRA adapter; start LoRA training from a full model folder "
            "(e.g. the `merged/` folder written with lora.save_merged: true)"
        )


def _record_base(model: PeftModel) -> None:
    """Name the folder the base weights were loaded from (absolute, so the adapter loads from any cwd).

    Taken from the live base model, not from a reloaded adapter config, so a resumed run records the
    base it really runs on.
    """
    base = getattr(model.get_base_model(), "name_or_path", None)
    source = str(Path(base).resolve()) if base and Path(base).is_dir() else base or None
    for cfg in model.peft_config.values():
        cfg.base_model_name_or_path = source


def resolve_targets(model: PreTrainedModel, targets: Sequence[str] | str) -> list[str] | str:
    """`auto` -> PEFT's default target modules for the model's architecture (what `peft` itself would
    pick), or `all-linear` when PEFT has none for it; names are checked against the model's modules."""
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    if isinstance(targets, str):
        if targets != "auto":
            return targets
        return list(DEFAULTS.get(getattr(model.config, "model_type", ""), [])) or "all-linear"
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    unknown = [t for t in targets if t not in names]
    if unknown:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if type(m).__name__ == "Linear"})
        raise ModelError(
            f"lora.target_modules: {', '.join(unknown)} not in this model (its linear layers: {', '.join(linear)}); "
            f"use auto or all-linear"
        )
    return list(targets)


def check_lora_targets(source: str, targets: Sequence[str] | str) -> None:
    """Check named target modules against the model's architecture, built on the meta device (no weights
    are read), so a wrong name fails before a run writes anything."""
    if isinstance(targets, str):
        return
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from selfimprove.policy.tiny import build_config, build_tokenizer, preset_of

    preset = preset_of(source)
    if preset is not None:
        config = build_config(build_tokenizer(), preset)
    else:
        config = AutoConfig.from_pretrained(source)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    resolve_targets(model, targets)


def _all_conv1d(model: PreTrainedModel, targets: list[str] | str) -> bool:
    """True when every named target is a transformers `Conv1D` (GPT-2's layers store weights transposed):
    the adapter must then say `fan_in_fan_out`, which peft would otherwise switch on itself with a warning."""
    from transformers.pytorch_utils import Conv1D

    if isinstance(targets, str):
        return False
    matched = [m for name, m in model.named_modules() if name.rsplit(".", 1)[-1] in targets]
    return bool(matched) and all(isinstance(m, Conv1D) for m in matched)


def apply_lora(policy: HFPolicy, config: LoraSettings) -> None:
    """Wrap `policy.model` in a fresh LoRA adapter; only adapter weights stay trainable.

    LoRA's A matrices are drawn from torch's global RNG (B starts at zero, so the wrapped model starts
    equal to the base): the run is deterministic because the driver seeds that RNG first.
    """
    _check_plain(policy)
    targets = resolve_targets(policy.model, config.target_modules)
    peft_config = peft.LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=targets,
        fan_in_fan_out=_all_conv1d(policy.model, targets),
        task_type="CAUSAL_LM",
    )
    with _quiet():
        policy.model = peft.get_peft_model(policy.model, peft_config)
    _record_base(policy.model)


def load_adapter(policy: HFPolicy, adapter_dir: Path) -> None:
    """Attach a saved adapter to the base model in `policy.model`, trainable (resume of a LoRA run).

    The trainable parameters come out in the same order as after `apply_lora`, so an optimizer state
    saved by the interrupted run loads onto them one to one.
    """
    _check_plain(policy)
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter_dir} holds no LoRA adapter (no adapter_config.json)")
    with _quiet():
        policy.model = PeftModel.from_pretrained(policy.model, adapter_dir, is_trainable=True)
    _record_base(policy.model)


def adapter_layout(policy: HFPolicy) -> peft.PeftConfig:
    """The adapter's configuration (rank, targets, ...): enough for another process to build the same
    adapter layout on the same base and then receive the adapter's tensors (`HFPolicy.weight_state`)."""
    if not is_lora(policy):
        raise ValueError("the policy carries no LoRA adapter")
    return copy.deepcopy(policy.model.peft_config["default"])  # type: ignore[union-attr]


def attach_layout(policy: HFPolicy, layout: peft.PeftConfig) -> None:
    """Give a plain policy an adapter of `layout`, frozen (a sampler of a LoRA learner: its adapter
    tensors arrive with every weight push)."""
    _check_plain(policy)
    with _quiet():
        policy.model = peft.get_peft_model(policy.model, copy.deepcopy(layout))
    policy.model.requires_grad_(False)
    policy.model.eval()


def save_base(policy: HFPolicy, out: Path) -> Path:
    """Write the base weights under a LoRA policy as a normal HF folder, without copying the model: the
    base's own tensors, renamed from PEFT's `.base_layer.` back to the plain names, adapters left out."""
    model: PeftModel = policy.model  # type: ignore[assignment]
    base = model.get_base_model()
    state = {k.replace(".base_layer.", "."): v for k, v in base.state_dict().items() if "lora_" not in k}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base.save_pretrained(out, state_dict=state)
    policy.tokenizer.save_pretrained(out)
    return out


def save_policy(policy: HFPolicy, path: Path, *, merged: bool = False) -> Path:
    """Save the policy to `path`: a full HF folder, or (LoRA) the adapter plus tokenizer.

    An adapter is only usable with its base model; when the base has no folder on disk (the built-in
    tiny model is built in memory) it is written to `path / "base"` and the adapter points there.
    With `merged=True` a LoRA policy also writes full merged weights to `path / "merged"`, a normal HF
    folder that loads without peft. Both run on copies, so the live policy keeps its adapter.
    """
    path = Path(path)
    if not is_lora(policy):
        return policy.save(path)
    model: PeftModel = policy.model  # type: ignore[assignment]
    configs = model.peft_config.values()
    if any(not c.base_model_name_or_path or not Path(c.base_model_name_or_path).is_dir() for c in configs):
        base_dir = path / BASE
        _save_full(copy.deepcopy(model).unload(), policy, base_dir)
        for c in configs:
            c.base_model_name_or_path = str(base_dir.resolve())
    policy.save(path)
    if merged:
        _save_full(copy.deepcopy(model).merge_and_unload(), policy, path / MERGED)
    return path


def _save_full(model: PreTrainedModel, policy: HFPolicy, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    policy.tokenizer.save_pretrained(out)
