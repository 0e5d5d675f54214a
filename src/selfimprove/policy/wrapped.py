"""What every engine that samples somewhere else has in common (the Ray pool, vLLM): the learner trains a
local `HFPolicy` in this process, so everything a `TrainableModel` is, and the tokenizer side of a
`Sampler`, is the local model's; the engine adds only how it samples (`generate_ids`) and when it
sends the weights (`push`). Its own random stream is a call counter (`seed_for`), checkpointed with
the local engine's state.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from selfimprove.policy.base import Completion, SamplingParams

if TYPE_CHECKING:
    import torch

    from selfimprove.policy.hf import HFPolicy


def derived_seed(*parts: object, bits: int = 63) -> int:
    """A seed from SHA-256 of its parts (Python's `hash` is salted per process)."""
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:8], "big") >> (64 - bits)


class LocalLearnerEngine:
    """Base of engines whose learner is a local `HFPolicy` (`self.local`) and whose sampler is elsewhere."""

    def __init__(self, local: HFPolicy, seed: int) -> None:
        self.local = local
        self.seed = seed
        self._calls = 0

    def __getattr__(self, name: str) -> Any:
        # module, device, token_logprobs, save, weight_state, trunk_copy, tokenizer, encode_*, pad_id, ...
        if name == "local":
            raise AttributeError(name)
        return getattr(self.local, name)

    @property
    def weights_version(self) -> int:
        return self.local.weights_version

    def load_weights(self, weights: Mapping[str, Any], version: int) -> None:
        """The learner's new weights: in place locally; `push` sends them before the next sample."""
        self.local.load_weights(weights, version)

    def generate(self, prompts: Sequence[str], params: SamplingParams, *, generator: "torch.Generator | None" = None
                 ) -> list[Completion]:
        return self.generate_ids([self.local.encode_prompt(p) for p in prompts], params, generator=generator)

    def generate_ids(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams, *,
                     generator: "torch.Generator | None" = None) -> list[Completion]:
        raise NotImplementedError

    def seed_for(self, generator: "torch.Generator | None", bits: int = 62) -> tuple[int, ...]:
        """The parts of this sampling call's seed: (seed, call) from the engine's own stream, or one number
        drawn from a caller's generator (evaluation and search keep their own streams)."""
        if generator is None:
            self._calls += 1
            return (self.seed, self._calls - 1)
        import torch

        return (int(torch.randint(0, 2**bits, (1,), generator=generator)),)

    def make_generator(self, seed: int) -> "torch.Generator":
        return self.local.make_generator(seed)

    def rng_state(self) -> dict[str, Any]:
        return {"local": self.local.rng_state(), "calls": self._calls}

    def set_rng_state(self, state: Mapping[str, Any]) -> None:
        self.local.set_rng_state(state["local"])
        self._calls = int(state.get("calls", 0))
