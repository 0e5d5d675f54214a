"""Checkpoints that resume a run exactly, and survive crashes, corruption and a full disk.

A checkpoint holds the model as a normal HF folder, the optimizer and scheduler, every RNG state the
run uses, the step and the data position, plus `manifest.json`: each file's size and SHA-256.

- Written atomically: into `.step_N.tmp`, then renamed. A crash mid-write leaves only the `.tmp`
  folder, which the next save or resume removes.
- Pruned before a save, so that a disk that filled up recovers on the rerun: older checkpoints are
  removed until `keep - 1` remain (at least one), the new one is written, then the count is `keep`.
  Removal renames a folder to `.trash-*` first (one atomic step) and deletes it after, so a kill
  during pruning never leaves a half-deleted `step_N/` that looks like a checkpoint; leftovers are
  removed on the next save or resume.
- Verified on resume: `latest_intact_checkpoint` checks the newest checkpoint's manifest and falls
  back, with a warning, to the newest one whose files all match.
- A full disk while writing (ENOSPC, or torch's "file write failed") becomes `DiskFullError`.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from selfimprove.errors import DiskFullError
from selfimprove.policy.base import Sampler
from selfimprove.policy.hf import HFPolicy
from selfimprove.train.learner import Learner

logger = logging.getLogger(__name__)

PREFIX = "step_"
MANIFEST = "manifest.json"
TRASH = ".trash-"


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


# --------------------------------------------------------------------------------------- manifests
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path) -> None:
    """Record every file's size and SHA-256 (relative paths) in `folder/manifest.json`."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)
    entries = {str(p.relative_to(folder)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    (folder / MANIFEST).write_text(json.dumps({"files": entries}, indent=1))


def check_manifest(folder: Path) -> str | None:
    """Why a checkpoint is damaged (a file missing, truncated or changed), or None when it is intact.
    Checkpoints written before manifests existed are taken as intact."""
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        files = json.loads(path.read_text())["files"]
    except (ValueError, KeyError, TypeError):
        return "its manifest is unreadable"
    for name, entry in files.items():
        file = folder / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != entry["size"]:
            return f"{name} has {file.stat().st_size} bytes, {entry['size']} were written"
        if _sha256(file) != entry["sha256"]:
            return f"{name} does not match its checksum"
    return None


# --------------------------------------------------------------------------------------- folders
def _remove(folder: Path) -> None:
    """Delete a folder so that no half-deleted checkpoint is ever visible: rename, then delete."""
    trash = folder.with_name(f"{TRASH}{folder.name}")
    shutil.rmtree(trash, ignore_errors=True)
    folder.rename(trash)
    shutil.rmtree(trash, ignore_errors=True)


def clean_leftovers(directory: Path) -> None:
    """Remove what an interrupted save or prune left: `.tmp` and `.trash-` folders, and `step_N`
    folders without a state file (from an interrupted prune of an older version)."""
    if not directory.is_dir():
        return
    for p in directory.iterdir():
        if not p.is_dir():
            continue
        leftover = p.name.startswith(TRASH) or (p.name.startswith(".") and p.name.endswith(".tmp"))
        if leftover or (p.name.startswith(PREFIX) and not (p / "state.json").is_file()):
            shutil.rmtree(p, ignore_errors=True)


def list_checkpoints(directory: str | Path) -> list[Path]:
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [p for p in directory.iterdir() if p.is_dir() and p.name.startswith(PREFIX) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX) :]))


def latest_checkpoint(directory: str | Path) -> Path | None:
    found = list_checkpoints(directory)
    return found[-1] if found else None


def latest_intact_checkpoint(directory: str | Path) -> Path | None:
    """The newest checkpoint whose files match its manifest (for resuming). Damaged newer ones are
    reported with a warning and removed, so the next save cannot prune the intact one instead."""
    for path in reversed(list_checkpoints(directory)):
        damage = check_manifest(path)
        if damage is None:
            return path
        logger.warning("checkpoint %s is damaged (%s): removed; resuming from an older one", path, damage)
        _remove(path)
    return None


# --------------------------------------------------------------------------------------- save / load
def _raise_if_disk_full(err: BaseException, where: Path) -> None:
    full = (isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT)) or (
        isinstance(err, RuntimeError) and "write failed" in str(err)
    )
    if full:
        raise DiskFullError(
            f"no space left while writing a checkpoint in {where}: free space and rerun the same command "
            f"(it prunes old checkpoints first and resumes), or lower schedule.keep_checkpoints"
        ) from err


def save_checkpoint(
    directory: str | Path, step: int, policy: HFPolicy, learner: Learner, state: dict[str, Any], *, keep: int = 2,
    extra: Any = None,
) -> Path:
    """Write `directory/step_XXXXXXX` atomically with its manifest; keep the newest `keep` checkpoints.
    `extra` is a method's own state that JSON cannot hold (tensors, episodes in flight), kept in
    `trainer.pt` and handed back by `load_checkpoint` as `"plan"`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    clean_leftovers(directory)
    final = directory / f"{PREFIX}{step:07d}"
    for old in [p for p in list_checkpoints(directory) if p != final][: -max(1, keep - 1)]:
        _remove(old)
    tmp = directory / f".{final.name}.tmp"
    try:
        tmp.mkdir()
        policy.save(tmp / "model")
        torch.save({"learner": learner.state_dict(), "rng": rng_state(policy), "plan": extra}, tmp / "trainer.pt")
        (tmp / "state.json").write_text(json.dumps({**state, "step": step}, indent=2))
        write_manifest(tmp)
        with open(tmp / MANIFEST, "rb") as f:
            os.fsync(f.fileno())
    except (OSError, RuntimeError) as err:
        shutil.rmtree(tmp, ignore_errors=True)
        _raise_if_disk_full(err, directory)
        raise
    if final.exists():
        _remove(final)
    tmp.rename(final)
    for old in list_checkpoints(directory)[:-keep]:
        _remove(old)
    return final


def load_checkpoint(path: str | Path, policy: HFPolicy, learner: Learner) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNGs into objects built from `path/model`; return the run state."""
    path = Path(path)
    blob = torch.load(path / "trainer.pt", weights_only=False)
    learner.load_state_dict(blob["learner"])
    restore_rng(blob["rng"], policy)
    return {**json.loads((path / "state.json").read_text()), "plan": blob.get("plan")}
