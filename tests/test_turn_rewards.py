"""Rewards of conversations: one per model turn, summed for sequence-level estimators, paid where each
turn ends for token-level ones (numbers worked out by hand)."""

from __future__ import annotations

import pytest
import torch

from selfimprove.algos.advantages import ADVANTAGES, EstimatorInputs
from selfimprove.algos.token_advantages import gae, reinforce_pp, reinforce_pp_baseline, token_rewards
from selfimprove.rollout.episode import Episode, Segment, collate

# One conversation: prompt token, a 2-token turn (reward -0.25), a 1-token observation, a 2-token turn
# (reward 1.0). Target columns: 0 (turn 1's first token) ... 4; trainable 0, 1, 3, 4.
MASK = torch.tensor([[1.0, 1.0, 0.0, 1.0, 1.0]])
PAID = torch.tensor([[0.0, -0.25, 0.0, 0.0, 1.0]])


def conversation() -> Episode:
    return Episode([Segment("prompt", [1]), Segment("turn", [5, 6], trainable=True, reward=-0.25),
                    Segment("observation", [7]), Segment("turn", [8, 9], trainable=True, reward=1.0)],
                   group=0, sum_turns=True)


def test_a_conversation_reward_is_the_sum_of_its_turns() -> None:
    e = conversation()
    assert e.reward == 0.75 and [s.reward for s in e.turns] == [-0.25, 1.0]
    e.reward = 0.25  # what a penalty does: the last turn takes the change
    assert [s.reward for s in e.turns] == [-0.25, 0.5]
    plain = Episode([Segment("prompt", [1]), Segment("a", [5], trainable=True, reward=0.3),
                     Segment("b", [6], trainable=True, reward=0.6)], group=0)
    assert plain.reward == 0.6  # other episodes keep their outcome segment's reward (SCoRe's second attempt)


def test_collate_pays_each_turn_at_its_last_token() -> None:
    single = Episode([Segment("prompt", [1, 2]), Segment("completion", [3, 4, 5], trainable=True, reward=0.5)], group=1)
    batch = collate([conversation(), single], pad_id=0)
    assert batch.mask.tolist() == [MASK[0].tolist(), [0.0, 1.0, 1.0, 1.0, 0.0]]
    assert batch.paid_rewards.tolist() == [PAID[0].tolist(), [0.0, 0.0, 0.0, 0.5, 0.0]]
    assert batch.rewards.tolist() == [0.75, 0.5]
    assert collate([single], pad_id=0).paid_rewards is None  # no conversation: estimators pay at the end


def test_a_turn_left_without_tokens_pays_at_the_end() -> None:
    e = Episode([Segment("prompt", [1]), Segment("turn", [], trainable=True, reward=-0.5),
                 Segment("observation", [7]), Segment("turn", [8], trainable=True, reward=1.0)], group=0, sum_turns=True)
    assert collate([e], pad_id=0).paid_rewards.tolist() == [[0.0, 0.5]]


def test_token_rewards_follow_the_payments() -> None:
    r = token_rewards(torch.tensor([0.75]), MASK, paid=PAID)
    assert r.tolist() == PAID.tolist()
    kl = torch.tensor([[0.1, 0.2, 9.0, 0.3, 0.4]])
    r = token_rewards(torch.tensor([0.75]), MASK, kl=kl, kl_coef=0.5, paid=PAID)
    assert r[0].tolist() == pytest.approx([-0.05, -0.35, 0.0, -0.15, 0.8])


def test_reinforce_pp_returns_sum_what_comes_after() -> None:
    _, returns = reinforce_pp(torch.tensor([0.75]), MASK, paid=PAID)
    assert returns[0].tolist() == pytest.approx([0.75, 0.75, 0.0, 1.0, 1.0])
    _, returns = reinforce_pp(torch.tensor([0.75]), MASK, paid=PAID, gamma=0.5)
    # col 4: 1; col 3: 0.5; col 1: -0.25 + 0.5 * 0.5 = 0; col 0: 0.5 * 0 = 0
    assert returns[0].tolist() == pytest.approx([0.0, 0.0, 0.0, 0.5, 1.0])
    _, outcome_only = reinforce_pp(torch.tensor([0.75]), MASK)
    assert outcome_only[0].tolist() == pytest.approx([0.75, 0.75, 0.0, 0.75, 0.75])


def test_the_group_baseline_comes_off_at_the_last_token() -> None:
    mask = torch.cat([MASK, torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0]])])
    paid = torch.cat([PAID, torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.25]])])
    _, returns = reinforce_pp_baseline(torch.tensor([0.75, 0.25]), torch.tensor([3, 3]), mask, paid=paid)
    # mean 0.5: row 0 pays -0.25 then 1 - 0.5; row 1 pays 0.25 - 0.5
    assert returns[0].tolist() == pytest.approx([0.25, 0.25, 0.0, 0.5, 0.5])
    assert returns[1].tolist() == pytest.approx([-0.25] * 5)


def test_gae_credits_each_turn_with_what_follows_it() -> None:
    values = torch.tensor([[0.5, 0.5, 7.0, 0.2, 0.4]])
    _, returns = gae(torch.tensor([0.75]), MASK, values, paid=PAID, lam=1.0)
    assert returns[0].tolist() == pytest.approx([0.75, 0.75, 0.0, 1.0, 1.0])  # lambda 1: Monte-Carlo returns
    estimate = ADVANTAGES.get("gae")(EstimatorInputs(rewards=torch.tensor([0.75]), groups=torch.tensor([0]), mask=MASK,
                                                     values=values, lam=1.0, paid=PAID))
    assert estimate.returns[0].tolist() == pytest.approx([0.75, 0.75, 0.0, 1.0, 1.0])


def test_sequence_estimators_see_the_sum() -> None:
    batch = collate([conversation(), Episode([Segment("p", [1]), Segment("t", [2, 3], trainable=True, reward=0.25)], 0)], 0)
    estimate = ADVANTAGES.get("rloo")(EstimatorInputs(rewards=batch.rewards, groups=batch.groups, mask=batch.mask))
    # RLOO over rewards 0.75 and 0.25: +0.5 on every trainable token of the first, -0.5 on the second's
    assert estimate.advantages[0].tolist() == pytest.approx([0.5, 0.5, 0.0, 0.5, 0.5])
    assert estimate.advantages[1].tolist() == pytest.approx([-0.5, -0.5, 0.0, 0.0, 0.0])
