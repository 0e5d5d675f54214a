"""What every policy engine speaks: sampling settings in, completions out."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

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

    `logprobs[i]` is log pi(token_ids[i] | prefix) under the sampling temperature (1.0 when greedy),
    before top-p truncation: the behaviour log-probabilities RL needs.
    """

    prompt_index: int
    prompt_ids: list[int]
    token_ids: list[int]
    text: str
    logprobs: list[float] = field(default_factory=list)
    finish_reason: FinishReason = "length"

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    def without_eos(self, eos_ids: Sequence[int]) -> tuple[list[int], list[float]]:
        """Tokens and log-probs without a final end token: inside a multi-turn episode the turn goes on."""
        if self.token_ids and self.token_ids[-1] in eos_ids:
            return list(self.token_ids[:-1]), list(self.logprobs[:-1])
        return list(self.token_ids), list(self.logprobs)
