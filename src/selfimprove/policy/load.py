"""Engines by name: build a policy from a model source (a local HF folder, or `tiny` / `tiny:small` for a
new built-in model). A recipe's `engine.kind` picks the entry; `hf` is the in-process engine.

Every engine wraps one local `HFPolicy`, the model the learner trains, and a LoRA adapter is put on that
local model *before* the engine is built (`lora=` a fresh adapter, `adapter=` a saved one to resume), so
an engine that samples elsewhere (a Ray pool, vLLM) knows from the start that it syncs an adapter and
the learner's module is the PEFT model whose `disable_adapter()` gives the KL reference.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from selfimprove.policy.hf import HFPolicy
from selfimprove.policy.tiny import build_tiny_model, preset_of
from selfimprove.registry import Registry

if TYPE_CHECKING:  # peft loads only for runs with an adapter
    from selfimprove.policy.lora import LoraSettings



class EngineFactory(Protocol):
    def __call__(self, source: str, *, device: str, dtype: str, chat: bool, seed: int, lora: LoraSettings | None = None,
                 adapter: str | Path | None = None, **options: Any) -> HFPolicy: ...


ENGINES: Registry[EngineFactory] = Registry("engine")


def is_builtin(source: str) -> bool:
    return preset_of(source) is not None


def local_policy(source: str, *, device: str = "cpu", dtype: str = "float32", chat: bool = False, seed: int = 0,
                 lora: LoraSettings | None = None, adapter: str | Path | None = None) -> HFPolicy:
    """The in-process model on a folder or a new built-in tiny model, with a fresh LoRA adapter (`lora`)
    or a saved one reattached for training (`adapter`, a checkpoint's model folder)."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun: each rank on its own GPU
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    preset = preset_of(source)
    if preset is not None:
        model, tokenizer = build_tiny_model(preset, seed=seed)
        policy = HFPolicy(model.to(device), tokenizer, chat=chat, seed=seed)
    else:
        policy = HFPolicy.load(Path(source), device=device, dtype=dtype, chat=chat, seed=seed)
    if adapter is not None or lora is not None:
        from selfimprove.policy.lora import apply_lora, load_adapter

        if adapter is not None:
            load_adapter(policy, Path(adapter))
        else:
            apply_lora(policy, lora)  # type: ignore[arg-type]
    return policy


@ENGINES.register("hf")
def load_hf(source: str, *, device: str = "cpu", dtype: str = "float32", chat: bool = False, seed: int = 0,
            lora: LoraSettings | None = None, adapter: str | Path | None = None, **options: Any) -> HFPolicy:
    """The HF engine on a folder, or a freshly initialised built-in tiny model (`tiny`, `tiny:small`)."""
    if options:
        raise ValueError(f"the hf engine takes no options, got {sorted(options)}")
    return local_policy(source, device=device, dtype=dtype, chat=chat, seed=seed, lora=lora, adapter=adapter)


@ENGINES.register("ray")
def load_ray(source: str, *, device: str = "cpu", dtype: str = "float32", chat: bool = False, seed: int = 0,
             lora: LoraSettings | None = None, adapter: str | Path | None = None, workers: int = 2,
             address: str | None = None, cpus_per_worker: float = 1.0, call_timeout: float = 600.0,
             max_retries: int = 3) -> Any:
    """The learner's HF model in this process, sampling and verification on `workers` Ray actors."""
    from selfimprove.policy.ray_engine import RayEngine

    local = local_policy(source, device=device, dtype=dtype, chat=chat, seed=seed, lora=lora, adapter=adapter)
    return RayEngine(local, workers=workers, seed=seed, address=address, cpus_per_worker=cpus_per_worker,
                     device=device, dtype=dtype, call_timeout=call_timeout, max_retries=max_retries)


@ENGINES.register("vllm")
def load_vllm(source: str, *, device: str = "cuda", dtype: str = "bfloat16", chat: bool = False, seed: int = 0,
              lora: LoraSettings | None = None, adapter: str | Path | None = None, gpu_memory_utilization: float = 0.3,
              sleep: bool = False) -> Any:
    """The learner's HF model on `device` (`model.device: cuda`), sampling with vLLM beside it (the `vllm`
    extra, in its own environment)."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise ValueError("engine.kind vllm needs vLLM on a CUDA machine: pip install -e '.[vllm]' (its own environment)") from None
    from selfimprove.policy.vllm_engine import VLLMEngine

    local = local_policy(source, device=device, dtype=dtype, chat=chat, seed=seed, lora=lora, adapter=adapter)
    return VLLMEngine(local, seed=seed, gpu_memory_utilization=gpu_memory_utilization, sleep=sleep, dtype=dtype)


def load_engine(kind: str, source: str | Path, *, device: str = "cpu", dtype: str = "float32", chat: bool = False,
                seed: int = 0, lora: LoraSettings | None = None, adapter: str | Path | None = None, **options: Any) -> HFPolicy:
    """Build the named engine on `source` (with a LoRA adapter on its local model when asked)."""
    return ENGINES.get(kind)(str(source), device=device, dtype=dtype, chat=chat, seed=seed, lora=lora, adapter=adapter,
                             **options)
