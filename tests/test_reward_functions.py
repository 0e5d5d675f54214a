"""Users' reward functions as TRL's GRPOTrainer calls them: once per batch with every column as a list,
results as lists, tuples, numpy or torch arrays (None: no value), several functions with weights,
`async def` functions concurrently, a time limit per call, failures counted, and a run whose every call
fails stopped with one line, a log file and a checkpoint."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import pytest

from selfimprove.errors import RewardError
from selfimprove.tasks import make_task
from selfimprove.tasks.reward_calls import RewardFunctions, RewardSpec

ROWS = [{"q": f"{a}+{b}", "a": str(a + b)} for a in range(1, 9) for b in range(1, 9)]
MODULE = '''
import asyncio, time
import numpy as np
import torch
CALLS = []

def exact(prompts, completions, a, **kwargs):
    CALLS.append(len(completions))
    return np.array([1.0 if c.strip() == x else 0.0 for c, x in zip(completions, a)])

def length(prompts, completions, **kwargs):
    return torch.tensor([float(len(c)) for c in completions])

def maybe(prompts, completions, **kwargs):
    return [None if c == "skip" else 0.5 for c in completions]

def short(prompts, completions, **kwargs):
    return [1.0]

def words(prompts, completions, **kwargs):
    return ["1.0" for _ in completions]

def broken(prompts, completions, **kwargs):
    raise RuntimeError("the grader is down")

def slow(prompts, completions, **kwargs):
    time.sleep(5)
    return [1.0 for _ in completions]

async def remote_a(prompts, completions, **kwargs):
    await asyncio.sleep(0.6)
    return [1.0 for _ in completions]

async def remote_b(prompts, completions, **kwargs):
    await asyncio.sleep(0.6)
    return [2.0 for _ in completions]

BLOCKED = []  # filled when `blocking` returns

async def blocking(prompts, completions, **kwargs):
    time.sleep(3)  # blocks its event loop: the time limit must still hold
    BLOCKED.append(True)
    return [1.0 for _ in completions]

def with_signals(prompts, completions, **kwargs):
    import signal  # as math_verify's timeouts do: only allowed on the main thread
    previous = signal.signal(signal.SIGALRM, signal.getsignal(signal.SIGALRM))
    signal.signal(signal.SIGALRM, previous)
    return [1.0 for _ in completions]

def accuracy(prompts, completions, a, **kwargs):
    return [1.0 if c.strip() == x else 0.0 for c, x in zip(completions, a)]

def formatted(prompts, completions, **kwargs):
    return [1.0 if c.strip().isdigit() else 0.0 for c in completions]
'''


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "user_rewards.py").write_text(MODULE)
    monkeypatch.delitem(sys.modules, "user_rewards", raising=False)  # each test imports its own copy
    path = tmp_path / "d.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def _task(path: Path, reward: str | list[str], **params):
    return make_task("dataset", {"path": str(path), "prompt_field": "q", "answer_field": "a", "reward": reward, **params})


def test_one_call_per_batch_with_every_column_and_numpy_or_torch_results(data: Path) -> None:
    task = _task(data, "user_rewards:exact")
    user_rewards = sys.modules["user_rewards"]
    problems = task.problems("train", 5)
    verdicts = task.verify_many(problems, [p.answer if i % 2 else "0" for i, p in enumerate(problems)])
    assert user_rewards.CALLS == [5]  # one call for the batch (it was one per completion)
    assert [v.score for v in verdicts] == [0.0, 1.0, 0.0, 1.0, 0.0]  # a numpy array scored 0 everywhere before
    assert [v.correct for v in verdicts] == [False, True, False, True, False]
    assert verdicts[1].info == {"rewards": {"exact": 1.0}, "reward_failed": False}
    torch_task = _task(data, "user_rewards:length", reward_threshold=2.0)
    assert [v.score for v in torch_task.verify_many(problems[:2], ["ab", "abc"])] == [2.0, 3.0]


def test_several_functions_with_weights_and_none_for_no_value(data: Path) -> None:
    task = _task(data, ["user_rewards:exact", "user_rewards:maybe"], reward_weights=[2.0, 1.0], reward_threshold=2.5)
    p = task.problems("train", 3)
    verdicts = task.verify_many(p, [p[0].answer, "skip", p[2].answer])
    assert [v.score for v in verdicts] == [2.5, 0.0, 2.5]  # 2 * exact + 1 * maybe; "skip": maybe gave None
    assert verdicts[1].info["rewards"] == {"exact": 0.0, "maybe": None} and [v.correct for v in verdicts] == [True, False, True]
    with pytest.raises(Exception, match="reward_weights has 1 weights for 2 reward functions"):
        _task(data, ["user_rewards:exact", "user_rewards:maybe"], reward_weights=[1.0])


@pytest.mark.parametrize(("fn", "why"), [("short", "returned 1 value for 3 completions"),
                                         ("words", "returned str '1.0' for completion 0"),
                                         ("broken", "raised RuntimeError: the grader is down")])
def test_a_bad_call_fails_naming_the_function_and_a_batch_with_no_good_call_stops(data: Path, fn: str, why: str) -> None:
    task = _task(data, [f"user_rewards:{fn}", "user_rewards:maybe"])
    p = task.problems("train", 3)
    verdicts = task.verify_many(p, ["x", "y", "z"])
    assert [v.score for v in verdicts] == [0.5, 0.5, 0.5] and all(v.info["reward_failed"] for v in verdicts)
    assert f"({fn} failed)" in verdicts[0].reason
    alone = _task(data, f"user_rewards:{fn}")
    with pytest.raises(RewardError, match=re.escape(f"{fn} (user_rewards:{fn}) {why}")):
        alone.verify_many(p, ["x", "y", "z"])


def test_async_functions_run_concurrently_and_slow_calls_time_out(data: Path) -> None:
    task = _task(data, ["user_rewards:remote_a", "user_rewards:remote_b", "user_rewards:slow"], reward_timeout=1.0)
    p = task.problems("train", 2)
    began = time.perf_counter()
    verdicts = task.verify_many(p, ["x", "y"])
    seconds = time.perf_counter() - began
    assert [v.score for v in verdicts] == [3.0, 3.0]  # remote_a + remote_b; slow timed out
    assert verdicts[0].info["rewards"]["slow"] is None and "(slow failed)" in verdicts[0].reason
    assert seconds < 1.9  # two 0.6 s async calls side by side, beside the 1 s limit of the slow one


def test_the_names_are_the_functions_own_and_numbered_when_they_repeat() -> None:
    def acc(prompts, completions, **kwargs):
        return [1.0] * len(completions)

    specs = [RewardSpec("m:acc", "acc", acc), RewardSpec("m:acc", "acc_2", acc, 0.5)]
    batch = RewardFunctions(specs).score(["p"], ["c"], {})
    assert batch.totals == [1.5] and batch.values == {"acc": [1.0], "acc_2": [1.0]}
    with pytest.raises(ValueError, match="distinct names"):
        RewardFunctions([specs[0], specs[0]])


def _recipe(data: Path, run_dir: Path, reward: list[str], steps: int = 2) -> list[str]:
    return ["--set", "model.path=tiny:small", "--set", f"run_dir={run_dir}", "--set", f"steps={steps}",
            "--set", "prompts_per_step=2", "--set", "sampling.n=2", "--set", "sampling.max_new_tokens=4",
            "--set", "eval.num_problems=4", "--set", "eval.max_new_tokens=4", "--set", "schedule.checkpoint_every=1",
            "--set", "schedule.eval_problems=4",
            "--set", "task.name=dataset", "--set", "task.params=null", "--set",
            "task.params=" + json.dumps({"path": str(data), "prompt_field": "q", "answer_field": "a", "reward": reward,
                                         "test_fraction": 0.2})]


def test_a_run_logs_each_function_and_counts_failures(data: Path, tmp_path: Path) -> None:
    from selfimprove.cli import main

    root = Path(__file__).resolve().parent.parent
    code = main(["train", str(root / "recipes" / "countdown-grpo.yaml"),
                 *_recipe(data, tmp_path / "run", ["user_rewards:maybe", "user_rewards:broken"])])
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "train/loss" in r]
    assert all(r["train/reward/maybe"] == 0.5 and r["train/reward_failures"] == 4.0 for r in steps)
    assert "train/reward/broken" not in steps[0]
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["reward_failures"] == 8


def test_a_run_whose_every_reward_call_fails_stops_with_one_line_a_log_and_a_checkpoint(
        data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from selfimprove.cli import main

    root = Path(__file__).resolve().parent.parent
    (tmp_path / "flaky_rewards.py").write_text(
        "from pathlib import Path\n"
        "def after_one_step(prompts, completions, **kwargs):\n"
        "    calls = Path('calls'); calls.write_text(calls.read_text() + 'x' if calls.exists() else 'x')\n"
        "    if len(calls.read_text()) > 1:\n"
        "        raise ConnectionError('the grading service is down')\n"
        "    return [0.0 for _ in completions]\n")
    monkeypatch.setenv("SELFIMPROVE_LOG_DIR", str(tmp_path / "logs"))
    code = main(["train", str(root / "recipes" / "countdown-grpo.yaml"),
                 *_recipe(data, tmp_path / "run", ["flaky_rewards:after_one_step"], steps=4),
                 "--set", "schedule.checkpoint_every=3"])  # step 1 is saved only because the run stops after it
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("selfimprove:")]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("selfimprove: reward function error: every reward function failed on a batch of 4 completions; "
                               "after_one_step (flaky_rewards:after_one_step) raised ConnectionError: the grading service is down")
    log = Path(re.search(r"traceback in (\S+)\)", lines[0]).group(1))
    assert "ConnectionError" in log.read_text()
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step_0000001"]  # the finished step


def test_a_blocking_async_function_times_out_and_signal_using_ones_run_on_the_main_thread(data: Path) -> None:
    task = _task(data, ["user_rewards:blocking", "user_rewards:with_signals"], reward_timeout=0.5)
    p = task.problems("train", 2)
    verdicts = task.verify_many(p, ["x", "y"])
    import user_rewards

    assert user_rewards.BLOCKED == []  # the batch came back before the blocked loop did
    assert [v.score for v in verdicts] == [1.0, 1.0] and "(blocking failed)" in verdicts[0].reason  # with_signals ran


def test_correctness_can_be_decided_by_one_function(data: Path) -> None:
    """TRL's usual [accuracy, format] pair: a well-formatted wrong answer must not count as correct."""
    both = ["user_rewards:accuracy", "user_rewards:formatted"]
    p = task_problems = _task(data, both).problems("train", 2)
    wrong = "999"
    by_sum = _task(data, both, reward_threshold=1.0).verify_many(p, [p[0].answer, wrong])
    by_accuracy = _task(data, both, reward_threshold=1.0, correct_by="accuracy").verify_many(task_problems, [p[0].answer, wrong])
    assert [v.correct for v in by_sum] == [True, True] and [v.correct for v in by_accuracy] == [True, False]
    assert [v.score for v in by_accuracy] == [2.0, 1.0]
    with pytest.raises(Exception, match="correct_by 'nope' names none of the reward functions"):
        _task(data, both, correct_by="nope")
