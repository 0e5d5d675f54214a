"""Episodes and their collation: masks, weights and behaviour log-probs line up with targets."""

from __future__ import annotations

import pytest
import torch

from selfimprove.rollout.episode import Episode, Segment, collate


def two_segment_episode(group: int = 0, reward: float = 1.0) -> Episode:
    return Episode(
        segments=[
            Segment("prompt", [1, 10, 11]),
            Segment("completion", [20, 21, 2], trainable=True, weights=[1.0, 0.5, 2.0], kl_weights=[3.0, 3.0, 3.0], logprobs=[-0.1, -0.2, -0.3]),
        ],
        group=group,
        reward=reward,
    )


def test_collate_aligns_per_token_fields_with_target_positions() -> None:
    batch = collate([two_segment_episode()], pad_id=0)
    assert batch.input_ids.tolist() == [[1, 10, 11, 20, 21, 2]]
    # column t describes token t+1: tokens 20, 21, 2 sit at columns 2, 3, 4
    assert batch.mask.tolist() == [[0, 0, 1, 1, 1]]
    assert batch.weights.tolist() == [[1, 1, 1, 0.5, 2]]
    assert batch.kl_weights.tolist() == [[1, 1, 3, 3, 3]]
    assert batch.behaviour_logprobs[0].tolist() == pytest.approx([0, 0, -0.1, -0.2, -0.3])
    assert batch.behaviour_mask.tolist() == [[0, 0, 1, 1, 1]]  # the sampled segment's tokens only
    assert batch.old_logprobs is None  # the proximal log-probs are the learner's, filled by `prepare`


def test_collate_right_pads_and_keeps_rewards_and_groups() -> None:
    short = Episode([Segment("prompt", [1, 5]), Segment("completion", [6], trainable=True)], group=7, reward=0.0)
    batch = collate([two_segment_episode(group=3), short], pad_id=0)
    assert batch.input_ids[1].tolist() == [1, 5, 6, 0, 0, 0]
    assert batch.attention_mask[1].tolist() == [1, 1, 1, 0, 0, 0]
    assert batch.mask[1].tolist() == [0, 1, 0, 0, 0]
    assert batch.rewards.tolist() == [1.0, 0.0]
    assert batch.groups.tolist() == [3, 7]


def test_rows_trims_a_micro_batch_to_its_longest_row() -> None:
    short = Episode([Segment("prompt", [1, 5]), Segment("completion", [6], trainable=True)], group=1)
    batch = collate([two_segment_episode(), short], pad_id=0)
    batch.advantages = torch.ones_like(batch.mask)
    micro = batch.rows(slice(1, 2))
    assert micro.input_ids.tolist() == [[1, 5, 6]]
    assert micro.mask.tolist() == [[0, 1]]
    assert micro.advantages is not None and micro.advantages.shape == (1, 2)


def test_only_trainable_segments_are_in_the_mask() -> None:
    e = Episode(
        [
            Segment("prompt", [1, 2]),
            Segment("attempt", [3, 4], trainable=False),
            Segment("reflection", [5, 6], trainable=True),
            Segment("retry", [7], trainable=False),
        ],
        group=0,
    )
    assert e.trainable_mask() == [0, 0, 0, 0, 1, 1, 0]
    assert e.num_trainable == 2
    assert collate([e], pad_id=0).mask.tolist() == [[0, 0, 0, 1, 1, 0]]


def test_segment_rejects_mismatched_per_token_lists() -> None:
    with pytest.raises(ValueError, match="weights has 1 entries for 2 tokens"):
        Segment("completion", [1, 2], weights=[1.0])


def test_collate_rejects_nothing() -> None:
    with pytest.raises(ValueError):
        collate([], pad_id=0)
