"""The HF engine: any local Hugging Face causal-LM folder (the built-in tiny model included) as both a
`Sampler` (our batched decode loop) and a `TrainableModel` (the learner trains `module` in place).

Because sampler and trained model are one object, syncing weights is free: `load_weights` only checks
and records the version (or copies when given another model's weights).
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from selfimprove.policy.logprobs import token_logprobs
from selfimprove.policy.base import Completion, SamplingParams
from selfimprove.policy.decode import decode
from selfimprove.timing import timed

log = logging.getLogger(__name__)

ADAPTER_CONFIG = "adapter_config.json"


def encode_prompt(tokenizer: PreTrainedTokenizerBase, text: str, *, chat: bool) -> list[int]:
    """A prompt's token ids as the model sees them: with the chat template (one user turn) or plain."""
    if chat:
        ids = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True)
        return list(ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids)
    return list(tokenizer(text).input_ids)


def is_adapter_model(model: torch.nn.Module) -> bool:
    """A PEFT model (a base model with an adapter), recognised without importing peft."""
    return hasattr(model, "peft_config") and callable(getattr(model, "disable_adapter", None))


def adapter_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A PEFT model's adapter tensors under the model's own names (`lora_A`/`lora_B`, and anything else
    it trains): what a sampler with the same base and adapter layout needs to match it."""
    return {n: p.detach() for n, p in model.named_parameters() if "lora_" in n or p.requires_grad}


class HFPolicy:
    """Sampling, greedy decoding, per-token log-probabilities and save/load for one HF model.

    With `chat=True` prompts are wrapped in the tokenizer's chat template as a single user turn.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        chat: bool = False,
        seed: int = 0,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.chat = chat
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.generator = torch.Generator(device="cpu" if model.device.type == "cpu" else model.device)
        self.generator.manual_seed(seed)
        self._version = 0

    # ----------------------------------------------------------------------------- loading and saving
    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        device: str = "cpu",
        dtype: str = "float32",
        chat: bool = False,
        seed: int = 0,
    ) -> "HFPolicy":
        """Load a HF model folder, or a LoRA adapter folder (its base model plus the adapter, frozen)."""
        path = Path(path)
        if not (path / "config.json").is_file():
            if (path / ADAPTER_CONFIG).is_file():
                return cls._load_adapter_folder(path, device=device, dtype=dtype, chat=chat, seed=seed)
            raise FileNotFoundError(f"{path} is not a Hugging Face model folder (no config.json)")
        tokenizer = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).to(device)
        return cls(model, tokenizer, chat=chat, seed=seed)

    @classmethod
    def _load_adapter_folder(cls, path: Path, *, device: str, dtype: str, chat: bool, seed: int) -> "HFPolicy":
        """A LoRA run saves only its adapter; its config names the base folder the adapter applies to.

        The adapter stays attached (not merged) so log-probs equal the trained policy's exactly; it is
        not trainable: this is for evaluation and sampling (a LoRA run resumes via `lora.load_adapter`).
        """
        from peft import PeftConfig, PeftModel

        base = PeftConfig.from_pretrained(str(path)).base_model_name_or_path
        if not base:
            raise FileNotFoundError(f"{path}: the adapter config names no base model (base_model_name_or_path)")
        base_dir = Path(base)
        if not base_dir.is_absolute() and not (base_dir / "config.json").is_file():
            base_dir = path / base_dir  # a relative base may be relative to the adapter folder itself
        if not (base_dir / "config.json").is_file():
            raise FileNotFoundError(
                f"{path}: base model {base!r} named by adapter_config.json is not a Hugging Face model folder"
            )
        tokenizer = AutoTokenizer.from_pretrained(path if (path / "tokenizer_config.json").is_file() else base_dir)
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=getattr(torch, dtype)).to(device)
        with warnings.catch_warnings():  # peft touches an attribute transformers flags as deprecated
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model = PeftModel.from_pretrained(model, str(path), is_trainable=False).to(device)
        model.eval()
        return cls(model, tokenizer, chat=chat, seed=seed)

    def save(self, path: str | Path) -> Path:
        """Write a normal HF folder (`AutoModelForCausalLM.from_pretrained(path)` loads it back), or for a
        LoRA policy the adapter and tokenizer (`HFPolicy.load(path)` loads it back onto its base)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        return path

    # ----------------------------------------------------------------------------- TrainableModel
    @property
    def module(self) -> torch.nn.Module:
        return self.model

    @property
    def device(self) -> torch.device:
        return self.model.device

    def weight_state(self) -> dict[str, torch.Tensor]:
        """What a sampler needs to sample like this model: every weight, or for a LoRA policy only the
        adapter (its trainable tensors; a sampler holding the same base and adapter layout needs
        nothing else, so a pool or vLLM never receives the frozen base again)."""
        if is_adapter_model(self.model):
            return adapter_state(self.model)
        return {k: v.detach() for k, v in self.model.state_dict().items()}

    def trunk_copy(self) -> torch.nn.Module:
        model = self.model
        if hasattr(model, "merge_and_unload"):  # a PEFT model: fold the adapter into a copy of the weights
            return copy.deepcopy(model).merge_and_unload().base_model
        return copy.deepcopy(model.base_model)

    def frozen_copy(self) -> "HFPolicy":
        """A frozen copy of the policy as it is now (e.g. a KL reference)."""
        model = copy.deepcopy(self.model)
        model.eval()
        model.requires_grad_(False)
        return HFPolicy(model, self.tokenizer, chat=self.chat)

    # ----------------------------------------------------------------------------- Sampler
    @property
    def weights_version(self) -> int:
        return self._version

    def load_weights(self, weights: Mapping[str, torch.Tensor], version: int) -> None:
        """Weights of the model this engine trains are already in place; others are copied in: all of
        them, or a part (a LoRA adapter's tensors) onto the weights this model already holds."""
        own = self.model.state_dict()
        unknown = sorted(k for k in weights if k not in own)
        if unknown:
            raise KeyError(f"load_weights: {len(unknown)} names this model does not have, e.g. {unknown[:3]}")
        if any(own[k].data_ptr() != v.data_ptr() for k, v in weights.items()):
            if len(weights) == len(own):
                self.model.load_state_dict(dict(weights), strict=True)
            else:
                with torch.no_grad():
                    for k, v in weights.items():
                        own[k].copy_(v)
        self._version = int(version)

    def make_generator(self, seed: int) -> torch.Generator:
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed)
        return generator

    def rng_state(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "version": self._version}

    def set_rng_state(self, state: Mapping[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self._version = int(state.get("version", 0))

    @property
    def vocab_size(self) -> int:
        return int(self.model.config.vocab_size)

    @property
    def pad_id(self) -> int:
        return int(self.tokenizer.pad_token_id)

    @property
    def eos_ids(self) -> list[int]:
        ids = self.model.generation_config.eos_token_id
        ids = [ids] if isinstance(ids, int) else list(ids or [])
        if self.tokenizer.eos_token_id is not None and self.tokenizer.eos_token_id not in ids:
            ids.append(self.tokenizer.eos_token_id)
        return ids

    def encode_prompt(self, text: str) -> list[int]:
        return encode_prompt(self.tokenizer, text, chat=self.chat)

    def encode_completion(self, text: str, *, add_eos: bool = True) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=False).input_ids)
        return ids + [self.eos_ids[0]] if add_eos else ids

    def save_tokenizer(self, path: str | Path) -> None:
        self.tokenizer.save_pretrained(Path(path))

    def detokenize(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    # ----------------------------------------------------------------------------- generation
    def generate(
        self, prompts: Sequence[str], params: SamplingParams, *, generator: torch.Generator | None = None
    ) -> list[Completion]:
        """`params.n` completions per prompt, prompt-major: completion k of prompt i is at i * n + k.

        Sampling draws from the policy's own seeded generator unless another is given (evaluation
        passes its own, so it never shifts a training run's random stream).
        """
        return self.generate_ids([self.encode_prompt(p) for p in prompts], params, generator=generator)

    @timed("generate")
    def generate_ids(
        self,
        prompt_ids: Sequence[Sequence[int]],
        params: SamplingParams,
        *,
        generator: torch.Generator | None = None,
    ) -> list[Completion]:
        was_training = self.model.training
        self.model.eval()
        try:
            completions = decode(
                self.model,
                prompt_ids,
                params,
                pad_id=self.pad_id,
                eos_ids=self.eos_ids,
                detokenize=self.detokenize,
                generator=generator if generator is not None else self.generator,
            )
        finally:
            self.model.train(was_training)
        for c in completions:
            c.version = self._version
        return completions

    # ----------------------------------------------------------------------------- scoring
    def token_logprobs(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0
    ) -> torch.Tensor:
        """log pi(input_ids[:, t+1] | input_ids[:, :t+1]) for right-padded rows: shape [B, L-1].

        Differentiable; the learner calls it under autograd, scoring calls it under no_grad.
        """
        logits = self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits
        return token_logprobs(logits[:, :-1, :], input_ids[:, 1:], temperature)

    @torch.no_grad()
    def logprobs(
        self, prompt_ids: Sequence[Sequence[int]], completion_ids: Sequence[Sequence[int]], temperature: float = 1.0
    ) -> list[list[float]]:
        """Per-token log-probabilities of given completions after given prompts."""
        rows = [list(p) + list(c) for p, c in zip(prompt_ids, completion_ids, strict=True)]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        lp = self.token_logprobs(ids.to(self.device), mask.to(self.device), temperature).cpu()
        out = []
        for i, (p, c) in enumerate(zip(prompt_ids, completion_ids)):
            start = len(p) - 1
            out.append(lp[i, start : start + len(c)].tolist())
        return out
