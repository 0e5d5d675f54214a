"""The vLLM engine (`engine: {kind: vllm}`, GPU only; `pip install -e '.[vllm]'` in its own environment:
vLLM pins its own torch, never the CPU constraints). The learner trains a local HF model on the same
GPU; vLLM samples.

- `n` samples per prompt, temperature, top-p, stop strings, prompts as token ids (so the learner and
  vLLM see the same tokens), prefix caching on (a group's prompt, a search tree's shared prefix);
- behaviour log-probs of the sampled tokens, after temperature (`logprobs_mode="processed_logprobs"`,
  the learner's convention; with top-p < 1 vLLM's are renormalised over the kept tokens);
- weights: the learner's `load_weights(weight_state(), step)` marks them; before the next sampling call
  they go to vLLM's model with `load_weights` inside its workers (`LLM.apply_model`) and the prefix cache
  is reset; a LoRA policy's adapter is saved and hot-loaded as a `LoRARequest` per version instead;
- `sleep: true` when training shares the GPU: vLLM sleeps (weights offloaded, KV cache freed) after each
  sampling call and wakes before the next;
- `logprob_gap(prompts)`: max and mean |vLLM log-prob - learner log-prob| on the same tokens.

`completion_from_vllm` (the mapping of a vLLM output to our `Completion`) is plain Python and tested
on CPU; everything else needs CUDA (`tests/test_vllm_engine.py` skips without it).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from selfimprove.policy.base import Completion, FinishReason, SamplingParams
from selfimprove.policy.wrapped import LocalLearnerEngine, derived_seed

if TYPE_CHECKING:
    import torch

    from selfimprove.policy.hf import HFPolicy


def completion_from_vllm(prompt_index: int, prompt_ids: Sequence[int], output: Any, version: int) -> Completion:
    """One vLLM `CompletionOutput` as our `Completion` (log-prob of each sampled token, finish reason)."""
    token_ids = list(output.token_ids)
    logprobs = []
    for position, token in enumerate(token_ids):
        entry = output.logprobs[position] if output.logprobs else None
        logprobs.append(float(entry[token].logprob) if entry is not None and token in entry else 0.0)
    reason: FinishReason = "length"
    if output.finish_reason == "stop":
        reason = "stop" if isinstance(output.stop_reason, str) else "eos"
    return Completion(prompt_index=prompt_index, prompt_ids=list(prompt_ids), token_ids=token_ids, text=output.text,
                      logprobs=logprobs, finish_reason=reason, version=version)


class VLLMEngine(LocalLearnerEngine):
    """An `Engine`: trainable like the local `HFPolicy` it wraps, sampling with vLLM on the same GPU."""

    def __init__(self, local: HFPolicy, *, seed: int = 0, gpu_memory_utilization: float = 0.3, sleep: bool = False,
                 dtype: str = "bfloat16", max_model_len: int = 2048) -> None:
        from vllm import LLM

        from selfimprove.policy.lora import is_lora

        super().__init__(local, seed)
        self.sleep = sleep
        self._folder = Path(tempfile.mkdtemp(prefix="selfimprove-vllm-"))
        self.lora = is_lora(local)
        base = self._folder / "base"
        if self.lora:
            local.model.get_base_model().save_pretrained(base)  # type: ignore[operator]
            local.save_tokenizer(base)
        else:
            local.save(base)
        self.llm = LLM(model=str(base), dtype=dtype, seed=seed, enable_prefix_caching=True, enable_sleep_mode=sleep,
                       gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                       logprobs_mode="processed_logprobs", enable_lora=self.lora,
                       max_lora_rank=getattr(getattr(local.model, "peft_config", {}).get("default"), "r", 16) if self.lora else 16)
        self._pushed = local.weights_version
        self._asleep = False
        self._lora_request: Any = None

    def close(self) -> None:
        del self.llm
        shutil.rmtree(self._folder, ignore_errors=True)

    def push(self) -> None:
        """The learner's current weights into vLLM (or its adapter, hot-loaded), if they changed."""
        version = self.local.weights_version
        if version == self._pushed and (self._lora_request is not None or not self.lora):
            return
        if self.lora:
            from vllm.lora.request import LoRARequest

            folder = self._folder / f"adapter_{version}"
            self.local.save(folder)
            self._lora_request = LoRARequest(f"policy-{version}", version + 1, str(folder))
        else:
            weights = [(k, v.detach()) for k, v in self.local.weight_state().items()]
            self.llm.apply_model(lambda model: model.load_weights(weights))
            self.llm.reset_prefix_cache()
        self._pushed = version

    # ------------------------------------------------------------------ Sampler
    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *,
                     generator: "torch.Generator | None" = None) -> list[Completion]:
        from vllm import SamplingParams as VLLMParams

        if not prompt_ids:
            return []
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False
        self.push()
        seed = derived_seed(*self.seed_for(generator, bits=31), bits=31)
        sampling = VLLMParams(n=params.n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens,
                              stop=list(params.stop) or None, logprobs=0, seed=seed)
        requests = [{"prompt_token_ids": list(ids)} for ids in prompt_ids]
        outputs = self.llm.generate(requests, sampling, use_tqdm=False, lora_request=self._lora_request)
        completions = [completion_from_vllm(i, prompt_ids[i], out, self.local.weights_version)
                       for i, request in enumerate(outputs) for out in request.outputs]
        if self.sleep:
            self.llm.sleep(level=1)
            self._asleep = True
        return completions

    def logprob_gap(self, prompts: Sequence[str], params: SamplingParams) -> dict[str, float]:
        """Sample with vLLM, score the same tokens with the learner: max and mean |Δ log-prob|."""
        completions = self.generate(prompts, params)
        learner = self.local.logprobs([c.prompt_ids for c in completions], [c.token_ids for c in completions],
                                      temperature=params.temperature or 1.0)
        gaps = [abs(a - b) for c, lp in zip(completions, learner) for a, b in zip(c.logprobs, lp)]
        return {"max_abs_logprob_gap": max(gaps, default=0.0), "mean_abs_logprob_gap": sum(gaps) / max(1, len(gaps)),
                "tokens": float(len(gaps))}
