"""The shared-prefix training forward gives the plain forward's log-probs, entropies and gradients."""

from __future__ import annotations

import copy

import pytest
import torch

from selfimprove.policy.logprobs import token_entropy, token_logprobs
from selfimprove.config import OptimConfig
from selfimprove.policy import HFPolicy, SamplingParams
from selfimprove.rollout.episode import Episode, Segment, collate
from selfimprove.train.learner import Learner
from selfimprove.train.objectives import sft_objective
from selfimprove.train.prefix import prefix_lengths, share_plan, shared_prefix_forward


def sampled_batch(policy: HFPolicy, n: int = 4):
    prompts = ["9 7 20 -> 22:", "1 2 -> 3:", "15 3 4 19 -> 40:"]
    out = policy.generate(prompts, SamplingParams(n=n, temperature=1.0, max_new_tokens=7))
    episodes = [
        Episode([Segment("prompt", c.prompt_ids), Segment("completion", c.token_ids, trainable=True)], group=c.prompt_index)
        for c in out
    ]
    return collate(episodes, policy.pad_id)


def plain(policy: HFPolicy, batch):
    logits = policy.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    return token_logprobs(logits, batch.input_ids[:, 1:]), token_entropy(logits)


def test_plan_finds_one_prefix_per_prompt(small_policy: HFPolicy) -> None:
    batch = sampled_batch(small_policy)
    prefixes, rows, lengths = share_plan(batch)
    assert len(prefixes) == 3 and rows.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert lengths.tolist() == [len(small_policy.encode_prompt(p)) for p in ["9 7 20 -> 22:"] * 4 + ["1 2 -> 3:"] * 4 + ["15 3 4 19 -> 40:"] * 4]
    assert prefix_lengths(batch).tolist() == lengths.tolist()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_log_probs_and_entropies_match_the_plain_forward(small_policy: HFPolicy, temperature: float) -> None:
    batch = sampled_batch(small_policy)
    lp, ent = shared_prefix_forward(small_policy.model, batch, temperature, with_entropy=True)
    logits = small_policy.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    ref_lp = token_logprobs(logits, batch.input_ids[:, 1:], temperature)
    ref_ent = token_entropy(logits, temperature)
    m = batch.mask.bool()
    assert torch.allclose(lp[m], ref_lp[m], atol=1e-5)
    assert torch.allclose(ent[m], ref_ent[m], atol=1e-5)
    assert (lp[~m] == 0).all()


def test_gradients_match_the_plain_forward(small_policy: HFPolicy) -> None:
    batch = sampled_batch(small_policy)
    grads = []
    for share in (True, False):
        policy = HFPolicy(copy.deepcopy(small_policy.model), small_policy.tokenizer)
        learner = Learner(policy, OptimConfig(lr=1e-3, share_prefix=share), total_steps=1)
        learner.step(batch, sft_objective)
        grads.append([p.grad.clone() for p in policy.model.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_rows_without_a_shared_prompt_use_the_plain_forward(small_policy: HFPolicy) -> None:
    batch = sampled_batch(small_policy, n=1)
    assert share_plan(batch) is None and shared_prefix_forward(small_policy.model, batch, 1.0) is None
