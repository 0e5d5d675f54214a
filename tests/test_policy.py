"""HFPolicy: batched sampling, greedy decoding, log-probabilities and save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from selfimprove.policy import HFPolicy, SamplingParams

PROMPTS = ["9 7 20 -> 22:", "1 2 -> 3:", "15 3 4 19 -> 40:"]


def test_greedy_matches_hf_generate_for_each_prompt(small_policy: HFPolicy) -> None:
    out = small_policy.generate(PROMPTS, SamplingParams(temperature=0, max_new_tokens=10))
    assert [c.prompt_index for c in out] == [0, 1, 2]
    for prompt, c in zip(PROMPTS, out):
        ids = torch.tensor([small_policy.encode_prompt(prompt)])
        ref = small_policy.model.generate(ids, max_new_tokens=10, do_sample=False, pad_token_id=small_policy.pad_id)
        expected = ref[0, ids.shape[1] :].tolist()
        assert c.token_ids == expected[: len(c.token_ids)]


def test_n_samples_per_prompt_are_prompt_major(small_policy: HFPolicy) -> None:
    out = small_policy.generate(PROMPTS, SamplingParams(n=4, temperature=1.0, max_new_tokens=6))
    assert [c.prompt_index for c in out] == [0] * 4 + [1] * 4 + [2] * 4
    assert all(c.num_tokens == len(c.logprobs) for c in out)
    assert all(1 <= c.num_tokens <= 6 for c in out)


def test_sampled_logprobs_agree_with_scoring(small_policy: HFPolicy) -> None:
    for params in (SamplingParams(n=3, temperature=1.0, max_new_tokens=8), SamplingParams(n=2, temperature=0.7, max_new_tokens=8)):
        out = small_policy.generate(PROMPTS, params)
        scored = small_policy.logprobs([c.prompt_ids for c in out], [c.token_ids for c in out], temperature=params.temperature)
        for c, lp in zip(out, scored):
            assert lp == pytest.approx(c.logprobs, abs=1e-4)


def test_sampling_is_reproducible_from_the_seed(small_model_dir: Path) -> None:
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=8)
    a = HFPolicy.load(small_model_dir, seed=5).generate(PROMPTS, params)
    b = HFPolicy.load(small_model_dir, seed=5).generate(PROMPTS, params)
    c = HFPolicy.load(small_model_dir, seed=6).generate(PROMPTS, params)
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]


def test_top_p_near_zero_is_greedy(small_policy: HFPolicy) -> None:
    greedy = small_policy.generate(PROMPTS, SamplingParams(temperature=0, max_new_tokens=8))
    nucleus = small_policy.generate(PROMPTS, SamplingParams(n=2, temperature=1.0, top_p=1e-6, max_new_tokens=8))
    for c in nucleus:
        assert c.token_ids == greedy[c.prompt_index].token_ids


def test_stop_string_cuts_text_and_sets_reason(small_policy: HFPolicy) -> None:
    out = small_policy.generate(PROMPTS, SamplingParams(n=8, temperature=1.5, max_new_tokens=24))
    # pick a character that was actually generated somewhere, and stop on it
    sample = next(c for c in out if len(c.text) >= 3)
    stop = sample.text[1]
    again = small_policy.generate(PROMPTS, SamplingParams(n=8, temperature=1.5, max_new_tokens=24, stop=(stop,)))
    stopped = [c for c in again if c.finish_reason == "stop"]
    assert stopped, "no completion hit the stop string"
    for c in stopped:
        assert stop not in c.text
        assert stop in small_policy.detokenize(c.token_ids)


def test_eos_ends_a_completion_and_is_not_in_the_text(small_policy: HFPolicy) -> None:
    eos = small_policy.tokenizer.eos_token_id
    with torch.no_grad():
        small_policy.model.lm_head.weight[eos] += 50.0  # make eos overwhelmingly likely
    out = small_policy.generate(PROMPTS, SamplingParams(temperature=0, max_new_tokens=5))
    assert all(c.finish_reason == "eos" and c.token_ids == [eos] and c.text == "" for c in out)


def test_save_and_load_round_trip(small_policy: HFPolicy, tmp_path: Path) -> None:
    small_policy.save(tmp_path / "p")
    again = HFPolicy.load(tmp_path / "p")
    ids = torch.tensor([small_policy.encode_prompt(PROMPTS[0])])
    mask = torch.ones_like(ids)
    assert torch.equal(small_policy.token_logprobs(ids, mask), again.token_logprobs(ids, mask))


def test_load_rejects_a_folder_that_is_not_a_model(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a Hugging Face model folder"):
        HFPolicy.load(tmp_path)


def test_chat_mode_wraps_prompts_in_the_template(small_model_dir: Path) -> None:
    policy = HFPolicy.load(small_model_dir, chat=True)
    ids = policy.encode_prompt("1 2 -> 3:")
    assert policy.tokenizer.decode(ids) == "<bos><|user|>1 2 -> 3:<|end|><|assistant|>"
