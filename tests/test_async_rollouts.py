"""Asynchronous rollouts: staleness 0 is exactly the synchronous run; with staleness k the next step's
episodes are sampled while the current one trains, never more than k steps stale, and the loss takes
the ratio against the behaviour log-probs recorded at sampling time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

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
    return [{k: v for k, v in r.items() if k not in ("time", "seconds")} for r in rows]


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
