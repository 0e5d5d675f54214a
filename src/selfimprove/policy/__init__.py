"""Policies: a Hugging Face causal LM behind one small interface (generate, logprobs, save, load)."""

from selfimprove.policy.base import Completion, SamplingParams
from selfimprove.policy.hf import HFPolicy

__all__ = ["Completion", "HFPolicy", "SamplingParams"]
