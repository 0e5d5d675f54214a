"""The learner: the only place in selfimprove that calls `backward()`.

It turns a `TokenBatch` plus an objective into one optimizer step: micro-batching with gradient
accumulation (normalisers of the whole batch, so the result does not depend on the micro-batch size),
gradient clipping, AdamW with warm-up, and the frozen reference model for KL terms. Anything with a
torch `module` trains through it: the policy (`step`), and the learned critics, whose losses are
computed per micro-batch by the caller (`step_on`).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence, TypeVar

import torch
from torch import Tensor

from selfimprove.policy.logprobs import token_entropy, token_logprobs
from selfimprove.config import OptimConfig
from selfimprove.policy.base import TrainableModel
from selfimprove.policy.value import ValueModel
from selfimprove.rollout.episode import TokenBatch
from selfimprove.timing import phase
from selfimprove.train import distributed
from selfimprove.train.prefix import shared_prefix_forward


@dataclass(frozen=True)
class Norms:
    """Normalisers of the whole batch, shared by all its micro-batches."""

    num_sequences: int
    num_tokens: float
    max_len: int
    num_generated_tokens: float = 0.0  # targets the policy generated (trained or not): `loss.kl_scope: generated`


@dataclass
class Forward:
    """What one forward pass gives an objective, aligned with target columns [B, L-1]."""

    logp: Tensor
    values: Tensor | None = None
    entropy: Tensor | None = None


class Objective(Protocol):
    """Turns a forward pass over a micro-batch into a loss.

    Stats whose name ends in `loss` are already normalised by the whole batch (`Norms`) and are
    summed over micro-batches; stats whose name ends in `_max` are maxima (the largest over
    micro-batches is kept); all other stats are means over the call's trainable tokens and are
    averaged with token weights.
    """

    needs_entropy: bool

    def __call__(self, out: Forward, batch: TokenBatch, norms: Norms) -> tuple[Tensor, dict[str, Tensor]]: ...


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


M = TypeVar("M")


def is_max(name: str) -> bool:
    """A statistic that is a maximum (combined by max over micro-batches, ranks and updates)."""
    return name.endswith("_max")


def fusable(params: Sequence[torch.nn.Parameter]) -> bool:
    """Whether torch's fused AdamW takes these parameters (floating point, all on one CPU or CUDA device):
    one kernel over every tensor instead of a loop of small ops (3x faster on the tiny model's step)."""
    devices = {p.device for p in params}
    return (len(devices) == 1 and next(iter(devices)).type in ("cpu", "cuda")
            and all(p.dtype in (torch.float32, torch.float16, torch.bfloat16, torch.float64) for p in params))


class Learner:
    def __init__(
        self,
        policy: TrainableModel,
        config: OptimConfig,
        total_steps: int,
        *,
        reference: TrainableModel | None = None,
        adapter_reference: bool = False,
        value_model: ValueModel | None = None,
        temperature: float = 1.0,
    ) -> None:
        if reference is not None and adapter_reference:
            raise ValueError("use either a reference model or the adapter-disabled policy as reference, not both")
        self.policy = policy
        self.config = config
        self.temperature = temperature
        self.reference = reference
        self.adapter_reference = adapter_reference
        self.value_model = value_model.to(policy.device) if value_model is not None else None
        if reference is not None:
            reference.module.eval()
            reference.module.requires_grad_(False)
        params = [p for p in policy.module.parameters() if p.requires_grad]
        if self.value_model is not None:
            params += [p for p in self.value_model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=config.lr, betas=config.betas, eps=config.eps, weight_decay=config.weight_decay,
            fused=fusable(params) or None,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_lambda(config, total_steps))
        self.step_count = 0

    def _cast(self) -> contextlib.AbstractContextManager[Any]:
        """`optim.autocast`: the learner's passes with bf16 matrix products (weights stay as they are)."""
        if self.config.autocast == "none":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.policy.device.type, dtype=torch.bfloat16)

    def _micro_batches(self, batch: TokenBatch) -> list[TokenBatch]:
        size = self.config.micro_batch_size
        return [batch.rows(slice(i, i + size)) for i in range(0, batch.size, size)]

    def forward(self, batch: TokenBatch, *, with_entropy: bool = False, model: torch.nn.Module | None = None) -> Forward:
        """Log-probs of the targets (and values and entropy when asked) for one micro-batch, under the
        policy or under another `model` (e.g. the reference; values then come only from the policy)."""
        model = self.policy.module if model is None else model
        critic = self.value_model if model is self.policy.module else None
        if critic is None and self.config.share_prefix:
            fast = shared_prefix_forward(model, batch, self.temperature, with_entropy=with_entropy)
            if fast is not None:
                return Forward(fast[0], None, fast[1])
        shared = critic is not None and critic.shared
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False, output_hidden_states=shared)
        logits = out.logits[:, :-1, :]
        logp = token_logprobs(logits, batch.input_ids[:, 1:], self.temperature)
        entropy = token_entropy(logits, self.temperature) if with_entropy else None
        values = None
        if critic is not None:
            hidden = out.hidden_states[-1] if shared else None
            values = critic(batch.input_ids, batch.attention_mask, hidden=hidden)[:, :-1]
        return Forward(logp, values, entropy)

    @torch.no_grad()
    def _scan(self, policy: TrainableModel, batch: TokenBatch) -> tuple[Tensor, Tensor | None]:
        """One no-grad pass over a whole batch in micro-batches: log-probs and (policy only) values."""
        was_training = policy.module.training
        policy.module.eval()
        logp = torch.zeros_like(batch.mask)
        values = torch.zeros_like(batch.mask) if policy is self.policy and self.value_model is not None else None
        size = self.config.micro_batch_size
        for i in range(0, batch.size, size):
            with self._cast():
                out = self.forward(batch.rows(slice(i, i + size)).to(policy.device), model=policy.module)
            width = out.logp.shape[1]
            logp[i : i + size, :width] = out.logp.cpu()
            if values is not None and out.values is not None:
                values[i : i + size, :width] = out.values.float().cpu()
        policy.module.train(was_training)
        return logp, values

    def score_values(self, batch: TokenBatch) -> tuple[Tensor, Tensor]:
        """Behaviour log-probs and values of a whole batch, without gradients (PPO's old quantities)."""
        if self.value_model is None:
            raise RuntimeError("this learner has no value model")
        logp, values = self._scan(self.policy, batch)
        assert values is not None
        return logp, values

    def score(self, policy: TrainableModel, batch: TokenBatch) -> Tensor:
        """Per-target log-probs of a whole batch under `policy`, without gradients: [B, L-1]."""
        return self._scan(policy, batch)[0]

    def add_reference_logprobs(self, batch: TokenBatch) -> None:
        """Reference log-probs: a frozen model, or (LoRA) the policy with its adapter switched off."""
        if self.adapter_reference:
            with self.policy.module.disable_adapter():  # type: ignore[operator]
                batch.ref_logprobs = self.score(self.policy, batch)
        elif self.reference is not None:
            batch.ref_logprobs = self.score(self.reference, batch)
        else:
            raise RuntimeError("this learner has no reference model")

    def step(self, batch: TokenBatch, objective: Objective) -> dict[str, float]:
        """One optimizer step on `batch`; returns averaged statistics plus lr and grad norm."""
        model = self.policy.module
        model.train()
        with_entropy = bool(getattr(objective, "needs_entropy", False))
        norms = Norms(
            num_sequences=int((batch.mask.sum(-1) > 0).sum().item()),
            num_tokens=float(batch.mask.sum().item()),
            max_len=int(batch.mask.shape[1]),
            num_generated_tokens=float(batch.kl_mask.sum().item()),
        )
        self.optimizer.zero_grad(set_to_none=True)
        totals: dict[str, float] = {}
        ranks = distributed.current()  # data-parallel: this rank's share of the micro-batches
        if ranks.world > 1:  # every rank must hold the same batch (sampling is broadcast from rank 0)
            ranks.check_same(distributed.batch_digest([batch.input_ids, batch.attention_mask, batch.mask, batch.rewards]),
                             "batch")
        for micro in self._micro_batches(batch)[ranks.rank :: ranks.world]:
            if micro.mask.sum() == 0 and micro.kl_mask.sum() == 0:
                continue
            micro = micro.to(self.policy.device)
            with phase("forward_backward"):
                with self._cast():
                    out = self.forward(micro, with_entropy=with_entropy)
                loss, stats = objective(out, micro, norms)
                loss.backward()
            share = float(micro.mask.sum().item()) / max(norms.num_tokens, 1.0)
            totals["loss"] = totals.get("loss", 0.0) + float(loss.item())
            for k, v in stats.items():
                if is_max(k):
                    totals[k] = max(totals.get(k, -math.inf), float(v))
                else:
                    totals[k] = totals.get(k, 0.0) + (1.0 if k.endswith("loss") else share) * float(v)
        ranks.sum_gradients(self._parameters())
        totals = ranks.sum_stats(totals)
        with phase("optimizer"):
            totals.update(self._apply())
            self._publish()
        return totals

    def _publish(self) -> None:
        """Tell the engine its weights changed, with the learner's step as their version: a pool of
        samplers pushes them before it samples again, and completions record the version they used."""
        load = getattr(self.policy, "load_weights", None)
        if load is not None:
            load(self.policy.weight_state(), self.step_count)

    def step_on(self, micro_batches: Sequence[M], loss_of: Callable[[M], Tensor]) -> dict[str, float]:
        """One optimizer step on losses the caller computes per micro-batch, each already normalised by
        the whole batch (so they sum to the batch's loss): the critics train this way. The caller puts
        the module in train mode. Returns the summed loss, the lr used and the gradient norm."""
        self.optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in micro_batches:
            loss = loss_of(micro)
            loss.backward()
            total += float(loss.detach())
        return {"loss": total, **self._apply()}

    def _apply(self) -> dict[str, float]:
        """Clip, step the optimizer and the schedule: the end of every update."""
        grad_norm = torch.nn.utils.clip_grad_norm_(self._parameters(), self.config.max_grad_norm)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.step_count += 1
        return {"lr": lr, "grad_norm": float(grad_norm)}

    def _parameters(self) -> list[torch.nn.Parameter]:
        params = list(self.policy.module.parameters())
        if self.value_model is not None:
            params += list(self.value_model.parameters())
        return params

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step_count,
            "value_model": self.value_model.state_dict() if self.value_model is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.value_model is not None:
            if state.get("value_model") is None:
                raise ValueError("checkpoint has no value model but this run uses one")
            self.value_model.load_state_dict(state["value_model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step_count = int(state["step"])
