"""What the driver owns for every method: the problem stream, the typed method state, run buffers that
a resume cuts back to the checkpoint, and one summary; and a new method is one registered class."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import Crash, crash_at

from selfimprove.cli import build_parser, main
from selfimprove.config import SFTRecipe
from selfimprove.methods import METHODS
from selfimprove.methods.base import Method, register_method
from selfimprove.rollout.episode import collate
from selfimprove.rollout.single import demonstration_episode
from selfimprove.tasks import make_task
from selfimprove.train.buffer import JsonlBuffer
from selfimprove.train.job import Job, MethodState
from selfimprove.train.objectives import sft_objective
from selfimprove.train.stream import PoolStream, SequentialStream, pool_index

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
TASK = {"name": "countdown", "params": {"num_numbers": 2, "max_number": 9, "min_target": 1, "max_target": 20}}


def test_streams_hand_out_problems_and_their_position_survives_a_checkpoint() -> None:
    task = make_task(**TASK)
    stream = SequentialStream(100)
    first, second = stream.take(task, 3), stream.take(task, 2)
    assert (first.start, second.start) == (100, 103)
    assert [p.id for p in first.problems + second.problems] == [p.id for p in task.problems("train", 5, start=100)]
    again = SequentialStream(0)
    again.load_state_dict(stream.state_dict())
    assert again.take(task, 1).start == 105
    pool = PoolStream(pool=4, seed=0)
    drawn = [pool.take(task, 2) for _ in range(4)]  # two epochs of a pool of 4
    ids = [p.id for d in drawn for p in d.problems]
    assert sorted(ids[:4]) == sorted(ids[4:]) == sorted(f"countdown-train-{i}" for i in range(4))
    assert [pool_index(i, 4, 0) for i in range(4)] != [pool_index(i, 4, 0) for i in range(4, 8)]  # reshuffled


def test_a_buffer_is_cut_back_to_what_a_checkpoint_counted(tmp_path: Path) -> None:
    buffer = JsonlBuffer(tmp_path / "b.jsonl")
    buffer.extend([{"a": 1}, {"a": 2}, {"a": 3}])
    buffer.truncate(2)
    assert JsonlBuffer(tmp_path / "b.jsonl").read() == [{"a": 1}, {"a": 2}]
    with (tmp_path / "b.jsonl").open("a") as f:
        f.write('{"a": 9')  # a line cut short by a crash
    assert len(JsonlBuffer(tmp_path / "b.jsonl")) == 2
    with pytest.raises(ValueError, match="counted 5"):
        JsonlBuffer(tmp_path / "b.jsonl").truncate(5)


@dataclass
class CountingState(MethodState):
    steps_seen: list[int] = field(default_factory=list)


@register_method
class CountingSFT(Method[SFTRecipe]):
    """A method written in a test: SFT that also logs every step into a buffer and its state."""

    name = "test-counting-sft"
    command = "test-counting-sft"
    help = "SFT that counts (a test's own method)"
    Recipe = SFTRecipe
    State = CountingState

    def step(self, job: Job, step: int) -> dict[str, Any]:
        drawn = job.stream.take(job.task, 2)
        job.buffer("steps").extend([{"step": step, "problems": [p.id for p in drawn.problems]}])
        job.state.steps_seen.append(step)  # type: ignore[attr-defined]
        stats = job.learner.step(collate([demonstration_episode(job.policy, job.task, p) for p in drawn.problems],
                                         job.policy.pad_id), sft_objective)
        return {"train/loss": stats["loss"]}

    def summarise(self, job: Job) -> dict[str, Any]:
        return {"buffered": len(job.buffer("steps")), "steps_seen": list(job.state.steps_seen)}  # type: ignore[attr-defined]


def counting_recipe(run_dir: Path) -> SFTRecipe:
    return SFTRecipe(method="test-counting-sft", run_dir=str(run_dir), model={"path": "tiny:small"}, task=TASK, steps=4,
                     batch_size=2, schedule={"checkpoint_every": 2}, eval={"num_problems": 2, "max_new_tokens": 4})


def test_a_resumed_run_does_not_count_buffered_records_twice(tmp_path: Path) -> None:
    with pytest.raises(Crash):
        CountingSFT(counting_recipe(tmp_path / "run")).run(crash_at(3))
    assert len(JsonlBuffer(tmp_path / "run" / "buffers" / "steps.jsonl")) == 3  # step 3 ran after the step-2 checkpoint
    saved = json.loads((tmp_path / "run" / "checkpoints" / "step_0000002" / "state.json").read_text())
    assert saved["job"]["buffers"] == {"steps": 2} and saved["job"]["method"] == {"steps_seen": [0, 1]}
    assert saved["job"]["stream"] == {"position": 4}
    summary = CountingSFT(counting_recipe(tmp_path / "run")).run()
    records = JsonlBuffer(tmp_path / "run" / "buffers" / "steps.jsonl").read()
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert summary["buffered"] == 4 and summary["steps_seen"] == [0, 1, 2, 3] and summary["method"] == "test-counting-sft"
    # consecutive problems from the stream, across the resume
    assert [p for r in records for p in r["problems"]] == [f"countdown-train-{i}" for i in range(8)]
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary


def test_a_new_method_is_a_command_without_touching_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    assert {METHODS.get(n).command for n in METHODS.names()} <= commands
    assert {"sft", "train", "dpo", "score", "rrr", "star", "pair-sft", "warmup", "run", "test-counting-sft"} <= commands
    recipe = tmp_path / "r.yaml"
    recipe.write_text(json.dumps(counting_recipe(tmp_path / "run").model_dump(mode="json")))
    assert main(["run", str(recipe), "--set", "steps=1"]) == 0
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["steps_seen"] == [0]
    # a recipe for one method is refused by another method's command
    assert main(["sft", str(recipe)]) == 2
    assert "this recipe is for 'test-counting-sft', not 'sft'" in capsys.readouterr().err


def test_run_needs_a_method_and_every_built_in_recipe_names_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from selfimprove.methods.base import find_method, load_method_recipe, method_of_file

    plain = tmp_path / "plain.yaml"
    plain.write_text("run_dir: x\n")
    assert main(["run", str(plain)]) == 2
    assert "names no method" in capsys.readouterr().err
    for path in sorted(RECIPES.glob("*.yaml")):
        text = path.read_text()
        if "\nmethod:" in text:
            method = find_method(method_of_file(path))
            assert load_method_recipe(method, path).method == method.name, path.name
