"""Engines behind one boundary: `Sampler` and `TrainableModel` (base.py); the HF engine implements both."""

from selfimprove.policy.base import Completion, Engine, SamplingParams, Sampler, TrainableModel
from selfimprove.policy.hf import HFPolicy

__all__ = ["Completion", "Engine", "HFPolicy", "SamplingParams", "Sampler", "TrainableModel"]
