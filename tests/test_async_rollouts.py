"""Asynchronous rollouts: staleness 0 is exactly the synchronous run; with staleness k the next step's
episodes are sampled while the current one trains, never more than k steps stale, and the loss takes
the ratio against the behaviour log-probs recorded at sampling time."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import without_clocks

from selfimprove.config import ConfigError, RLRecipe, load_recipe
from selfimprove.methods.rl import run_rl
from selfimprove.rollout.episode import collate
from selfimprove.train.objectives import PolicyGradientObjective

TASK = {"name": "countdown", "params": {"num_numbers": 2, "max_number": 9, "min_target": 1, "max_target": 18}}


def _run(tmp_path: Path, name: str, **extra: Any) -> list[dict[str, Any]]:
    recipe = RLRecipe.model_validate({
        "run_dir": str(tmp_path / name), "model": {"path": "tiny:small"}, "task": TASK, "steps": 4, "prompts_per_step": 4,
        "sampling": {"n": 4, "max_new_tokens": 6}, "optim": {"lr": 1e-3}, "eval": {"num_problems": 4, "max_new_tokens": 6},
        **extra})
    run_rl(recipe)
    rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
    return [without_clocks(r) for r in rows]


def test_staleness_zero_is_exactly_the_synchronous_run(tmp_path: Path) -> None:
    assert _run(tmp_path, "sync") == _run(tmp_path, "async0", **{"async": {"max_staleness": 0}})


@pytest.mark.parametrize("k", [1, 2])
def test_episodes_are_never_more_than_k_steps_stale(tmp_path: Path, k: int) -> None:
    rows = [r for r in _run(tmp_path, f"async{k}", **{"async": {"max_staleness": k}}) if "train/staleness" in r]
    staleness = [r["train/staleness"] for r in rows]
    assert staleness[0] == 0 and max(staleness) == k and all(0 <= s <= k for s in staleness)
    assert len(rows) == 4 and all("train/reward" in r for r in rows)


def test_the_loss_uses_the_behaviour_logprobs_off_policy() -> None:
    from selfimprove.config import LossConfig
    from selfimprove.rollout.episode import Episode, Segment
    from selfimprove.train.learner import Forward, Norms

    episode = Episode([Segment("prompt", [1, 2]), Segment("completion", [3, 4], trainable=True, reward=1.0,
                                                          logprobs=[-1.0, -1.0])], group=0, reward=1.0)
    batch = collate([episode], pad_id=0)
    batch.advantages = torch.ones_like(batch.mask)
    current = torch.full_like(batch.mask, -0.5)  # the current policy is likelier: ratio e^0.5, clipped at 1.2
    norms = Norms(1, float(batch.mask.sum()), batch.mask.shape[1])
    on = PolicyGradientObjective(LossConfig())(Forward(current.requires_grad_()), batch, norms)[0]
    off = PolicyGradientObjective(LossConfig(), off_policy=True)(Forward(current), batch, norms)[0]
    assert float(on.detach()) == pytest.approx(-1.0)  # ratio 1: -A
    assert float(off.detach()) == pytest.approx(-1.2)  # min(ratio, clip) * A with the behaviour log-probs


def test_async_is_for_rl_and_not_with_dynamic_sampling(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="sampling.dynamic"):
        load_recipe(RLRecipe, None, ["run_dir=x", "async.max_staleness=1", "sampling.dynamic=true"])
    from selfimprove.methods.r3 import R3, R3Recipe

    recipe = load_recipe(R3Recipe, Path(__file__).resolve().parent.parent / "recipes" / "r3-chain.yaml", ["async.max_staleness=1"])
    with pytest.raises(ConfigError, match="asynchronous rollouts are for"):
        R3(recipe)


KILL_RUN = """
import json, os, signal, sys
from selfimprove.config import RLRecipe
from selfimprove.methods.rl import run_rl
recipe = RLRecipe.model_validate(json.loads(sys.argv[1]))
kill = int(sys.argv[2])

def on_step(done, metrics):
    if done == kill:
        os.kill(os.getpid(), signal.SIGKILL)

run_rl(recipe, on_step if kill else None)
"""


def _recipe(run_dir: Path, **extra: Any) -> dict[str, Any]:
    # An entropy bonus moves the weights at every step, though a new model's rewards (all 0) give GRPO no gradient.
    return {"run_dir": str(run_dir), "model": {"path": "tiny:small"}, "task": TASK, "steps": 6, "prompts_per_step": 3,
            "sampling": {"n": 4, "max_new_tokens": 6}, "optim": {"lr": 1e-2}, "eval": {"num_problems": 4, "max_new_tokens": 6},
            "loss": {"entropy_coef": 0.05},
            "schedule": {"checkpoint_every": 3, "eval_every": 2, "eval_problems": 4}, "async": {"max_staleness": 2}, **extra}


def _subprocess_run(run_dir: Path, kill: int, **extra: Any) -> int:
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", KILL_RUN, json.dumps(_recipe(run_dir, **extra)), str(kill)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode in (0, -9), done.stderr[-3000:]
    return done.returncode


def _in_process_run(run_dir: Path, **extra: Any) -> None:
    """The run in this process, with one torch thread as the subprocesses have (float sums depend on it)."""
    recipe = json.loads(json.dumps(_recipe(run_dir, **extra)))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run_rl(RLRecipe.model_validate(recipe))
    finally:
        torch.set_num_threads(threads)


def _record(run_dir: Path) -> tuple[list[dict[str, Any]], dict[str, torch.Tensor]]:
    from safetensors.torch import load_file

    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return ([without_clocks(r) for r in rows],
            load_file(str(run_dir / "final" / "model.safetensors")))


def _stray_ray() -> set[int]:
    from selfimprove.policy.ray_cluster import stray_ray_processes

    return set(stray_ray_processes())


@pytest.mark.parametrize("engine,every,kill", [
    pytest.param({}, 3, 4, id="hf"),
    pytest.param({"engine": {"kind": "ray", "workers": 1}}, 1, 2, id="ray", marks=pytest.mark.xdist_group("ray")),
])
def test_a_run_killed_with_sigkill_resumes_to_the_uninterrupted_run(tmp_path: Path, engine: dict[str, Any], every: int,
                                                                      kill: int, request: pytest.FixtureRequest) -> None:
    """Staleness 2, SIGKILL one step after a checkpoint. hf: checkpoint at step 3, where the batch of step
    3 is in flight and the sampler's weights (step 2's) are older than the checkpoint's model; ray:
    checkpoint at step 1, where the pinned weights are version 0's, while the workers restart from the
    checkpoint's folder. All must come back for every metric and the final weights to match an
    uninterrupted run. With Ray, the killed run leaves Ray's agents behind, and the resumed run's start
    removes them."""
    engine = {**engine, "schedule": {"checkpoint_every": every, "eval_every": 2, "eval_problems": 4}}
    if "engine" in engine:
        pytest.importorskip("ray")
        request.getfixturevalue("ray_cluster")  # the uninterrupted run shares the tests' cluster
        _in_process_run(tmp_path / "whole", **engine)
        before = _stray_ray()
    else:
        _subprocess_run(tmp_path / "whole", 0)
    assert _subprocess_run(tmp_path / "killed", kill, **engine) == -9
    saved = torch.load(tmp_path / "killed" / "checkpoints" / f"step_{kill - 1:07d}" / "trainer.pt", weights_only=False)
    assert saved["plan"]["async"]["sampler_weights"]  # the case this test is for: the sampler lags the model
    if "engine" in engine:
        deadline = time.time() + 30
        while time.time() < deadline and not _stray_ray() - before:
            time.sleep(0.5)  # the killed run's raylet notices and exits; its agents stay
        left = _stray_ray() - before
        assert left, "a SIGKILLed Ray run should leave its agents behind (else this shows nothing)"
    _subprocess_run(tmp_path / "killed", 0, **engine)
    if "engine" in engine:
        assert not left & _stray_ray()  # the resumed run's start removed them
    whole, killed = _record(tmp_path / "whole"), _record(tmp_path / "killed")
    assert [r["step"] for r in killed[0]] == [r["step"] for r in whole[0]]
    assert killed[0] == whole[0]  # every metric, the periodic and final evaluations included
    assert all(torch.equal(killed[1][k], whole[1][k]) for k in whole[1])
    staleness = [r["train/staleness"] for r in whole[0] if "train/staleness" in r]
    assert max(staleness) == 2
    state = json.loads((tmp_path / "whole" / "checkpoints" / "step_0000006" / "state.json").read_text())

    assert state["job"]["stream"] == {"position": 18}  # 6 steps x 3 prompts: nothing drawn for a step past the last


def test_the_async_sampler_keeps_its_weights_while_evaluation_uses_the_newest(ray_cluster: None) -> None:
    """On a Ray pool the rollout thread samples with pinned weights; anything else (evaluation) samples
    with the learner's newest, even while a batch is in flight."""
    from selfimprove.policy.base import SamplingParams
    from selfimprove.policy.load import load_hf
    from selfimprove.policy.ray_engine import RayEngine
    from selfimprove.train.async_rollouts import AsyncRollouts

    pool = RayEngine(load_hf("tiny:small", seed=0), workers=2, seed=0)
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=6)
    prompts = ["3 4 -> 7:", "9 2 -> 11:"]
    rollouts: AsyncRollouts[list[Any]] = AsyncRollouts(pool, 1, 0, last_step=5)
    try:
        first, _ = rollouts.next(0, lambda sampler: (lambda: sampler.generate(prompts, greedy)))
        with torch.no_grad():
            for p in pool.local.module.parameters():
                p.add_(0.2 * torch.randn_like(p))
        pool.load_weights(pool.local.weight_state(), 1)
        evaluation = pool.generate(prompts, greedy)  # while step 1's batch may be in flight
        second, staleness = rollouts.next(1, lambda sampler: (lambda: sampler.generate(prompts, greedy)))
        assert {c.version for c in first} == {0} and {c.version for c in second} == {0} and staleness == 1
        assert {c.version for c in evaluation} == {1}
        assert [c.token_ids for c in evaluation] == [c.token_ids for c in pool.local.generate(prompts, greedy)]
        rollouts.wait()
    finally:
        rollouts.close()
        pool.close()


def test_the_rollout_thread_stops_before_the_pool_closes(ray_cluster: None, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """At the end of a run the sampling thread is joined first, then the pool is closed (closing the
    pool under a thread that still samples broke the thread's calls)."""
    from selfimprove.policy.ray_engine import RayEngine
    from selfimprove.train.async_rollouts import AsyncRollouts

    order: list[str] = []
    for cls, name in ((AsyncRollouts, "rollouts"), (RayEngine, "pool")):
        original = cls.close
        monkeypatch.setattr(cls, "close", lambda self, _o=original, _n=name: (order.append(_n), _o(self))[1])
    _in_process_run(tmp_path / "run", engine={"kind": "ray", "workers": 1}, steps=2)
    assert order == ["rollouts", "pool"]


def test_nothing_is_sampled_past_the_step_that_spends_the_budget(tmp_path: Path) -> None:
    rows = _run(tmp_path, "budget", max_sampled_tokens=40, **{"async": {"max_staleness": 1}})
    steps = [r["step"] for r in rows if "train/loss" in r]
    state = json.loads((tmp_path / "budget" / "checkpoints" / f"step_{steps[-1]:07d}" / "state.json").read_text())
    assert steps[-1] < 4 and state["job"]["stream"] == {"position": 4 * steps[-1]}  # 4 prompts per step, none ahead
