"""The engine boundary: what every engine speaks, and the two protocols the rest of the library types
against.

- `Sampler`: everything rollouts, search, critics' labelling and evaluation need from an engine:
  batched generation from text or token ids (`n` samples, temperature, top-p, stop strings, max
  tokens) with behaviour log-probs and finish reasons, the tokenizer's side of the prompt, and a way to
  receive new weights with a version number. The HF engine implements it; a Ray pool of engines and a
  vLLM engine implement it too (issue #11), so no method changes when the engine does.
- `TrainableModel`: what the learner and critics need from the model being trained: the torch module
  (parameters, train/eval), per-token log-probs under autograd, save as a normal HF folder, the weight
  state that samplers are synced from, and a copy of the trunk (for value models and critics).

`generator` arguments are torch generators: the HF engine draws from them directly; an engine that
samples elsewhere (vLLM, a Ray actor) derives its own seed from one draw of it, so a seeded search or
evaluation stays reproducible on every engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # annotations only: the CLI validates recipes without loading torch
    import torch
    from torch import Tensor

FinishReason = Literal["eos", "stop", "length"]


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. `temperature == 0` means greedy decoding (and then `n` copies are identical)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 32
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


@dataclass
class Completion:
    """One sampled continuation of one prompt.

    `logprobs[i]` is log pi(token_ids[i] | prefix) under the distribution the token was drawn from: the
    sampling temperature (1.0 when greedy), renormalised over the top-p nucleus when top_p < 1 (vLLM's
    `processed_logprobs`): the behaviour log-probabilities RL needs, the same on every engine.
    `version` is the weights version the engine sampled it with (asynchronous training reads its
    staleness from it).
    """

    prompt_index: int
    prompt_ids: list[int]
    token_ids: list[int]
    text: str
    logprobs: list[float] = field(default_factory=list)
    finish_reason: FinishReason = "length"
    version: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    def without_eos(self, eos_ids: Sequence[int]) -> tuple[list[int], list[float]]:
        """Tokens and log-probs without a final end token: inside a multi-turn episode the turn goes on."""
        if self.token_ids and self.token_ids[-1] in eos_ids:
            return list(self.token_ids[:-1]), list(self.logprobs[:-1])
        return list(self.token_ids), list(self.logprobs)


@runtime_checkable
class Sampler(Protocol):
    """An engine that samples (see the module docstring)."""

    @property
    def eos_ids(self) -> list[int]: ...

    @property
    def pad_id(self) -> int: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def weights_version(self) -> int: ...

    def encode_prompt(self, text: str) -> list[int]:
        """Token ids of a prompt as the model sees it (with the chat template when the engine uses one)."""
        ...

    def encode_completion(self, text: str, *, add_eos: bool = True) -> list[int]: ...

    def detokenize(self, ids: Sequence[int]) -> str: ...

    def save_tokenizer(self, path: str | Path) -> None:
        """Write the tokenizer into a folder (e.g. a critic's, so it loads on its own)."""
        ...

    def generate(
        self, prompts: Sequence[str], params: SamplingParams, *, generator: torch.Generator | None = None
    ) -> list[Completion]:
        """`params.n` completions per prompt, prompt-major: completion k of prompt i is at i * n + k."""
        ...

    def generate_ids(
        self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *, generator: torch.Generator | None = None
    ) -> list[Completion]: ...

    def make_generator(self, seed: int) -> torch.Generator:
        """A generator for a stream of its own (a search, an evaluation), seeded with `seed`."""
        ...

    def load_weights(self, weights: Mapping[str, Tensor], version: int) -> None:
        """Sample from now on with these weights (a learner's `weight_state()`), tagged `version`."""
        ...

    def rng_state(self) -> dict[str, Any]:
        """The engine's own sampling stream, for checkpoints (exact resume)."""
        ...

    def set_rng_state(self, state: Mapping[str, Any]) -> None: ...


@runtime_checkable
class TrainableModel(Protocol):
    """A model the learner trains (see the module docstring)."""

    @property
    def module(self) -> torch.nn.Module: ...

    @property
    def device(self) -> torch.device: ...

    def token_logprobs(self, input_ids: Tensor, attention_mask: Tensor, temperature: float = 1.0) -> Tensor:
        """log pi(input_ids[:, t+1] | input_ids[:, :t+1]) for right-padded rows, [B, L-1], differentiable."""
        ...

    def save(self, path: str | Path) -> Path: ...

    def weight_state(self) -> dict[str, Tensor]:
        """The weights a sampler needs to sample like this model (`Sampler.load_weights`)."""
        ...

    def trunk_copy(self) -> torch.nn.Module:
        """A copy of the transformer without its LM head (a LoRA adapter merged in), for critics."""
        ...


@runtime_checkable
class Engine(Sampler, TrainableModel, Protocol):
    """What a training job holds as its policy: a model that is trained and sampled from (the HF engine
    is both in one process; a learner with a pool of samplers in sync presents the same)."""


# Where model configs keep their context length (Llama / Qwen, GPT-2, ...): the fit checks read the same keys.
CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length")


def context_limit(sampler: Any) -> int | None:
    """The most positions an engine takes: the least of its own limit (`max_model_len`: vLLM's, which may be
    set below the model's) and its model config's (or that config's `text_config`); None when neither says."""
    limits = []
    own = getattr(sampler, "max_model_len", None)
    if isinstance(own, int) and own > 0:
        limits.append(own)
    config = getattr(getattr(sampler, "model", None), "config", None)
    for source in (config, getattr(config, "text_config", None)):
        found = next((v for key in CONTEXT_KEYS if isinstance(v := getattr(source, key, None), int) and v > 0), None)
        if found is not None:
            limits.append(found)
            break
    return min(limits) if limits else None


class SamplerWrapper:
    """An engine around another (`inner`): every attribute it does not define is the inner one's."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


class CountingSampler(SamplerWrapper):
    """A sampler that counts the tokens it generates (`tokens`), so any stage can report its spend; every
    other attribute is the wrapped engine's."""

    def __init__(self, inner: Sampler) -> None:
        super().__init__(inner)
        self.tokens = 0

    def generate(self, prompts: Sequence[str], params: SamplingParams, *, generator: torch.Generator | None = None) -> list[Completion]:
        out = self.inner.generate(prompts, params, generator=generator)
        self.tokens += sum(c.num_tokens for c in out)
        return out

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *,
                     generator: torch.Generator | None = None) -> list[Completion]:
        out = self.inner.generate_ids(prompt_ids, params, generator=generator)
        self.tokens += sum(c.num_tokens for c in out)
        return out
