"""The learner: the only place in selfimprove that calls `backward()`.

It turns a `TokenBatch` plus an objective into one optimizer step: micro-batching with gradient
accumulation (normalisers of the whole batch, so the result does not depend on the micro-batch size),
gradient clipping, AdamW with warm-up, and the frozen reference model for KL terms.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol

import torch
from torch import Tensor

from selfimprove.config import OptimConfig
from selfimprove.policy.hf import HFPolicy
from selfimprove.rollout.episode import TokenBatch


@dataclass(frozen=True)
class Norms:
    """Normalisers of the whole batch, shared by all its micro-batches."""

    num_sequences: int
    num_tokens: float
    max_len: int


class Objective(Protocol):
    def __call__(self, logp: Tensor, batch: TokenBatch, norms: Norms) -> tuple[Tensor, dict[str, Tensor]]: ...


def lr_lambda(config: OptimConfig, total_steps: int) -> Callable[[int], float]:
    """Linear warm-up, then constant, linear or cosine decay to `min_lr_ratio`."""

    def factor(step: int) -> float:
        if config.warmup_steps and step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        if config.schedule == "constant":
            return 1.0
        span = max(1, total_steps - config.warmup_steps)
        progress = min(1.0, (step - config.warmup_steps) / span)
        decay = 1.0 - progress if config.schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return config.min_lr_ratio + (1.0 - config.min_lr_ratio) * decay

    return factor


class Learner:
    def __init__(
        self,
        policy: HFPolicy,
        config: OptimConfig,
        total_steps: int,
        *,
        reference: HFPolicy | None = None,
        temperature: float = 1.0,
    ) -> None:
        self.policy = policy
        self.config = config
        self.temperature = temperature
        self.reference = reference
        if reference is not None:
            reference.model.eval()
            reference.model.requires_grad_(False)
        params = [p for p in policy.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config, total_steps))
        self.step_count = 0

    @staticmethod
    def frozen_copy(policy: HFPolicy) -> HFPolicy:
        """A frozen copy of the policy as it is now, to serve as the KL reference."""
        return HFPolicy(copy.deepcopy(policy.model), policy.tokenizer, chat=policy.chat)

    def _micro_batches(self, batch: TokenBatch) -> list[TokenBatch]:
        size = self.config.micro_batch_size
        return [batch.rows(slice(i, i + size)) for i in range(0, batch.size, size)]

    @torch.no_grad()
    def score(self, policy: HFPolicy, batch: TokenBatch) -> Tensor:
        """Per-target log-probs of a whole batch under `policy`, without gradients: [B, L-1]."""
        was_training = policy.model.training
        policy.model.eval()
        out = torch.zeros_like(batch.mask)
        size = self.config.micro_batch_size
        for i in range(0, batch.size, size):
            micro = batch.rows(slice(i, i + size)).to(policy.device)
            lp = policy.token_logprobs(micro.input_ids, micro.attention_mask, self.temperature).cpu()
            out[i : i + size, : lp.shape[1]] = lp
        policy.model.train(was_training)
        return out

    def add_reference_logprobs(self, batch: TokenBatch) -> None:
        if self.reference is None:
            raise RuntimeError("this learner has no reference model")
        batch.ref_logprobs = self.score(self.reference, batch)

    def step(self, batch: TokenBatch, objective: Objective) -> dict[str, float]:
        """One optimizer step on `batch`; returns averaged statistics plus lr and grad norm."""
        model = self.policy.model
        model.train()
        norms = Norms(
            num_sequences=int((batch.mask.sum(-1) > 0).sum().item()),
            num_tokens=float(batch.mask.sum().item()),
            max_len=int(batch.mask.shape[1]),
        )
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        for micro in self._micro_batches(batch):
            if micro.mask.sum() == 0:
                continue
            micro = micro.to(self.policy.device)
            logp = self.policy.token_logprobs(micro.input_ids, micro.attention_mask, self.temperature)
            loss, stats = objective(logp, micro, norms)
            loss.backward()
            share = float(micro.mask.sum().item()) / max(norms.num_tokens, 1.0)
            totals["loss"] = totals.get("loss", 0.0) + float(loss.item())
            for k, v in stats.items():
                totals[k] = totals.get(k, 0.0) + share * float(v)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), self.config.max_grad_norm)
        totals["lr"] = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step_count += 1
        totals["grad_norm"] = float(grad_norm)
        return totals

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step_count = int(state["step"])
