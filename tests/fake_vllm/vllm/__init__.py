"""A CPU test double of vLLM's offline API (see tests/fake_vllm/README.md). Documented behaviour it keeps:

- `LLM.generate(prompts, sampling_params)`: `sampling_params` is one `SamplingParams` for every prompt or a
  list with one per prompt; outputs come back in prompt order, each with `n` `CompletionOutput`s.
- Seeds: a request whose params carry `seed` samples its k-th completion from a generator seeded `seed + k`
  (vLLM's parallel sampling gives child k `seed + k`), so two requests with the same prompt and the same
  seed get the same completions. Without a seed, samples come from the engine's own stream (`LLM(seed=)`).
- Log-probs (`logprobs=0`: the sampled token only): `logprobs_mode="raw_logprobs"` reports the model's
  log-softmax; `"processed_logprobs"` the distribution sampled from (after temperature and top-p).
- Finish: EOS -> `finish_reason="stop"`, `stop_reason=None`, the EOS id kept in `token_ids`; a stop string
  -> `"stop"` with `stop_reason` the string, cut from `text`; else `"length"`.
- `apply_model(fn)` runs `fn(model)` on the model inside each worker; with the default multiprocessing
  engine `fn` crosses a process boundary (it is pickled, and `rpc_bytes` counts the bytes), in-process
  (`VLLM_ENABLE_V1_MULTIPROCESSING=0`) it is called directly. The model's `load_weights` takes
  (name, tensor) pairs in the checkpoint's names.
- LoRA (`enable_lora=True`): a `LoRARequest` loads the adapter folder once per `lora_int_id`; a rank over
  `max_lora_rank` is an error, and `max_lora_rank` must be one of vLLM's values (1, 8, 16, ..., 512).
- `sleep(level=1)` frees the engine until `wake_up()`; generating while asleep is an error.
"""

from __future__ import annotations

import copy
import os
import pickle
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import torch

__version__ = "0.0.0+fake"

try:
    from ray import cloudpickle as _pickler  # what vLLM uses to send a callable to its workers
except ImportError:  # pragma: no cover
    _pickler = pickle


@dataclass
class SamplingParams:
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 16
    stop: list[str] | None = None
    logprobs: int | None = None
    seed: int | None = None


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput] = field(default_factory=list)
    finished: bool = True


class _Model:
    """What `apply_model` hands a function: the model in the worker, with vLLM's `load_weights`."""

    def __init__(self, hf: torch.nn.Module) -> None:
        self.hf = hf

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> set[str]:
        own = self.hf.state_dict()
        loaded = set()
        with torch.no_grad():
            for name, tensor in weights:
                if name not in own:
                    raise KeyError(f"fake vLLM: no parameter named {name}")
                own[name].copy_(tensor.to(own[name].dtype))
                loaded.add(name)
        return loaded


class LLM:
    def __init__(self, model: str, *, dtype: str = "auto", seed: int = 0, enable_prefix_caching: bool = False,
                 enable_sleep_mode: bool = False, gpu_memory_utilization: float = 0.9, max_model_len: int | None = None,
                 logprobs_mode: str = "raw_logprobs", enable_lora: bool = False, max_lora_rank: int = 16,
                 **kwargs: Any) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if max_lora_rank not in (1, 8, 16, 32, 64, 128, 256, 320, 512):  # vLLM's MaxLoRARanks
            raise ValueError(f"fake vLLM: max_lora_rank must be one of 1, 8, 16, ..., 512, got {max_lora_rank}")
        if logprobs_mode not in ("raw_logprobs", "processed_logprobs"):
            raise ValueError(f"fake vLLM: logprobs_mode {logprobs_mode!r} not modelled")
        torch_dtype = torch.float32 if dtype in ("auto", "float32") else getattr(torch, dtype)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.base = AutoModelForCausalLM.from_pretrained(model, dtype=torch_dtype).eval()
        self.model = _Model(self.base)
        self.logprobs_mode = logprobs_mode
        self.enable_lora, self.max_lora_rank = enable_lora, max_lora_rank
        self.enable_sleep_mode = enable_sleep_mode
        self.max_model_len = max_model_len
        self.asleep = False
        self.rpc_bytes = 0
        self.prefix_cache_resets = 0
        self.generate_calls = 0
        self.on_generate: Callable[[], None] | None = None  # a test's hook, run inside each generate call
        self._loras: dict[int, torch.nn.Module] = {}
        self._stream = torch.Generator().manual_seed(seed)

    # ------------------------------------------------------------------ control
    def apply_model(self, func: Callable[[Any], Any]) -> list[Any]:
        if os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") != "0":
            payload = _pickler.dumps(func)  # to the engine core's process
            self.rpc_bytes += len(payload)
            func = _pickler.loads(payload)
        return [func(self.model)]

    def reset_prefix_cache(self) -> bool:
        self.prefix_cache_resets += 1
        return True

    def sleep(self, level: int = 1) -> None:
        if not self.enable_sleep_mode:
            raise ValueError("fake vLLM: sleep needs enable_sleep_mode=True")
        if level == 2:  # weights discarded too
            with torch.no_grad():
                for p in self.base.parameters():
                    p.zero_()
        self.asleep = True

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.asleep = False

    # ------------------------------------------------------------------ sampling
    def _model_for(self, lora_request: Any) -> torch.nn.Module:
        if lora_request is None:
            return self.base
        if not self.enable_lora:
            raise ValueError("fake vLLM: a LoRARequest needs enable_lora=True")
        if lora_request.lora_int_id not in self._loras:
            from peft import PeftConfig, PeftModel

            rank = PeftConfig.from_pretrained(lora_request.lora_path).r
            if rank > self.max_lora_rank:
                raise ValueError(f"fake vLLM: LoRA rank {rank} is greater than max_lora_rank {self.max_lora_rank}")
            with warnings.catch_warnings():  # peft reads an attribute transformers marks deprecated
                warnings.simplefilter("ignore", FutureWarning)
                self._loras[lora_request.lora_int_id] = PeftModel.from_pretrained(copy.deepcopy(self.base),
                                                                                    lora_request.lora_path).eval()
        return self._loras[lora_request.lora_int_id]

    def generate(self, prompts: Sequence[dict[str, Any]], sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
                 use_tqdm: bool = True, lora_request: Any = None) -> list[RequestOutput]:
        if self.asleep:
            raise RuntimeError("fake vLLM: generate called while the engine sleeps (call wake_up first)")
        self.generate_calls += 1
        if self.on_generate is not None:
            self.on_generate()
        params = list(sampling_params) if isinstance(sampling_params, (list, tuple)) else [sampling_params or SamplingParams()] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError("fake vLLM: one SamplingParams per prompt, or one for all")
        model = self._model_for(lora_request)
        out = []
        for i, (prompt, p) in enumerate(zip(prompts, params)):
            ids = list(prompt["prompt_token_ids"])
            completions = []
            for k in range(p.n):
                g = torch.Generator().manual_seed(p.seed + k) if p.seed is not None else self._stream
                completions.append(self._sample(model, ids, p, k, g))
            out.append(RequestOutput(str(i), ids, completions))
        return out

    @torch.no_grad()
    def _sample(self, model: torch.nn.Module, prompt: list[int], p: SamplingParams, index: int, g: torch.Generator) -> CompletionOutput:
        tokens: list[int] = []
        logprobs: list[dict[int, Logprob]] = []
        eos = self.tokenizer.eos_token_id
        reason, stop_reason = "length", None
        for _ in range(p.max_tokens):
            logits = model(input_ids=torch.tensor([prompt + tokens])).logits[0, -1].float()
            raw = torch.log_softmax(logits, -1)
            if p.temperature == 0:
                token = int(logits.argmax())
                processed = raw
            else:
                processed = torch.log_softmax(logits / p.temperature, -1)
                if p.top_p < 1.0:
                    probs, order = processed.exp().sort(descending=True)
                    drop = (probs.cumsum(-1) - probs) >= p.top_p
                    masked = torch.full_like(processed, float("-inf"))
                    masked[order[~drop]] = processed[order[~drop]]
                    processed = torch.log_softmax(masked, -1)
                token = int(torch.multinomial(processed.exp(), 1, generator=g))
            tokens.append(token)
            if p.logprobs is not None:
                value = (processed if self.logprobs_mode == "processed_logprobs" else raw)[token]
                logprobs.append({token: Logprob(float(value), 1)})
            if token == eos:
                reason = "stop"
                break
            text = self.tokenizer.decode(tokens, skip_special_tokens=True)
            hit = next((s for s in (p.stop or []) if s in text), None)
            if hit is not None:
                reason, stop_reason = "stop", hit
                break
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        if stop_reason is not None:
            text = text[: text.find(stop_reason)]
        return CompletionOutput(index, text, tokens, None, logprobs if p.logprobs is not None else None, reason, stop_reason)
