"""The decode loop's fast paths: finished rows leave the batch and the KV cache, the prefill runs once
per distinct prompt, the cache is preallocated, and none of it changes what comes out."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForCausalLM, MistralConfig, MistralForCausalLM

from selfimprove.policy import HFPolicy, SamplingParams
from selfimprove.policy import decode as decode_module
from selfimprove.policy.decode import PreallocatedLayer, make_cache
from selfimprove.policy.tiny import build_config, build_tokenizer

# Prompts of different lengths (the batch is left-padded).
PROMPTS = ["9 7 20 -> 22:", "1 2 -> 3:", "15 3 4 19 -> 40:", "5 -> 5:", "12 3 4 -> 20:", "2 2 2 -> 8:"]
STEPS = 16


@pytest.fixture(scope="module")
def chaotic_policy() -> HFPolicy:
    """A small random Llama with a large init, so greedy continuations differ between prompts (the
    default init repeats one character everywhere, which would never finish rows at different steps)."""
    tokenizer = build_tokenizer()
    config = build_config(tokenizer, "small")
    config.initializer_range = 0.3
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).eval()
    return HFPolicy(model, tokenizer, seed=0)


def hf_greedy(policy: HFPolicy, prompt: str, eos_ids: list[int] | None) -> list[int]:
    ids = torch.tensor([policy.encode_prompt(prompt)])
    with torch.no_grad():
        out = policy.model.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=STEPS, do_sample=False,
            pad_token_id=policy.pad_id, eos_token_id=eos_ids,
        )
    return out[0, ids.shape[1] :].tolist()


def run(policy: HFPolicy, params: SamplingParams, eos_ids: list[int], seed: int = 0):
    return decode_module.decode(
        policy.model,
        [policy.encode_prompt(p) for p in PROMPTS],
        params,
        pad_id=policy.pad_id,
        eos_ids=eos_ids,
        detokenize=policy.detokenize,
        generator=torch.Generator().manual_seed(seed),
    )


@pytest.fixture(scope="module")
def spread_eos(chaotic_policy: HFPolicy) -> tuple[list[int], dict[str, list[int]]]:
    """An 'end' token set that finishes the greedy rows at several different steps (and leaves at least
    one row running to the length limit), with each prompt's expected greedy completion."""
    policy = chaotic_policy
    free = {p: hf_greedy(policy, p, None) for p in PROMPTS}
    best: tuple[int, list[int]] | None = None
    for a in range(7, len(policy.tokenizer)):
        for b in (None, *range(a + 1, len(policy.tokenizer))):
            ends = [a] if b is None else [a, b]
            lengths = [next((i + 1 for i, t in enumerate(ids) if t in ends), STEPS) for ids in free.values()]
            score = len(set(lengths)) + (STEPS in lengths)
            if best is None or score > best[0]:
                best = (score, ends)
        if best and best[0] >= 5:
            break
    assert best is not None
    ends = best[1]
    expected = {p: hf_greedy(policy, p, ends) for p in PROMPTS}
    return ends, expected


@pytest.mark.parametrize("fraction", [0.0, 0.25, 2.0])  # drop at every finish / the default / never
def test_greedy_with_finished_rows_dropped_matches_hf_generate(chaotic_policy: HFPolicy, spread_eos, monkeypatch, fraction: float) -> None:
    ends, expected = spread_eos
    lengths = {len(v) for v in expected.values()}
    assert len(lengths) >= 3 and STEPS in lengths, "the test needs rows finishing at different steps"
    monkeypatch.setattr(decode_module, "COMPACT_FRACTION", fraction)
    out = run(chaotic_policy, SamplingParams(n=2, temperature=0, max_new_tokens=STEPS), ends)
    assert [c.prompt_index for c in out] == [i for i in range(len(PROMPTS)) for _ in range(2)]
    for c in out:
        want = expected[PROMPTS[c.prompt_index]]
        assert c.token_ids == want
        assert c.finish_reason == ("eos" if want[-1] in ends else "length")
        assert len(c.logprobs) == len(c.token_ids)
        body = want[:-1] if c.finish_reason == "eos" else want
        assert c.text == chaotic_policy.detokenize(body)


def test_sampled_logprobs_with_dropped_rows_agree_with_scoring(chaotic_policy: HFPolicy, spread_eos, monkeypatch) -> None:
    ends, _ = spread_eos
    monkeypatch.setattr(decode_module, "COMPACT_FRACTION", 0.0)
    for temperature in (1.0, 0.7):
        out = run(chaotic_policy, SamplingParams(n=4, temperature=temperature, max_new_tokens=STEPS), ends)
        assert len({c.num_tokens for c in out}) >= 3, "rows should finish at different steps"
        scored = chaotic_policy.logprobs([c.prompt_ids for c in out], [c.token_ids for c in out], temperature=temperature)
        for c, lp in zip(out, scored):
            assert lp == pytest.approx(c.logprobs, abs=1e-4)
            assert all(t not in ends for t in c.token_ids[:-1])
            assert (c.token_ids[-1] in ends) == (c.finish_reason == "eos")


def test_sampling_is_reproducible_and_top_p_tiny_is_greedy(chaotic_policy: HFPolicy, spread_eos) -> None:
    ends, expected = spread_eos
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=STEPS)
    a, b, c = run(chaotic_policy, params, ends, 1), run(chaotic_policy, params, ends, 1), run(chaotic_policy, params, ends, 2)
    assert [x.token_ids for x in a] == [x.token_ids for x in b]
    assert [x.token_ids for x in a] != [x.token_ids for x in c]
    nucleus = run(chaotic_policy, SamplingParams(n=2, temperature=1.0, top_p=1e-6, max_new_tokens=STEPS), ends)
    for x in nucleus:
        assert x.token_ids == expected[PROMPTS[x.prompt_index]]


def test_stop_strings_with_dropped_rows(chaotic_policy: HFPolicy, monkeypatch) -> None:
    monkeypatch.setattr(decode_module, "COMPACT_FRACTION", 0.0)
    free = run(chaotic_policy, SamplingParams(n=4, temperature=1.0, max_new_tokens=STEPS), [])
    stop = next(c.text[2] for c in free if len(c.text) > 4 and c.text[2].strip())
    out = run(chaotic_policy, SamplingParams(n=4, temperature=1.0, max_new_tokens=STEPS, stop=(stop,)), [])
    stopped = [c for c in out if c.finish_reason == "stop"]
    assert stopped, "no completion hit the stop string"
    for c in out:
        full = chaotic_policy.detokenize(c.token_ids)
        if c.finish_reason == "stop":
            assert stop not in c.text and full.startswith(c.text)
            assert stop in full and stop not in chaotic_policy.detokenize(c.token_ids[:-1])
        else:
            assert c.num_tokens == STEPS and c.text == full and stop not in full


def test_identical_prompts_and_n_copies_agree(chaotic_policy: HFPolicy) -> None:
    greedy = SamplingParams(n=3, temperature=0, max_new_tokens=8)
    ids = [chaotic_policy.encode_prompt(p) for p in PROMPTS[:2]]
    kw = dict(pad_id=chaotic_policy.pad_id, eos_ids=[], detokenize=chaotic_policy.detokenize)
    once = decode_module.decode(chaotic_policy.model, ids, greedy, **kw)
    repeated = decode_module.decode(chaotic_policy.model, [ids[0]] * 3 + [ids[1]] * 3, SamplingParams(temperature=0, max_new_tokens=8), **kw)
    assert [c.token_ids for c in once] == [c.token_ids for c in repeated]


def test_preallocated_cache_grows_and_selects_rows() -> None:
    layer = PreallocatedLayer(capacity=2)
    k = torch.arange(3 * 1 * 3 * 2, dtype=torch.float32).view(3, 1, 3, 2)
    keys, values = layer.update(k, -k)
    assert torch.equal(keys, k) and torch.equal(values, -k) and layer.get_seq_length() == 3
    step = torch.full((3, 1, 1, 2), 7.0)
    keys, _ = layer.update(step, step)
    assert keys.shape == (3, 1, 4, 2) and torch.equal(keys[:, :, :3], k)
    layer.batch_select_indices(torch.tensor([2, 0]))
    assert torch.equal(layer.keys, torch.cat([k, step], dim=2)[[2, 0]])
    layer.batch_repeat_interleave(2)
    assert torch.equal(layer.keys, torch.cat([k, step], dim=2)[[2, 2, 0, 0]])


def test_sliding_window_models_keep_their_own_cache() -> None:
    config = MistralConfig(
        vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, sliding_window=4, max_position_embeddings=64, pad_token_id=0,
    )
    torch.manual_seed(0)
    model = MistralForCausalLM(config).eval()
    assert not any(isinstance(layer, PreallocatedLayer) for layer in make_cache(model, 16).layers)
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]
    out = decode_module.decode(
        model, prompts, SamplingParams(temperature=0, max_new_tokens=8), pad_id=0, eos_ids=[], detokenize=str
    )
    for p, c in zip(prompts, out):
        ref = model.generate(torch.tensor([p]), max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)
        assert c.token_ids == ref[0, len(p) :].tolist()


def test_top_p_logprobs_are_renormalised_over_the_nucleus() -> None:
    """The recorded log-prob is the behaviour policy's: the distribution actually sampled from (vLLM's
    processed log-probs), not the full softmax, when top_p < 1."""
    from selfimprove.policy.decode import sample_next

    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    logits = probs.log().repeat(200, 1)
    g = torch.Generator().manual_seed(0)
    tokens, logp = sample_next(logits, SamplingParams(temperature=1.0, top_p=0.7), g)
    assert set(tokens.tolist()) == {0, 1}  # the nucleus: 0.5 + 0.3 reaches 0.7
    expected = {0: 0.5 / 0.8, 1: 0.3 / 0.8}
    assert logp.tolist() == pytest.approx([torch.tensor(expected[t]).log().item() for t in tokens.tolist()], abs=1e-6)
    _, full = sample_next(logits[:1], SamplingParams(temperature=1.0), g)
    assert full.exp().item() in [pytest.approx(p, abs=1e-6) for p in probs[0].tolist()]
