"""Faults a long run meets: a second run on its folder, a changed recipe on resume, a damaged checkpoint,
a torn metrics line, a full disk, a kill while pruning, SIGTERM, and wall time across restarts."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import Crash, crash_at

from selfimprove.cli import main
from selfimprove.config import SFTRecipe
from selfimprove.errors import DiskFullError, RunDirError
from selfimprove.methods.sft import run_sft
from selfimprove.train import checkpoint as ckpt
from selfimprove.train.checkpoint import MANIFEST, check_manifest, latest_intact_checkpoint, list_checkpoints
from selfimprove.train.run_dir import allow_changed_recipe, changed_keys, run_lock
from selfimprove.train.runlog import read_metrics

ROOT = Path(__file__).resolve().parent.parent
TASK = {"name": "countdown", "params": {"num_numbers": 2, "max_number": 20, "min_target": 1, "max_target": 30}}


def recipe(run_dir: Path, steps: int = 4, **changes: Any) -> SFTRecipe:
    data: dict[str, Any] = {
        "run_dir": str(run_dir), "model": {"path": "tiny:small"}, "task": TASK, "steps": steps, "batch_size": 4,
        "optim": {"lr": 1e-3}, "schedule": {"checkpoint_every": 2, "keep_checkpoints": 2},
        "eval": {"num_problems": 2, "batch_size": 2, "max_new_tokens": 4},
    }
    for key, value in changes.items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and isinstance(data.get(key), dict) else value
    return SFTRecipe.model_validate(data)


def crashed_run(run_dir: Path, at: int = 3) -> None:
    with pytest.raises(Crash):
        run_sft(recipe(run_dir), crash_at(at))


# --------------------------------------------------------------------------------------- lock
def test_a_second_run_on_the_same_run_dir_is_refused(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom selfimprove.train.run_dir import run_lock\n"
         f"with run_lock({str(run_dir)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=rf"in use by another run \(pid {holder.pid}\)"):
            run_sft(recipe(run_dir))
    finally:
        holder.kill()
        holder.wait()
    run_sft(recipe(run_dir, steps=2))  # the lock died with its process: no stale lock
    assert (run_dir / "summary.json").is_file()


def test_the_lock_is_reentrant_within_one_process(tmp_path: Path) -> None:
    with run_lock(tmp_path / "r"), run_lock(tmp_path / "r"):
        pass
    with run_lock(tmp_path / "r"):  # released after the outer exit
        pass


# --------------------------------------------------------------------------------------- changed recipe
def test_resume_refuses_a_changed_recipe_and_names_the_keys(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    crashed_run(run_dir)
    changed = recipe(run_dir, seed=1, optim={"lr": 5e-4})
    with pytest.raises(RunDirError, match=r"changed: optim.lr 0.001 -> 0.0005, seed 0 -> 1\)"):
        run_sft(changed)
    with allow_changed_recipe():
        summary = run_sft(changed)
    assert summary["steps"] == 4


def test_a_run_saved_before_a_section_existed_resumes(tmp_path: Path) -> None:
    """A run begun by an older version has no `env` in its config.yaml; the new default (None) is no change."""
    run_dir = tmp_path / "run"
    crashed_run(run_dir)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved.pop("env") is None
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved))
    assert run_sft(recipe(run_dir))["steps"] == 4


def test_steps_schedule_and_eval_may_change_on_resume(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    crashed_run(run_dir)
    summary = run_sft(recipe(run_dir, steps=6, schedule={"checkpoint_every": 3}, eval={"num_problems": 3}))
    assert summary["steps"] == 6


def test_changed_keys_flattens_nested_sections() -> None:
    old = {"a": 1, "b": {"c": 2, "d": [1, 2]}, "e": {}}
    new = {"a": 1, "b": {"c": 3, "d": [1, 2]}, "f": 4}
    keys = [k for k, _, _ in changed_keys(old, new)]
    assert keys == ["b.c", "e", "f"]


def test_changed_keys_compares_paths_by_the_folder_they_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "model").mkdir()
    monkeypatch.chdir(tmp_path)
    old = {"model": {"path": "model"}, "steps": 6}
    assert changed_keys(old, {"model": {"path": str(tmp_path / "model")}, "steps": 6}) == []  # one folder, two spellings
    assert [k for k, _, _ in changed_keys(old, {"model": {"path": str(tmp_path)}, "steps": 6})] == ["model.path"]
    assert [k for k, _, _ in changed_keys({"model": {"path": "absent"}}, {"model": {"path": str(tmp_path / "absent")}})] == ["model.path"]


def test_the_cli_flag_allows_a_changed_recipe(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    crashed_run(run_dir)
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe(run_dir, seed=3).model_dump(mode="json")))
    assert main(["sft", str(path)]) == 2
    assert "seed 0 -> 3" in capsys.readouterr().err
    assert main(["sft", str(path), "--allow-changed-recipe"]) == 0


# --------------------------------------------------------------------------------------- checkpoints
def test_every_checkpoint_has_a_manifest_with_checksums(tmp_path: Path) -> None:
    run_sft(recipe(tmp_path / "run", steps=2))
    (newest,) = list_checkpoints(tmp_path / "run" / "checkpoints")
    files = json.loads((newest / MANIFEST).read_text())["files"]
    assert {"trainer.pt", "state.json", "model/model.safetensors", "model/config.json"} <= set(files)
    assert all(len(entry["sha256"]) == 64 and entry["size"] > 0 for entry in files.values())
    assert check_manifest(newest) is None


def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run_dir = tmp_path / "run"
    with pytest.raises(Crash):
        run_sft(recipe(run_dir, steps=6), crash_at(5))
    older, newest = list_checkpoints(run_dir / "checkpoints")
    weights = newest / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0xFF  # one flipped byte: same size, wrong checksum
    weights.write_bytes(bytes(data))
    assert "does not match its checksum" in (check_manifest(newest) or "")
    with caplog.at_level(logging.WARNING):
        assert latest_intact_checkpoint(run_dir / "checkpoints") == older
    assert "damaged" in caplog.text and not newest.exists()  # removed, so pruning cannot drop the intact one
    summary = run_sft(recipe(run_dir, steps=6))
    assert summary["steps"] == 6
    steps = [row["step"] for row in read_metrics(run_dir / "metrics.jsonl") if "train/loss" in row]
    assert steps == [1, 2, 3, 4, 5, 6]  # resumed from step 2: the log reads as one run


def test_a_torn_last_metrics_line_is_dropped_on_resume(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    crashed_run(run_dir)
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write('{"step": 3, "train/lo')  # a kill in the middle of a write
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2, 3]
    run_sft(recipe(run_dir))
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "train/loss" in r]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]


def test_wall_time_continues_across_resume(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    crashed_run(run_dir)
    before = {r["step"]: r for r in read_metrics(run_dir / "metrics.jsonl")}
    time.sleep(0.2)
    run_sft(recipe(run_dir))
    after = {r["step"]: r for r in read_metrics(run_dir / "metrics.jsonl") if "train/loss" in r}
    assert after[3]["seconds"] >= before[2]["seconds"] and after[3]["time"] >= before[2]["time"]
    assert after[4]["seconds"] > after[3]["seconds"]


def test_leftovers_of_an_interrupted_save_or_prune_are_removed(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    crashed_run(run_dir)
    folder = run_dir / "checkpoints"
    (folder / ".trash-step_0000001").mkdir()  # a kill during pruning, after the rename
    (folder / "step_0000000").mkdir()  # a kill during pruning by an older version: no state.json
    (folder / ".step_0000004.tmp").mkdir()  # a kill during a save
    run_sft(recipe(run_dir))
    assert sorted(p.name for p in folder.iterdir()) == ["step_0000002", "step_0000004"]


def test_old_checkpoints_are_pruned_before_a_save(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = tmp_path / "run"
    run_sft(recipe(run_dir, steps=4))  # checkpoints at 2 and 4 (keep 2)
    seen: list[list[str]] = []
    real_save = ckpt.HFPolicy.save

    def save(self: Any, path: Path) -> Path:
        seen.append(sorted(p.name for p in ckpt.list_checkpoints(Path(path).parent.parent)))
        return real_save(self, path)

    monkeypatch.setattr(ckpt.HFPolicy, "save", save)
    run_sft(recipe(run_dir, steps=6))
    assert seen[0] == ["step_0000004"]  # step 2 went before step 6 was written, so a full disk recovers
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["step_0000004", "step_0000006"]


def test_a_full_disk_says_so_in_one_line_and_a_rerun_continues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "run"
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe(run_dir, steps=4).model_dump(mode="json")))
    real_save = ckpt.torch.save
    calls = [0]

    def full(obj: Any, target: Any, *args: Any, **kwargs: Any) -> None:
        calls[0] += 1
        if calls[0] == 2:  # the second checkpoint: torch's own error on ENOSPC
            raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: file write failed")
        real_save(obj, target, *args, **kwargs)

    monkeypatch.setattr(ckpt.torch, "save", full)
    assert main(["sft", str(path)]) == 2
    err = [line for line in capsys.readouterr().err.strip().splitlines() if line.startswith("selfimprove:")]
    assert len(err) == 1 and err[0].startswith("selfimprove: disk full: no space left while writing a checkpoint in "), err
    assert [p.name for p in (run_dir / "checkpoints").iterdir()] == ["step_0000002"]  # no .tmp left behind
    monkeypatch.setattr(ckpt.torch, "save", real_save)
    assert main(["sft", str(path)]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 4


def test_an_oserror_enospc_is_a_disk_full_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def enospc(*args: Any, **kwargs: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "write_manifest", enospc)
    with pytest.raises(DiskFullError, match="no space left while writing a checkpoint"):
        run_sft(recipe(tmp_path / "run", steps=2))


# --------------------------------------------------------------------------------------- SIGTERM
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)], ids=["sigterm", "ctrl-c"])
def test_sigterm_or_ctrl_c_finish_the_step_write_a_checkpoint_and_exit(tmp_path: Path, sig: int, code: int) -> None:
    run_dir = tmp_path / "run"
    path = tmp_path / "r.yaml"
    long = recipe(run_dir, steps=100000, schedule={"checkpoint_every": 100000})
    path.write_text(yaml.safe_dump(long.model_dump(mode="json")))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "selfimprove"), "sft", str(path)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run_dir / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (metrics.is_file() and len(read_metrics(metrics)) >= 3):
        time.sleep(0.2)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert err.strip().splitlines()[-1] == "selfimprove: interrupted (rerun the same command to resume from the last checkpoint)"
    (saved,) = list_checkpoints(run_dir / "checkpoints")
    logged = max(r["step"] for r in read_metrics(metrics))
    assert int(saved.name.split("_")[1]) == logged >= 3  # the step it was in finished and was saved
