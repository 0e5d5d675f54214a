"""Engines behind one boundary: `Sampler` and `TrainableModel` (base.py); the HF engine implements both.

`HFPolicy` is imported on first use, so code that only needs the protocols (recipes, the CLI's
validation) does not load torch and transformers.
"""

from typing import Any

from selfimprove.policy.base import Completion, Engine, SamplingParams, Sampler, TrainableModel

__all__ = ["Completion", "Engine", "HFPolicy", "SamplingParams", "Sampler", "TrainableModel"]


def __getattr__(name: str) -> Any:
    if name == "HFPolicy":
        from selfimprove.policy.hf import HFPolicy

        return HFPolicy
    raise AttributeError(f"module 'selfimprove.policy' has no attribute {name!r}")
