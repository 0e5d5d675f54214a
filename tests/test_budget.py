"""What a search spent (`rollout.budget.Budget`): a sub-search's spend added, and lockstep subtrees' calls
counted once per round."""

from __future__ import annotations

from selfimprove.rollout.budget import Budget


def test_a_budget_adds_a_sub_searchs_spend_and_lockstep_subtrees_count_calls_once() -> None:
    total = Budget(max_tokens=100, tokens=5, policy_calls=1)
    total.add(Budget(tokens=7, policy_calls=2, critic_calls=1, critic_items=3))
    assert (total.tokens, total.policy_calls, total.critic_calls, total.critic_items, total.max_tokens) == (12, 3, 1, 3, 100)
    # three subtrees in lockstep: rounds of 4, 2 and 3 policy calls served by 4 batched calls; 2 critic calls
    subtrees = [Budget(tokens=10, policy_calls=4, critic_calls=2, critic_items=8), Budget(tokens=6, policy_calls=2, critic_calls=1,
                                                                                         critic_items=4),
                Budget(tokens=9, policy_calls=3, critic_calls=2, critic_items=6)]
    total.add_lockstep(subtrees)
    assert (total.tokens, total.policy_calls, total.critic_calls, total.critic_items) == (12 + 25, 3 + 4, 1 + 2, 3 + 18)
    total.add_lockstep([])
    assert total.tokens == 37
