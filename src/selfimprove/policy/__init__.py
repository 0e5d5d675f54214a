"""Engines behind one boundary: `Sampler` and `TrainableModel` (base.py); the HF engine implements both."""

from selfimprove.policy.base import Completion, SamplingParams, Sampler, TrainableModel
from selfimprove.policy.hf import HFPolicy

__all__ = ["Completion", "HFPolicy", "SamplingParams", "Sampler", "TrainableModel"]
