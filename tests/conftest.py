"""Shared fixtures: tiny models written by the tests themselves (no hub, no downloads)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def small_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from selfimprove.policy.tiny import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "small", preset="small", seed=0)


@pytest.fixture()
def small_policy(small_model_dir: Path):
    from selfimprove.policy.hf import HFPolicy

    return HFPolicy.load(small_model_dir, seed=0)
