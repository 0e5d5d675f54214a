"""What a search spent: generated tokens, policy calls, critic calls, and an optional token limit.

Every search charges one `Budget` per problem (results report spend per problem), and checks
`exhausted` before each new policy call, so "stop at a token budget" means: no call starts once the
problem has generated `max_tokens` tokens (the call in flight finishes, so a search may overshoot by
at most one batch of steps).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass


@dataclass
class Budget:
    max_tokens: int | None = None  # None: no limit
    tokens: int = 0  # tokens the policy generated for this problem (every sample, kept or not)
    policy_calls: int = 0  # batched generate calls that included this problem
    critic_calls: int = 0  # batched critic calls that included this problem
    critic_items: int = 0  # states this problem's critic calls scored

    @property
    def exhausted(self) -> bool:
        return self.max_tokens is not None and self.tokens >= self.max_tokens

    def remaining(self) -> int | None:
        return None if self.max_tokens is None else max(0, self.max_tokens - self.tokens)

    def charge_policy(self, tokens: int) -> None:
        self.tokens += int(tokens)
        self.policy_calls += 1

    def charge_critic(self, items: int, calls: int = 1) -> None:
        """`calls` batched critic calls, each scoring `items` of this problem's states."""
        self.critic_calls += calls
        self.critic_items += calls * int(items)

    def add(self, spent: Budget) -> None:
        """Charge what a sub-search spent with its own budget (e.g. a completion that must not stop at the limit)."""
        self.tokens += spent.tokens
        self.policy_calls += spent.policy_calls
        self.critic_calls += spent.critic_calls
        self.critic_items += spent.critic_items

    def add_lockstep(self, spent: Sequence[Budget]) -> None:
        """Charge sub-searches that ran in lockstep, each batched call serving all of them (DVTS's subtrees):
        tokens and scored states add up; calls count once per round, i.e. the most any of them made."""
        if not spent:
            return
        self.tokens += sum(b.tokens for b in spent)
        self.critic_items += sum(b.critic_items for b in spent)
        self.policy_calls += max(b.policy_calls for b in spent)
        self.critic_calls += max(b.critic_calls for b in spent)

    def as_dict(self) -> dict[str, int | None]:
        return asdict(self)
