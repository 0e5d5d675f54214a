"""Checkpoints written atomically (temp folder, then rename) that resume a run exactly.

A checkpoint holds the model as a normal HF folder, the optimizer and scheduler, every RNG state the
run uses, the step and the data position. A crash mid-write leaves only a `.tmp` folder, never a
half-written checkpoint that `latest_checkpoint` would pick.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfimprove.policy.base import Sampler
from selfimprove.policy.hf import HFPolicy
from selfimprove.train.learner import Learner

PREFIX = "step_"


def rng_state(policy: Sampler) -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "sampler": policy.rng_state(),
    }


def restore_rng(state: dict[str, Any], policy: Sampler) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    policy.set_rng_state(state["sampler"])


def save_checkpoint(
    directory: str | Path, step: int, policy: HFPolicy, learner: Learner, state: dict[str, Any], *, keep: int = 2
) -> Path:
    """Write `directory/step_XXXXXXX` atomically and keep only the newest `keep` checkpoints."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{PREFIX}{step:07d}"
    tmp = directory / f".{final.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    policy.save(tmp / "model")
    torch.save({"learner": learner.state_dict(), "rng": rng_state(policy)}, tmp / "trainer.pt")
    (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    for old in list_checkpoints(directory)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(directory: str | Path) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(directory: str | Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def load_checkpoint(path: str | Path, policy: HFPolicy, learner: Learner) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNGs into objects built from `path/model`; return the run state."""
    path = Path(path)
    blob = torch.load(path / "trainer.pt", weights_only=False)
    learner.load_state_dict(blob["learner"])
    restore_rng(blob["rng"], policy)
    return json.loads((path / "state.json").read_text())
