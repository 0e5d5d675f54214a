"""Shared-prefix (cascade) attention: decoding samples the same tokens as the plain KV cache, the packed
training forward gives the plain forward's log-probs and gradients, rows in any order or group sizes
included, and the model's attention function is switched only inside the block."""

from __future__ import annotations

import contextlib
import copy
import threading

import pytest
import torch
from test_prefix import sampled_batch

from selfimprove.policy import HFPolicy, SamplingParams
from selfimprove.policy.cascade import Groups, cascading, supports_cascade
from selfimprove.policy.decode import decode
from selfimprove.policy.fast_decode import FastDecoder
from selfimprove.policy.logprobs import token_logprobs
from selfimprove.policy.tiny import build_tiny_model
from selfimprove.rollout.episode import TokenBatch
import selfimprove.train.prefix as prefix
from selfimprove.train.prefix import shared_prefix_forward

PROMPTS = ["9 7 20 -> 22:", "1 2 -> 3:", "15 3 4 19 -> 40: a longer one"]


def _decode(policy: HFPolicy, params: SamplingParams, cascade: bool, eos: bool = True, fast: bool = True):
    generator = torch.Generator().manual_seed(3)
    ids = [policy.encode_prompt(p) for p in PROMPTS]
    return decode(policy.model, ids, params, pad_id=policy.pad_id, eos_ids=policy.eos_ids if eos else [],
                  detokenize=policy.detokenize, generator=generator, cascade=cascade, fast_steps=fast)


def _qwen2(seed: int = 1):
    """A small Qwen2 (biases on q, k and v; grouped-query attention) with the tiny model's tokenizer."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tokenizer = build_tiny_model("small")[1]
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(config), tokenizer


@pytest.mark.parametrize("model", ["llama", "llama-gqa", "qwen2"])
@pytest.mark.parametrize("eos", [True, False])
def test_decoding_with_a_shared_prompt_cache_samples_what_the_plain_cache_samples(model: str, eos: bool) -> None:
    built = _qwen2() if model == "qwen2" else build_tiny_model("small", seed=1, num_key_value_heads=1 if "gqa" in model else 2)
    policy = HFPolicy(built[0].eval(), built[1], seed=0)
    assert supports_cascade(policy.model) and FastDecoder.for_model(policy.model) is not None  # else nothing is compared
    for params in (SamplingParams(n=5, temperature=1.0, max_new_tokens=12),
                   SamplingParams(n=3, temperature=0.8, top_p=0.9, max_new_tokens=9, stop=tuple("0123456789 "))):
        plain = _decode(policy, params, cascade=False, eos=eos)
        for shared in (_decode(policy, params, cascade=True, eos=eos, fast=False), _decode(policy, params, cascade=True, eos=eos)):
            assert [c.token_ids for c in plain] == [c.token_ids for c in shared]
            assert [c.finish_reason for c in plain] == [c.finish_reason for c in shared]
            for a, b in zip(plain, shared):
                assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
    # with stop strings rows ended at different steps, so the batch was compacted on the way
    assert {c.finish_reason for c in plain} == {"stop", "length"} and len({len(c.token_ids) for c in plain}) > 2


def test_groups_stack_rows_in_any_order_and_number() -> None:
    row_prefix = torch.tensor([2, 0, 2, 1, 0, 2])  # after finished rows were dropped: 2, 1 and 3 rows
    groups = Groups(row_prefix, 3)
    assert not groups.plain and groups.slots == 3
    x = torch.randn(6, 2, 4, 5)
    stacked = groups.stack(x)  # [P, H, slots * R, X]
    assert stacked.shape == (3, 2, 12, 5)
    assert torch.equal(groups.unstack(stacked, 4), x)
    # a row sits among its own prefix's slots
    for row, p in enumerate(row_prefix.tolist()):
        block = stacked[p].view(2, 3, 4, 5).transpose(0, 1)
        assert any(torch.equal(block[k], x[row]) for k in range(3))
    plain = Groups(torch.tensor([0, 0, 1, 1]), 2)
    assert plain.plain and torch.equal(plain.unstack(plain.stack(x[:4]), 4), x[:4])


def _rows(batch: TokenBatch, order: list[int]) -> TokenBatch:
    return batch.rows(torch.tensor(order))


def test_the_packed_forward_matches_the_plain_forward_for_rows_in_any_order(small_policy: HFPolicy) -> None:
    batch = sampled_batch(small_policy, n=4)
    # shuffled rows, one prompt with fewer samples: the prefixes' groups are not contiguous or equal
    batch = _rows(batch, [5, 0, 11, 3, 9, 1, 6, 10, 2, 8, 4])
    model = small_policy.model
    assert supports_cascade(model)
    lp, _ = shared_prefix_forward(model, batch, 1.0)
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits[:, :-1]
    ref = token_logprobs(logits, batch.input_ids[:, 1:])
    m = batch.mask.bool()
    assert torch.allclose(lp[m], ref[m], atol=1e-5)

    grads = []
    for use_cascade in (True, False):
        copy_ = copy.deepcopy(model)
        original = prefix.cascading
        if not use_cascade:  # the repeated-cache path, for reference
            prefix.cascading = lambda m: contextlib.nullcontext(False)  # type: ignore[assignment]
        try:
            out, _ = shared_prefix_forward(copy_, batch, 1.0)
        finally:
            prefix.cascading = original
        (out * batch.mask).sum().backward()
        grads.append([p.grad for p in copy_.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_the_attention_function_is_switched_only_inside_the_block(small_policy: HFPolicy) -> None:
    model = small_policy.model
    assert supports_cascade(model) and model.config._attn_implementation == "sdpa"
    ids = torch.tensor([small_policy.encode_prompt("1 2 -> 3:")] * 2)
    expected = model(input_ids=ids).logits
    seen: list[torch.Tensor] = []
    with cascading(model) as on:
        assert on and model.config._attn_implementation != "sdpa"
        with cascading(model) as again:  # nested: the outer block restores
            assert again
        assert model.config._attn_implementation != "sdpa"
        # a forward without a cascade cache (here another thread's) is plain sdpa attention
        worker = threading.Thread(target=lambda: seen.append(model(input_ids=ids).logits))
        worker.start()
        worker.join()
    assert model.config._attn_implementation == "sdpa"
    assert torch.allclose(seen[0], expected, atol=1e-6)
    eager, _ = build_tiny_model("small", seed=1)
    eager.set_attn_implementation("eager")
    with cascading(eager) as on:
        assert not on and eager.config._attn_implementation == "eager"  # not a model it fits: untouched


def test_the_fast_step_is_only_for_models_it_matches(small_policy: HFPolicy) -> None:
    from selfimprove.config import LoraConfig
    from selfimprove.policy.lora import apply_lora

    assert FastDecoder.for_model(small_policy.model) is not None
    half = copy.deepcopy(small_policy.model).to(torch.bfloat16)
    assert FastDecoder.for_model(half) is None  # its RMSNorm rounds in float32 first: not the same arithmetic
    adapted = HFPolicy(copy.deepcopy(small_policy.model), small_policy.tokenizer)
    apply_lora(adapted, LoraConfig(r=2, alpha=4))
    assert FastDecoder.for_model(adapted.model) is None  # the adapter's products are not in the fused weights
    assert FastDecoder.for_model(adapted.model.get_base_model()) is None
    from transformers import GPT2Config, GPT2LMHeadModel

    assert FastDecoder.for_model(GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2))) is None
