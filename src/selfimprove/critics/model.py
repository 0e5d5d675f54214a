"""Learned critics: a scalar head on a copy of the policy's trunk, read at a sequence's last token.

AlphaLLM's value function, PRM and ORM are all "the LM plus a scalar head" (SPECS §5); they differ in
what they are trained on (`critics/labels.py`) and with which loss. So one model class does the work
and three small subclasses name the kind and its loss:
- `ValueCritic`: expected final correctness from a state (prompt + steps so far); MSE on Monte-Carlo
  fractions of right rollouts;
- `PRMCritic`: is the last step still on a path that can end right; BCE on per-step labels;
- `ORMCritic`: is this finished answer right; BCE on verified outcomes. It is trained on finished
  answers only, so its score on an unfinished state is out of distribution: give it finished states
  (e.g. fast rollouts of a leaf, as AlphaLLM does).

The trunk is a copy of the policy's (`TrainableModel.trunk_copy`, inside a `ValueModel` from
`policy/value.py`), so training a critic never moves the policy; the critic trains through the one
`Learner` (it is a trainable model: `module` is its network). A critic reads token ids, never text and never the gold
answer. `critic_input` is the one place that says what a critic reads: prompt and completion ids
without end tokens, plus one end token when the state is finished, so a finished answer and an
unfinished prefix with the same text are different inputs, whether or not the caller's ids kept the
end token the policy emitted.

A critic folder holds the trunk as a normal HF folder (`AutoModel.from_pretrained` loads it), the head
as `head.safetensors`, `critic.json` (kind, end/pad ids, free-form metadata) and the tokenizer, so
`load_critic(folder)` rebuilds it in another process (e.g. `selfimprove search`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Literal, Sequence

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor
from transformers import AutoModel

from selfimprove.policy.base import Engine, Sampler
from selfimprove.policy.value import ValueModel
from selfimprove.rollout.state import State
from selfimprove.tasks.base import Problem

from selfimprove.critics.recipe import Kind  # noqa: E402  (the names live with the schema)
Loss = Literal["mse", "bce"]

CRITIC_FILE = "critic.json"
HEAD_FILE = "head.safetensors"
FORMAT_VERSION = 1


def critic_input(token_ids: Sequence[int], *, finished: bool, eos_ids: Sequence[int]) -> list[int]:
    """What a critic reads for a state: ids without trailing end tokens, plus `eos_ids[0]` if finished."""
    ids = list(token_ids)
    ends = set(eos_ids)
    while ids and ids[-1] in ends:
        ids.pop()
    if finished and eos_ids:
        ids.append(int(eos_ids[0]))
    return ids


def pad_right(rows: Sequence[Sequence[int]], pad_id: int, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Right-padded ids and attention mask: with causal attention a row's last real token never sees
    padding, so its hidden state is the same as without padding."""
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("a critic scores non-empty token sequences (a prompt has at least one token)")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(list(r), dtype=torch.long)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


class LearnedCritic:
    """A scalar critic on token sequences; subclasses fix `kind` and the training `loss`."""

    kind: ClassVar[Kind]
    loss: ClassVar[Loss]

    def __init__(self, network: ValueModel, *, eos_ids: Sequence[int], pad_id: int, batch_size: int = 64,
                 meta: dict[str, Any] | None = None) -> None:
        if network.trunk is None:
            raise ValueError("a learned critic needs its own trunk (ValueModel with a separate trunk)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.network = network
        self.eos_ids = [int(i) for i in eos_ids]
        self.pad_id = int(pad_id)
        self.batch_size = batch_size
        self.meta = dict(meta or {})

    @property
    def name(self) -> str:
        return self.kind

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    @property
    def module(self) -> torch.nn.Module:
        """The network the learner trains (trunk and head)."""
        return self.network

    @property
    def vocab_size(self) -> int:
        assert self.network.trunk is not None
        return int(self.network.trunk.config.vocab_size)

    @classmethod
    def from_policy(cls, policy: Engine, *, batch_size: int = 64, meta: dict[str, Any] | None = None) -> "LearnedCritic":
        """A new critic: a copy of the policy's trunk and a zero head (every score starts at 0.5)."""
        trunk = policy.trunk_copy()
        network = ValueModel(trunk.config.hidden_size, trunk).to(policy.device)
        return cls(network, eos_ids=policy.eos_ids, pad_id=policy.pad_id, batch_size=batch_size, meta=meta)

    # ----------------------------------------------------------------------------- scoring
    def logits(self, rows: Sequence[Sequence[int]]) -> Tensor:
        """Head output (before the sigmoid) at each row's last token, shape [B]; differentiable."""
        ids, mask = pad_right(rows, self.pad_id, self.device)
        values = self.network(ids, mask)  # [B, L]: the head at every position
        last = mask.sum(dim=1) - 1
        return values.gather(1, last[:, None]).squeeze(1)

    @torch.no_grad()
    def score_ids(self, rows: Sequence[Sequence[int]]) -> list[float]:
        """Scores in [0, 1] for ready-made critic inputs, in micro-batches of similar length."""
        if not rows:
            return []
        was_training = self.network.training
        self.network.eval()
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
        out = [0.0] * len(rows)
        try:
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                probs = torch.sigmoid(self.logits([rows[i] for i in chunk]).float()).cpu().tolist()
                for i, p in zip(chunk, probs):
                    out[i] = float(p)
        finally:
            self.network.train(was_training)
        return out

    def score(self, problems: Sequence[Problem], states: Sequence[State]) -> list[float]:
        """One score per state (the Critic protocol). `problems` is not read: a learned critic judges
        what the policy wrote, never the gold answer."""
        return self.score_ids([critic_input(s.token_ids, finished=s.finished, eos_ids=self.eos_ids) for s in states])

    # ----------------------------------------------------------------------------- saving
    def save(self, path: str | Path, tokenizer_of: Sampler | None = None) -> Path:
        """Write the critic folder; `tokenizer_of` (the policy) adds its tokenizer so the folder loads alone."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        assert self.network.trunk is not None
        self.network.trunk.save_pretrained(path)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.network.head.state_dict().items()}, str(path / HEAD_FILE))
        if tokenizer_of is not None:
            tokenizer_of.save_tokenizer(path)
        info = {"format": FORMAT_VERSION, "kind": self.kind, "loss": self.loss, "eos_ids": self.eos_ids,
                "pad_id": self.pad_id, "meta": self.meta}
        (path / CRITIC_FILE).write_text(json.dumps(info, indent=2))
        return path


class ValueCritic(LearnedCritic):
    """v(s): the chance that the policy, continuing from state s, ends with a right answer."""

    kind = "value"
    loss = "mse"


class PRMCritic(LearnedCritic):
    """PRM(s): whether the state's last step keeps a right answer reachable."""

    kind = "prm"
    loss = "bce"


class ORMCritic(LearnedCritic):
    """ORM(s): whether a finished answer is right."""

    kind = "orm"
    loss = "bce"


CRITICS: dict[str, type[LearnedCritic]] = {"value": ValueCritic, "prm": PRMCritic, "orm": ORMCritic}


def load_critic(path: str | Path, *, device: str = "cpu", dtype: str = "float32", batch_size: int = 64) -> LearnedCritic:
    """Rebuild a saved critic (its class comes from `critic.json`)."""
    path = Path(path)
    if not (path / CRITIC_FILE).is_file():
        raise FileNotFoundError(f"{path} is not a critic folder (no {CRITIC_FILE})")
    info = json.loads((path / CRITIC_FILE).read_text())
    if info.get("format") != FORMAT_VERSION:
        raise ValueError(f"{path}: critic format {info.get('format')!r} is not {FORMAT_VERSION}")
    cls = CRITICS.get(info.get("kind", ""))
    if cls is None:
        raise ValueError(f"{path}: unknown critic kind {info.get('kind')!r} (known: {', '.join(CRITICS)})")
    trunk = AutoModel.from_pretrained(path, dtype=getattr(torch, dtype))
    network = ValueModel(trunk.config.hidden_size, trunk)
    network.head.load_state_dict(load_file(str(path / HEAD_FILE)))
    network.to(device)
    return cls(network, eos_ids=info["eos_ids"], pad_id=info["pad_id"], batch_size=batch_size, meta=info.get("meta"))
