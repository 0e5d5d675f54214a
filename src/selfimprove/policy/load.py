"""Engines by name: build a policy from a model source (a local HF folder, or `tiny` / `tiny:small` for a
new built-in model). A recipe's `engine.kind` picks the entry; `hf` is the in-process engine."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

from selfimprove.policy.hf import HFPolicy
from selfimprove.policy.tiny import build_tiny_model
from selfimprove.registry import Registry

BUILTIN = ("tiny", "tiny:small", "tiny:default")


class EngineFactory(Protocol):
    def __call__(self, source: str, *, device: str, dtype: str, chat: bool, seed: int, **options: Any) -> HFPolicy: ...


ENGINES: Registry[EngineFactory] = Registry("engine")


def is_builtin(source: str) -> bool:
    return source in BUILTIN


@ENGINES.register("hf")
def load_hf(source: str, *, device: str = "cpu", dtype: str = "float32", chat: bool = False, seed: int = 0,
            **options: Any) -> HFPolicy:
    """The HF engine on a folder, or a freshly initialised built-in tiny model (`tiny`, `tiny:small`)."""
    if options:
        raise ValueError(f"the hf engine takes no options, got {sorted(options)}")
    if device == "cuda" and "LOCAL_RANK" in os.environ:  # torchrun: each rank on its own GPU
        device = f"cuda:{int(os.environ['LOCAL_RANK'])}"
    if is_builtin(source):
        preset = "small" if source == "tiny:small" else "default"
        model, tokenizer = build_tiny_model(preset, seed=seed)  # type: ignore[arg-type]
        return HFPolicy(model.to(device), tokenizer, chat=chat, seed=seed)
    return HFPolicy.load(Path(source), device=device, dtype=dtype, chat=chat, seed=seed)


@ENGINES.register("ray")
def load_ray(source: str, *, device: str = "cpu", dtype: str = "float32", chat: bool = False, seed: int = 0,
             workers: int = 2, address: str | None = None, cpus_per_worker: float = 1.0) -> Any:
    """The learner's HF model in this process, sampling and verification on `workers` Ray actors."""
    from selfimprove.policy.ray_engine import RayEngine

    local = load_hf(source, device=device, dtype=dtype, chat=chat, seed=seed)
    return RayEngine(local, workers=workers, seed=seed, address=address, cpus_per_worker=cpus_per_worker,
                     device=device, dtype=dtype)


@ENGINES.register("vllm")
def load_vllm(source: str, *, device: str = "cuda", dtype: str = "bfloat16", chat: bool = False, seed: int = 0,
              gpu_memory_utilization: float = 0.3, sleep: bool = False) -> Any:
    """The learner's HF model on the GPU, sampling with vLLM beside it (GPU only; the `vllm` extra)."""
    try:
        import vllm  # noqa: F401
    except ImportError:
        raise ValueError("engine.kind vllm needs vLLM on a CUDA machine: pip install -e '.[vllm]' (its own environment)") from None
    from selfimprove.policy.vllm_engine import VLLMEngine

    local = load_hf(source, device=device if device != "cpu" else "cuda", dtype=dtype, chat=chat, seed=seed)
    return VLLMEngine(local, seed=seed, gpu_memory_utilization=gpu_memory_utilization, sleep=sleep, dtype=dtype)


def load_engine(kind: str, source: str | Path, *, device: str = "cpu", dtype: str = "float32", chat: bool = False,
                seed: int = 0, **options: Any) -> HFPolicy:
    """Build the named engine on `source`."""
    return ENGINES.get(kind)(str(source), device=device, dtype=dtype, chat=chat, seed=seed, **options)
