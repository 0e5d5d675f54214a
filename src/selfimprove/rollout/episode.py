"""Episodes: the one thing every method produces and the learner consumes.

An episode is a token sequence cut into segments (prompt, attempt, instruction, reflection, retry, ...).
Each segment says whether its tokens are trained, may carry a reward, and has per-token loss weights and
KL weights. That is enough for SFT, GRPO, SCoRe (two trainable turns), RRR (only the reflection trains)
and R^3 (a demonstration prefix that does not train) to share one learner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch


@dataclass
class Segment:
    kind: str
    token_ids: list[int]
    trainable: bool = False
    reward: float | None = None
    weights: list[float] | None = None  # per-token loss weight, default 1
    kl_weights: list[float] | None = None  # per-token KL weight, default 1
    logprobs: list[float] | None = None  # behaviour log-probs recorded while sampling
    text: str = ""
    # Sampled from the policy (an attempt, a retry) though maybe not trained: `loss.kl_scope: generated`
    # holds these tokens to the reference too. None: generated if and only if trainable.
    generated: bool | None = None

    @property
    def is_generated(self) -> bool:
        return self.trainable if self.generated is None else self.generated

    def __post_init__(self) -> None:
        n = len(self.token_ids)
        for name in ("weights", "kl_weights", "logprobs"):
            values = getattr(self, name)
            if values is not None and len(values) != n:
                raise ValueError(f"segment {self.kind!r}: {name} has {len(values)} entries for {n} tokens")


class Episode:
    """A list of segments of one problem's episode; `group` is shared by the episodes of one prompt.

    Rewards live on segments only, so an episode's reward and its segments' rewards cannot disagree:
    `reward` is the reward of the *outcome segment* (the last trainable one, else the last one), and
    setting it (or passing `reward=` to the constructor) writes that segment's reward. Per-turn
    estimators read every trainable segment that carries a reward (`turns`).

    A conversation with an environment (`sum_turns=True`) earns a reward per model turn: its `reward`
    is their sum (the return), setting it moves the last turn's reward so the sum is the value, and
    token-level estimators pay each turn's reward at that turn's last token (`paid_rewards`).
    """

    def __init__(
        self,
        segments: list[Segment],
        group: int,
        problem_id: str = "",
        reward: float | None = None,
        info: dict[str, Any] | None = None,
        sum_turns: bool = False,
    ) -> None:
        self.segments = list(segments)
        self.group = group
        self.problem_id = problem_id
        self.info: dict[str, Any] = {} if info is None else info
        self.sum_turns = sum_turns
        if reward is not None:
            self.reward = reward

    def __repr__(self) -> str:
        kinds = ", ".join(f"{s.kind}[{len(s.token_ids)}]" for s in self.segments)
        return f"Episode(group={self.group}, problem_id={self.problem_id!r}, reward={self.reward}, segments=[{kinds}])"

    @property
    def outcome(self) -> Segment:
        """The segment whose reward is the episode's: the last trainable one, else the last one."""
        if not self.segments:
            raise ValueError("an episode has at least one segment")
        for s in reversed(self.segments):
            if s.trainable:
                return s
        return self.segments[-1]

    @property
    def reward(self) -> float:
        if self.sum_turns:
            return float(sum(s.reward or 0.0 for s in self.segments if s.trainable))
        return float(self.outcome.reward or 0.0)

    @reward.setter
    def reward(self, value: float) -> None:
        if self.sum_turns:
            others = sum(s.reward or 0.0 for s in self.segments if s.trainable and s is not self.outcome)
            self.outcome.reward = float(value) - others
        else:
            self.outcome.reward = float(value)

    @property
    def turns(self) -> list[Segment]:
        """Trainable segments that carry a reward, in order (SCoRe's two attempts)."""
        return [s for s in self.segments if s.trainable and s.reward is not None]

    @property
    def token_ids(self) -> list[int]:
        return [t for s in self.segments for t in s.token_ids]

    @property
    def num_trainable(self) -> int:
        return sum(len(s.token_ids) for s in self.segments if s.trainable)

    def texts(self, detokenize: Callable[[Sequence[int]], str] | None = None) -> tuple[str, str]:
        """(prompt, completion) as text: the segments before the first trainable one, and the rest. A
        segment built from token ids only (the prompt, usually) is decoded with `detokenize` when given."""
        first = next((i for i, s in enumerate(self.segments) if s.trainable), len(self.segments))

        def text(s: Segment) -> str:
            return s.text or (detokenize(s.token_ids) if detokenize and s.token_ids else "")

        return "".join(map(text, self.segments[:first])), "".join(map(text, self.segments[first:]))

    def record(self, step: int, detokenize: Callable[[Sequence[int]], str] | None = None) -> dict[str, Any]:
        """The episode as one row of a run's `rollouts` buffer, in TRL's column names (`prompt`,
        `completion`, `reward`) plus what identifies it (`selfimprove export` reads these). Pass the
        sampler's `detokenize`: prompt segments hold token ids only. An episode from a start state (R^3)
        also says how many demonstration steps its prompt holds (`start_k`); a conversation also holds
        its chat `messages` (tool calls and results) and the `tools`' schemas."""
        prompt, completion = self.texts(detokenize)
        row = {"step": step, "problem_id": self.problem_id, "group": self.group, "prompt": prompt,
               "completion": completion, "reward": self.reward, "correct": bool(self.info.get("correct", False))}
        if "k" in self.info:
            row["start_k"] = int(self.info["k"])
        if "messages" in self.info:  # a conversation: its chat messages (tool calls and results) for export
            row["messages"] = self.info["messages"]
            row["tools"] = self.info.get("tools") or []
            row["turns"] = int(self.info.get("turns", 0))
            row["tool_calls"] = int(self.info.get("tool_calls", 0))
        return row

    def segment(self, kind: str) -> Segment:
        for s in self.segments:
            if s.kind == kind:
                return s
        raise KeyError(f"episode has no segment {kind!r}")

    def per_token(self, name: str, default: float) -> list[float]:
        """Concatenate a per-token field over segments (`default` where a segment has none)."""
        out: list[float] = []
        for s in self.segments:
            values = getattr(s, name)
            out.extend(values if values is not None else [default] * len(s.token_ids))
        return out

    def trainable_mask(self) -> list[float]:
        return [1.0 if s.trainable else 0.0 for s in self.segments for _ in s.token_ids]

    def generated_mask(self) -> list[float]:
        return [1.0 if s.is_generated else 0.0 for s in self.segments for _ in s.token_ids]

    def behaviour_known_mask(self) -> list[float]:
        """1 on tokens whose sampling log-prob was recorded (sampled segments), 0 elsewhere."""
        return [1.0 if s.logprobs is not None else 0.0 for s in self.segments for _ in s.token_ids]


@dataclass
class TokenBatch:
    """Right-padded tensors for a list of episodes. Per-token tensors are aligned with *targets*:
    column t describes token t+1 of `input_ids` (the token predicted from the prefix ending at t)."""

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    mask: torch.Tensor  # [B, L-1] 1 where the target token is trainable
    weights: torch.Tensor  # [B, L-1]
    kl_weights: torch.Tensor  # [B, L-1]
    behaviour_logprobs: torch.Tensor  # [B, L-1] the sampler's log-probs of the sampled tokens (0 where unknown)
    behaviour_mask: torch.Tensor  # [B, L-1] 1 where the sampler's log-prob was recorded
    kl_mask: torch.Tensor  # [B, L-1] 1 where the target token was generated by the policy (trained or not)
    rewards: torch.Tensor  # [B]
    groups: torch.Tensor  # [B] long
    turn_rewards: torch.Tensor | None = None  # [B, K] each turn's reward (trainable rewarded segments)
    turn_masks: torch.Tensor | None = None  # [B, K, L-1] each turn's target tokens
    advantages: torch.Tensor | None = None  # [B, L-1], filled by an estimator
    # [B, L-1], the learner's log-probs before the update (the proximal policy), filled by `prepare` when
    # the update cannot read them off its own forward pass (several epochs or minibatches, a critic, KL
    # in the reward); the behaviour log-probs above stay the sampler's.
    old_logprobs: torch.Tensor | None = None
    ref_logprobs: torch.Tensor | None = None  # [B, L-1], filled when a reference model is used
    old_values: torch.Tensor | None = None  # [B, L-1], PPO: values when the batch was sampled
    returns: torch.Tensor | None = None  # [B, L-1], PPO: value targets
    # [B, L-1] where each reward is paid, when a conversation earns rewards per turn (see `paid_rewards`)
    paid_rewards: torch.Tensor | None = None

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    def rows(self, index: slice | torch.Tensor) -> "TokenBatch":
        """A sub-batch (for micro-batching), trimmed to its own longest row."""
        picked = {k: (v[index] if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()}
        width = int(picked["attention_mask"].sum(-1).max().item()) if picked["attention_mask"].numel() else 1
        width = max(width, 2)
        for k, v in picked.items():
            if isinstance(v, torch.Tensor) and v.dim() >= 2 and k != "turn_rewards":
                picked[k] = v[..., :width] if k in ("input_ids", "attention_mask") else v[..., : width - 1]
        return TokenBatch(**picked)

    def to(self, device: torch.device | str) -> "TokenBatch":
        return TokenBatch(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()})


def _target_columns(start: int, n: int, width: int) -> slice:
    """Tokens [start, start + n) of a row are targets at columns [start - 1, start + n - 1); token 0 has none."""
    return slice(max(start, 1) - 1, min(start + n - 1, width))


def segment_mask(episodes: Sequence[Episode], kind: str, width: int) -> torch.Tensor:
    """[B, width] target-aligned mask of the trainable tokens of segments of one kind (column t is token t+1)."""
    out = torch.zeros((len(episodes), width))
    for i, e in enumerate(episodes):
        start = 0
        for s in e.segments:
            if s.kind == kind and s.trainable:
                out[i, _target_columns(start, len(s.token_ids), width)] = 1.0
            start += len(s.token_ids)
    return out


def _turn_tensors(episodes: Sequence[Episode], width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, K] rewards and [B, K, width] target-aligned masks of each episode's turns (column t is token
    t+1), K the most turns of any episode; missing turns are zero."""
    k = max(1, max(len(e.turns) for e in episodes))
    rewards = torch.zeros((len(episodes), k))
    masks = torch.zeros((len(episodes), k, width))
    for i, e in enumerate(episodes):
        start, turn = 0, 0
        for s in e.segments:
            if s.trainable and s.reward is not None:
                masks[i, turn, _target_columns(start, len(s.token_ids), width)] = 1.0
                rewards[i, turn] = float(s.reward)
                turn += 1
            start += len(s.token_ids)
    return rewards, masks


def paid_rewards(episodes: Sequence[Episode], mask: torch.Tensor) -> torch.Tensor:
    """[B, width] where token-level estimators pay rewards: a conversation (`sum_turns`) pays each turn's
    reward at that turn's last target token; any other episode its reward at its last trainable one."""
    from selfimprove.algos.token_advantages import last_token_mask

    width = mask.shape[1]
    out = last_token_mask(mask) * torch.tensor([e.reward for e in episodes], dtype=mask.dtype).unsqueeze(-1)
    for i, e in enumerate(episodes):
        if not e.sum_turns:
            continue
        out[i] = 0.0
        start = 0
        for s in e.segments:
            n = len(s.token_ids)
            columns = _target_columns(start, n, width)
            if s.trainable and s.reward and columns.stop > columns.start:
                out[i, columns.stop - 1] = float(s.reward)
            start += n
        last = last_token_mask(mask[i : i + 1])[0]
        out[i] += last * (e.reward - float(out[i].sum()))  # a turn with no token left pays at the end
    return out


def collate(episodes: Sequence[Episode], pad_id: int) -> TokenBatch:
    """Pack episodes into one right-padded `TokenBatch`."""
    if not episodes:
        raise ValueError("cannot collate an empty list of episodes")
    width = max(2, max(len(e.token_ids) for e in episodes))
    b = len(episodes)
    input_ids = torch.full((b, width), pad_id, dtype=torch.long)
    attention = torch.zeros((b, width), dtype=torch.long)
    names = ("mask", "weights", "kl_weights", "behaviour_logprobs", "behaviour_mask", "kl_mask")
    per_token = {name: torch.zeros((b, width - 1)) for name in names}
    for i, e in enumerate(episodes):
        ids = e.token_ids
        n = len(ids)
        input_ids[i, :n] = torch.tensor(ids, dtype=torch.long)
        attention[i, :n] = 1
        # Token j of the episode is predicted at column j-1; the first token is never a target.
        for name, values in (
            ("mask", e.trainable_mask()),
            ("weights", e.per_token("weights", 1.0)),
            ("kl_weights", e.per_token("kl_weights", 1.0)),
            ("behaviour_logprobs", e.per_token("logprobs", 0.0)),
            ("behaviour_mask", e.behaviour_known_mask()),
            ("kl_mask", e.generated_mask()),
        ):
            per_token[name][i, : n - 1] = torch.tensor(values[1:], dtype=torch.float32)
    turn_rewards, turn_masks = _turn_tensors(episodes, width - 1)
    paid = paid_rewards(episodes, per_token["mask"]) if any(e.sum_turns for e in episodes) else None
    return TokenBatch(
        input_ids=input_ids,
        attention_mask=attention,
        rewards=torch.tensor([e.reward for e in episodes], dtype=torch.float32),
        groups=torch.tensor([e.group for e in episodes], dtype=torch.long),
        turn_rewards=turn_rewards,
        turn_masks=turn_masks,
        paid_rewards=paid,
        **per_token,
    )
