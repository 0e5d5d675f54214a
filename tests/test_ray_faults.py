"""Ray faults: a hung worker is killed and replaced and, when the pool cannot recover, the run stops with
one line and a log file. (A run killed with SIGKILL leaves Ray processes that the next start removes:
tests/test_async_rollouts.py checks it on the killed asynchronous run it resumes.)"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from selfimprove.policy.load import load_hf  # noqa: E402
from selfimprove.policy.ray_cluster import free_cpus  # noqa: E402
from selfimprove.policy.ray_engine import PoolError, RayEngine  # noqa: E402
from selfimprove.tasks import make_task  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PARAMS = {"num_numbers": 2, "max_number": 9, "min_target": 1, "max_target": 18}


def test_a_hung_worker_is_killed_and_replaced_until_the_pool_gives_up(ray_cluster: None) -> None:
    pool = RayEngine(load_hf("tiny:small", seed=0), workers=2, seed=0, call_timeout=1.0, max_retries=0)
    try:
        task = make_task("helpers:SlowTask", PARAMS)
        problems = task.problems("train", 1)
        with pytest.raises(PoolError, match="rollout worker 0 timed out 1 time in a row"):
            pool.verify_many(task, problems, ["1+1"])
        assert pool.restarts == 1
        # Every hung worker was killed: had one been left, its CPU would be taken and a replacement
        # could not have started on this 2-CPU cluster; the pool still answers.
        assert make_task("countdown", PARAMS).verify(problems[0], "1+1") == pool.verify_many(make_task("countdown", PARAMS),
                                                                                              problems, ["1+1"])[0]
    finally:
        pool.close()
    assert free_cpus(2, wait=10) == 2


def test_a_pool_that_cannot_recover_ends_the_run_with_one_line_and_a_log(ray_cluster: None, tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str],
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from selfimprove.cli import main

    monkeypatch.setenv("SELFIMPROVE_LOG_DIR", str(tmp_path / "logs"))
    code = main(["train", str(ROOT / "recipes" / "countdown-grpo.yaml"), "--set", "model.path=tiny:small", "--set", "steps=1",
                 "--set", "prompts_per_step=2", "--set", "sampling.n=2", "--set", "eval.num_problems=2",
                 "--set", "engine.kind=ray", "--set", "engine.workers=1", "--set", "engine.max_retries=1",
                 "--set", "task.name=helpers:WorkerKillingTask", "--set", f"task.params={PARAMS}",
                 "--set", f"run_dir={tmp_path / 'run'}"])
    time.sleep(2)  # Ray's listener thread reports the dead workers a moment later
    captured = capsys.readouterr()
    err = captured.err
    lines = [line for line in err.splitlines() if line.startswith("selfimprove:")]
    assert code == 1, err[-3000:]
    assert len(lines) == 1, err[-3000:]
    assert lines[0].startswith("selfimprove: rollout pool failed: engine.kind ray: rollout worker 0 died 2 times in a row")
    assert "\x1b[" not in err + captured.out and "(raylet)" not in captured.out  # Ray's own colour printing is logged instead
    log = Path(re.search(r"traceback in (\S+)\)", lines[0]).group(1))
    assert log.is_file() and "PoolError" in log.read_text()
    assert free_cpus(2, wait=10) == 2  # the run closed its pool


def test_a_reward_function_failing_on_a_worker_stops_the_run_as_it_would_here(ray_cluster: None, tmp_path: Path) -> None:
    """The user's code failing on a worker is the user's error (checkpoint, one line, exit 2), not a pool fault."""
    import json

    from selfimprove.errors import RewardError

    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"q": f"{a}+{a}", "a": 2 * a}) + "\n" for a in range(40)))
    task = make_task("dataset", {"path": str(data), "prompt_field": "q", "answer_field": "a", "reward": "helpers:broken_reward",
                                 "min_test_problems": 1})
    pool = RayEngine(load_hf("tiny:small", seed=0), workers=1, seed=0)
    try:
        with pytest.raises(RewardError, match="broken_reward .* raised ConnectionError: the grading service is down"):
            pool.verify_many(task, task.problems("train", 2), ["1", "2"])
    finally:
        pool.close()
