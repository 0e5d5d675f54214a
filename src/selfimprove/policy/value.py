"""Value models for PPO: a scalar head on the policy's own trunk, or a separate critic model.

Both map a right-padded token batch to V(s_t) for every prefix; `values[:, t]` is the value of the
state after token t, i.e. before the token at t+1 is generated (aligned with target column t).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from transformers import PreTrainedModel


class ValueHead(nn.Module):
    """A linear scalar head, zero-initialised so PPO starts from V = 0 everywhere."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.proj(hidden.float()).squeeze(-1)


class ValueModel(nn.Module):
    """`shared=True`: the head reads the policy's last hidden state (one forward pass, one trunk).
    `shared=False`: a separate trunk (a copy of a HF model without its LM head) plus a head."""

    def __init__(self, hidden_size: int, trunk: PreTrainedModel | None = None) -> None:
        super().__init__()
        self.trunk = trunk
        self.head = ValueHead(hidden_size)

    @property
    def shared(self) -> bool:
        return self.trunk is None

    @classmethod
    def on_policy(cls, policy_model: PreTrainedModel) -> "ValueModel":
        return cls(policy_model.config.hidden_size)

    @classmethod
    def separate(cls, path: str | Path, dtype: torch.dtype = torch.float32) -> "ValueModel":
        from transformers import AutoModel

        trunk = AutoModel.from_pretrained(path, dtype=dtype)
        return cls(trunk.config.hidden_size, trunk)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, hidden: Tensor | None = None) -> Tensor:
        """Values [B, L]; a shared head needs the policy's last hidden state as `hidden`."""
        if self.trunk is None:
            if hidden is None:
                raise ValueError("a shared value head needs the policy's hidden states")
            return self.head(hidden)
        out = self.trunk(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        return self.head(out.last_hidden_state)
