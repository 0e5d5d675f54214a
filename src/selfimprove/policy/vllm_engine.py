"""The vLLM engine (`engine: {kind: vllm}`, GPU only; `pip install -e '.[vllm]'` in its own environment:
vLLM pins its own torch, never the CPU constraints). The learner trains a local HF model on the same
GPU; vLLM samples.

- `n` samples per prompt, temperature, top-p, stop strings, prompts as token ids (so the learner and
  vLLM see the same tokens), prefix caching on (a group's prompt, a search tree's shared prefix);
- **seeds per prompt**: vLLM seeds sample k of a request with `seed + k`, so one seed for a whole call
  would give identical prompts identical samples (MCTS widening, merge retries) and different prompts
  shared noise; each prompt gets its own seed, derived from (the engine's seed, the call, the prompt's
  index), or from one draw of a caller's generator;
- **behaviour log-probs** of the sampled tokens as sampled: `logprobs_mode="processed_logprobs"` (after
  temperature and top-p), what our decode loop records too; a token without one is an error;
- **weights**: the learner's `load_weights(weight_state(), step)` marks them; before the next sampling
  call they are loaded into vLLM's model with its `load_weights`, in this process (the engine sets
  `VLLM_ENABLE_V1_MULTIPROCESSING=0`: the tensors are passed by reference, never pickled; a loader that
  would have to cross a process boundary refuses to be pickled), and the prefix cache is reset. A LoRA
  policy syncs only its adapter: saved per version and sampled with one `LoRARequest` per version,
  on a base written once without the adapter. Completions carry the version of the last push;
- `sleep: true` when training shares the GPU: vLLM sleeps (weights offloaded, KV cache freed) after each
  sampling call and wakes before the next;
- `logprob_gap(prompts)`: max and mean |vLLM log-prob - learner log-prob| on the same tokens.

`tests/test_vllm_engine.py` runs all of it on a CPU against a test double of vLLM (`tests/fake_vllm`)
that follows vLLM's documented behaviour; the tests against real vLLM need CUDA and skip without it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from selfimprove.policy.base import Completion, FinishReason, SamplingParams
from selfimprove.policy.wrapped import LocalLearnerEngine, derived_seed
from selfimprove.timing import timed

if TYPE_CHECKING:
    import torch

    from selfimprove.policy.hf import HFPolicy

IN_PROCESS = "VLLM_ENABLE_V1_MULTIPROCESSING"
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM accepts for max_lora_rank


def max_lora_rank(r: int) -> int:
    """vLLM's `max_lora_rank` for an adapter of rank `r`: the smallest value it accepts that holds r."""
    for allowed in LORA_RANKS:
        if allowed >= r:
            return allowed
    raise ValueError(f"lora.r {r} is larger than vLLM's largest max_lora_rank ({LORA_RANKS[-1]})")


def completion_from_vllm(prompt_index: int, prompt_ids: Sequence[int], output: Any, version: int) -> Completion:
    """One vLLM `CompletionOutput` as our `Completion` (log-prob of each sampled token, finish reason)."""
    token_ids = list(output.token_ids)
    logprobs = []
    for position, token in enumerate(token_ids):
        entry = output.logprobs[position] if output.logprobs and position < len(output.logprobs) else None
        if entry is None or token not in entry:
            raise ValueError(f"vLLM returned no log-prob for sampled token {token} at position {position} "
                             "(the engine asks for logprobs=0: the sampled token's)")
        logprobs.append(float(entry[token].logprob))
    reason: FinishReason = "length"
    if output.finish_reason == "stop":
        reason = "stop" if isinstance(output.stop_reason, str) else "eos"
    return Completion(prompt_index=prompt_index, prompt_ids=list(prompt_ids), token_ids=token_ids, text=output.text,
                      logprobs=logprobs, finish_reason=reason, version=version)


class LoadInPlace:
    """Loads the learner's weights into vLLM's model, called by `LLM.apply_model` in this process. It
    refuses to be pickled: a multi-process vLLM engine would otherwise pickle the whole state dict on
    every push."""

    def __init__(self, local: HFPolicy) -> None:
        self.local = local

    def __call__(self, model: Any) -> None:
        model.load_weights((name, tensor.detach()) for name, tensor in self.local.weight_state().items())

    def __reduce__(self) -> Any:
        raise TypeError(f"vLLM runs its engine in another process ({IN_PROCESS} is not 0): the weights would be "
                        f"pickled on every push; leave {IN_PROCESS} unset (the engine sets 0) or set it to 0")


class VLLMEngine(LocalLearnerEngine):
    """An `Engine`: trainable like the local `HFPolicy` it wraps, sampling with vLLM on the same GPU."""

    def __init__(self, local: HFPolicy, *, seed: int = 0, gpu_memory_utilization: float = 0.3, sleep: bool = False,
                 dtype: str = "bfloat16", max_model_len: int = 2048) -> None:
        os.environ.setdefault(IN_PROCESS, "0")  # before vLLM starts its engine: weights pass by reference
        if os.environ[IN_PROCESS] != "0":
            raise ValueError(f"engine.kind vllm loads the learner's weights into vLLM in this process: {IN_PROCESS} is "
                             f"{os.environ[IN_PROCESS]!r}; unset it (the engine sets 0) or set it to 0")
        from vllm import LLM

        from selfimprove.policy.lora import is_lora, save_base

        super().__init__(local, seed)
        self.sleep = sleep
        self.max_model_len = max_model_len  # the context a conversation may fill (`policy.base.context_limit`)
        self._folder = Path(tempfile.mkdtemp(prefix="selfimprove-vllm-"))
        self.lora = is_lora(local)
        base = self._folder / "base"
        if self.lora:
            save_base(local, base)  # the base alone: the adapter goes as a LoRARequest per version
            rank = max_lora_rank(int(local.model.peft_config["default"].r))  # type: ignore[union-attr]
        else:
            local.save(base)
        self.llm = LLM(model=str(base), dtype=dtype, seed=seed, enable_prefix_caching=True, enable_sleep_mode=sleep,
                       gpu_memory_utilization=gpu_memory_utilization, max_model_len=max_model_len,
                       logprobs_mode="processed_logprobs", enable_lora=self.lora, max_lora_rank=rank if self.lora else 16)
        self._pushed = -1 if self.lora else local.weights_version  # vLLM loaded these weights from the folder
        self._asleep = False
        self._lora_request: Any = None

    def close(self) -> None:
        del self.llm
        shutil.rmtree(self._folder, ignore_errors=True)

    @property
    def pushed_version(self) -> int:
        """The weights version vLLM samples with (the last push)."""
        return self._pushed

    def push(self) -> None:
        """The learner's current weights into vLLM (or its adapter, as a new LoRARequest), if they changed."""
        version = self.local.weights_version
        if version == self._pushed:
            return
        if self.lora:
            from vllm.lora.request import LoRARequest

            folder = self._folder / f"adapter_{version}"
            self.local.model.save_pretrained(folder)  # the adapter's tensors and config only
            previous = self._lora_request
            self._lora_request = LoRARequest(f"policy-{version}", version + 1, str(folder))
            if previous is not None:  # vLLM read it when it was used; nothing asks for it again
                shutil.rmtree(previous.lora_path, ignore_errors=True)
        else:
            self.llm.apply_model(LoadInPlace(self.local))
            self.llm.reset_prefix_cache()
        self._pushed = version

    # ------------------------------------------------------------------ Sampler
    @timed("generate")
    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *,
                     generator: "torch.Generator | None" = None) -> list[Completion]:
        from vllm import SamplingParams as VLLMParams

        if not prompt_ids:
            return []
        if self._asleep:
            self.llm.wake_up()
            self._asleep = False
        self.push()
        version = self._pushed
        base = self.seed_for(generator, bits=31)
        sampling = [VLLMParams(n=params.n, temperature=params.temperature, top_p=params.top_p, max_tokens=params.max_new_tokens,
                               stop=list(params.stop) or None, logprobs=0, seed=derived_seed(*base, i, bits=31))
                    for i in range(len(prompt_ids))]
        requests = [{"prompt_token_ids": list(ids)} for ids in prompt_ids]
        outputs = self.llm.generate(requests, sampling, use_tqdm=False, lora_request=self._lora_request)
        completions = [completion_from_vllm(i, prompt_ids[i], out, version)
                       for i, request in enumerate(outputs) for out in sorted(request.outputs, key=lambda o: o.index)]
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
