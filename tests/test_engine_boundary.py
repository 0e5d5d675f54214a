"""The engine boundary (policy/base.py): the HF engine is a `Sampler` and a `TrainableModel`, weights
arrive with a version that completions carry, a search's own stream never moves the training stream,
and a recipe picks the engine by name."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from selfimprove.config import ConfigError, RLRecipe, load_recipe
from selfimprove.policy import Engine, HFPolicy, SamplingParams, Sampler, TrainableModel
from selfimprove.policy.load import ENGINES, load_engine

RECIPES = Path(__file__).resolve().parent.parent / "recipes"
SAMPLE = SamplingParams(n=2, temperature=1.0, max_new_tokens=6)


def test_the_hf_engine_implements_both_protocols(small_policy: HFPolicy) -> None:
    assert isinstance(small_policy, Sampler) and isinstance(small_policy, TrainableModel)
    assert isinstance(small_policy, Engine)
    assert small_policy.module is small_policy.model
    assert small_policy.vocab_size == small_policy.model.config.vocab_size
    trunk = small_policy.trunk_copy()
    assert not hasattr(trunk, "lm_head") and trunk is not small_policy.model.base_model
    assert set(small_policy.weight_state()) == set(small_policy.model.state_dict())


def test_weights_arrive_with_a_version_that_completions_carry(small_model_dir: Path) -> None:
    sampler = HFPolicy.load(small_model_dir, seed=0)
    trainer = HFPolicy.load(small_model_dir, seed=0)
    assert sampler.weights_version == 0
    assert {c.version for c in sampler.generate(["1 2 -> 3:"], SAMPLE)} == {0}
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(0.01)
    sampler.load_weights(trainer.weight_state(), version=7)
    assert sampler.weights_version == 7
    assert all(torch.equal(a, b) for a, b in zip(sampler.model.state_dict().values(), trainer.model.state_dict().values()))
    assert {c.version for c in sampler.generate(["1 2 -> 3:"], SAMPLE)} == {7}
    # its own weights: nothing to copy, only the version moves
    trainer.load_weights(trainer.weight_state(), version=8)
    assert trainer.weights_version == 8


def test_a_search_stream_is_its_own_and_the_rng_state_round_trips(small_policy: HFPolicy) -> None:
    before = small_policy.rng_state()
    a = small_policy.generate(["1 2 -> 3:"], SAMPLE, generator=small_policy.make_generator(5))
    b = small_policy.generate(["1 2 -> 3:"], SAMPLE, generator=small_policy.make_generator(5))
    assert [c.token_ids for c in a] == [c.token_ids for c in b]
    assert torch.equal(small_policy.rng_state()["generator"], before["generator"])  # the training stream did not move
    first = small_policy.generate(["1 2 -> 3:"], SAMPLE)
    small_policy.set_rng_state(before)
    again = small_policy.generate(["1 2 -> 3:"], SAMPLE)
    assert [c.token_ids for c in first] == [c.token_ids for c in again]


def test_a_recipe_names_its_engine() -> None:
    assert "hf" in ENGINES
    recipe = load_recipe(RLRecipe, RECIPES / "countdown-grpo.yaml")
    assert recipe.engine.kind == "hf"
    with pytest.raises(ConfigError, match=r"^engine\.kind: .*unknown engine 'vllm2'.*hf"):
        load_recipe(RLRecipe, RECIPES / "countdown-grpo.yaml", ["engine.kind=vllm2"])
    with pytest.raises(KeyError, match="unknown engine"):
        load_engine("nope", "tiny:small")
    with pytest.raises(ValueError, match="takes no options"):
        load_engine("hf", "tiny:small", workers=2)
