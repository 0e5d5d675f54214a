"""The Ray rollout pool (`engine: {kind: ray}`): the same samples as the in-process engine for the same
seeds, completions in order, weights pushed with versions, a killed worker replaced, verification on the
workers, and a training run that uses it. One local Ray cluster for the whole file (2 CPUs, a small
object store, no auth token written under the home folder)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Iterator

import pytest
import torch

ray = pytest.importorskip("ray")

from helpers import without_clocks  # noqa: E402

from selfimprove.config import RLRecipe  # noqa: E402
from selfimprove.methods.rl import run_rl  # noqa: E402
from selfimprove.policy.base import SamplingParams  # noqa: E402
from selfimprove.policy.load import load_hf  # noqa: E402
from selfimprove.policy.ray_engine import RayEngine, shard_seed, shards  # noqa: E402
from selfimprove.tasks import make_task  # noqa: E402

PROMPTS = [f"{a} {b} -> {a + b}:" for a, b in [(3, 4), (9, 2), (5, 5), (1, 8), (7, 6)]]
TASK = {"name": "countdown", "params": {"num_numbers": 2, "max_number": 9, "min_target": 1, "max_target": 18}}


@pytest.fixture
def pool(ray_cluster: None) -> Iterator[RayEngine]:
    engine = RayEngine(load_hf("tiny:small", seed=0), workers=2, seed=7)
    yield engine
    engine.close()


def test_shards_are_contiguous_and_balanced() -> None:
    assert shards(5, 2) == [range(0, 3), range(3, 5)]
    assert shards(1, 3) == [range(0, 1)]
    assert shard_seed(7, 0, 1) == shard_seed(7, 0, 1) != shard_seed(7, 0, 0)


def test_the_pool_samples_what_the_in_process_engine_samples_with_the_same_seeds(pool: RayEngine) -> None:
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=6)
    calls = pool.rng_state()["calls"]
    assert calls == 0
    got = pool.generate(PROMPTS, params)
    local = pool.local
    expected = []
    for k, part in enumerate(shards(len(PROMPTS), 2)):
        ids = [local.encode_prompt(PROMPTS[i]) for i in part]
        for c in local.generate_ids(ids, params, generator=local.make_generator(shard_seed(7, calls, k))):
            c.prompt_index += part.start
            expected.append(c)
    assert [c.prompt_index for c in got] == [i for i in range(len(PROMPTS)) for _ in range(3)]  # prompt order
    assert [c.token_ids for c in got] == [c.token_ids for c in expected]
    for a, b in zip(got, expected):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)
    assert pool.rng_state()["calls"] == calls + 1


def test_weights_are_pushed_with_their_version(pool: RayEngine) -> None:
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=6)
    with torch.no_grad():
        for p in pool.local.module.parameters():
            p.add_(0.05 * torch.randn_like(p))
    pool.load_weights(pool.local.weight_state(), 5)
    got = pool.generate(PROMPTS, greedy)
    assert {c.version for c in got} == {5}
    assert [c.token_ids for c in got] == [c.token_ids for c in pool.local.generate(PROMPTS, greedy)]


def test_a_killed_worker_is_replaced_and_its_shard_retried(pool: RayEngine, caplog: pytest.LogCaptureFixture) -> None:
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=6)
    pool.load_weights(pool.local.weight_state(), 3)  # the replacement must get these, not the folder's
    with torch.no_grad():
        next(pool.local.module.parameters()).add_(0.1)
    before = pool.generate(PROMPTS, greedy)
    restarts = pool.restarts
    ray.kill(pool.actors[0])
    after = pool.generate(PROMPTS, greedy)
    assert pool.restarts == restarts + 1 and "died" in caplog.text
    assert [c.token_ids for c in after] == [c.token_ids for c in before]  # the new worker got the current weights


def test_a_pool_that_does_not_fit_the_cluster_says_so(pool: RayEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    from selfimprove.policy import ray_engine

    monkeypatch.setattr(ray_engine, "free_cpus", functools.partial(ray_engine.free_cpus, wait=0.5))  # none will come
    with pytest.raises(RuntimeError, match="need 2 CPUs, the Ray cluster has 0 free"):
        RayEngine(pool.local, workers=2, seed=0)


def test_answers_are_verified_on_the_workers(pool: RayEngine) -> None:
    task = make_task(TASK["name"], TASK["params"])
    problems = task.problems("train", 6)
    texts = [p.demonstration_text() if i % 2 else "1+1" for i, p in enumerate(problems)]
    assert pool.verify_many(task, problems, texts) == [task.verify(p, t) for p, t in zip(problems, texts)]


def test_a_training_run_on_the_pool_is_reproducible(ray_cluster: None, tmp_path: Path) -> None:
    def run(name: str) -> list[dict]:
        recipe = RLRecipe.model_validate({
            "run_dir": str(tmp_path / name), "model": {"path": "tiny:small"}, "engine": {"kind": "ray", "workers": 2},
            "task": TASK, "steps": 2, "prompts_per_step": 4, "sampling": {"n": 2, "max_new_tokens": 6},
            "eval": {"num_problems": 4, "max_new_tokens": 6}, "schedule": {"checkpoint_every": 1}})
        run_rl(recipe)
        rows = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        return [without_clocks(r) for r in rows]

    first = run("a")
    assert first == run("b")
    assert any("train/reward" in r for r in first)


def test_a_pinned_view_samples_its_snapshot_and_a_replacement_gets_that_snapshot(pool: RayEngine) -> None:
    """Asynchronous rollouts sample with pinned weights while the learner moves on: a worker replaced
    mid-way loads the pinned snapshot, never the learner's current weights."""
    greedy = SamplingParams(n=1, temperature=0.0, max_new_tokens=6)
    pool.load_weights(pool.local.weight_state(), 3)
    pinned = pool.pinned(pool.snapshot())
    before = pinned.generate(PROMPTS, greedy)
    with torch.no_grad():
        for p in pool.local.module.parameters():
            p.add_(0.2 * torch.randn_like(p))
    pool.load_weights(pool.local.weight_state(), 4)
    newest = pool.generate(PROMPTS, greedy)  # the workers now hold version 4
    ray.kill(pool.actors[0])
    after = pinned.generate(PROMPTS, greedy)
    assert {c.version for c in after} == {3} and {c.version for c in newest} == {4}
    assert [c.token_ids for c in after] == [c.token_ids for c in before]
    assert [c.token_ids for c in newest] != [c.token_ids for c in before]
    assert [c.token_ids for c in newest] == [c.token_ids for c in pool.local.generate(PROMPTS, greedy)]


def test_a_lora_learner_syncs_only_its_adapter_and_samples_like_the_local_engine(ray_cluster: None) -> None:
    """LoRA on the pool: the workers hold the base and the adapter's layout and receive only the adapter's
    tensors; after a learner step the pool samples exactly what the in-process engine samples."""
    from selfimprove.config import LoraConfig, OptimConfig
    from selfimprove.policy.load import local_policy
    from selfimprove.rollout.single import sample_episodes
    from selfimprove.rollout.episode import collate
    from selfimprove.algos.advantages import grpo
    from selfimprove.train.learner import Learner
    from selfimprove.train.objectives import PolicyGradientObjective
    from selfimprove.config import LossConfig

    torch.manual_seed(0)
    local = local_policy("tiny:small", seed=0, lora=LoraConfig(r=4, alpha=8))
    engine = RayEngine(local, workers=2, seed=7)
    try:
        assert hasattr(engine.module, "disable_adapter")  # the learner's module is the PEFT model (KL reference)
        sent = engine.fetch(engine.snapshot())
        assert sent and all("lora_" in k for k in sent)  # the adapter, never the frozen base
        task = make_task(TASK["name"], TASK["params"])
        params = SamplingParams(n=2, temperature=1.0, max_new_tokens=6)
        episodes = sample_episodes(engine, task, task.problems("train", 4), params)
        for i, e in enumerate(episodes):
            e.reward = float(i % 2)
        batch = collate(episodes, engine.pad_id)
        batch.advantages = grpo(batch.rewards, batch.groups, batch.mask)
        learner = Learner(engine, OptimConfig(lr=1e-2), 10, adapter_reference=True)
        rows = ([e.segments[0].token_ids for e in episodes], [e.segments[1].token_ids for e in episodes])
        before = local.logprobs(*rows)
        learner.step(batch, PolicyGradientObjective(LossConfig()))
        after = local.logprobs(*rows)
        assert before != after  # the step moved the adapter (else equal samples would prove nothing)
        assert engine.weights_version == 1
        calls = engine.rng_state()["calls"]
        got = engine.generate(PROMPTS, params)
        expected = []
        for k, part in enumerate(shards(len(PROMPTS), 2)):
            ids = [local.encode_prompt(PROMPTS[i]) for i in part]
            expected += local.generate_ids(ids, params, generator=local.make_generator(shard_seed(7, calls, k)))
        assert {c.version for c in got} == {1}
        assert [c.token_ids for c in got] == [c.token_ids for c in expected]
        for a, b in zip(got, expected):
            assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-5)
    finally:
        engine.close()


def test_a_lora_run_with_a_kl_reference_trains_on_the_pool(ray_cluster: None, tmp_path: Path) -> None:
    """The issue's command, as a recipe: LoRA on `engine.kind: ray` (it crashed after step 1), here with
    a KL term, whose reference is the base with the adapter switched off."""
    recipe = RLRecipe.model_validate({
        "run_dir": str(tmp_path / "run"), "model": {"path": "tiny:small"}, "engine": {"kind": "ray", "workers": 2},
        "lora": {"r": 4, "alpha": 8}, "task": TASK, "steps": 2, "prompts_per_step": 2, "sampling": {"n": 2, "max_new_tokens": 6},
        "loss": {"kl_coef": 0.1}, "eval": {"num_problems": 4, "max_new_tokens": 6}})
    summary = run_rl(recipe)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert summary["steps"] == 2 and all("train/kl" in r for r in rows if "train/loss" in r)
    assert (tmp_path / "run" / "final" / "adapter_config.json").is_file()
