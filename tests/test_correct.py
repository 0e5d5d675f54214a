"""Two-attempt episodes (SCoRe): segments, per-turn rewards and KL weights, and an instruction that
never reveals whether the first attempt was right."""

from __future__ import annotations

import torch

from selfimprove.policy import HFPolicy, SamplingParams
from selfimprove.rollout.correct import PAPER_INSTRUCTION, SHORT_INSTRUCTION, TurnWeights, two_attempt_episodes
from selfimprove.rollout.episode import Episode, Segment, collate, segment_mask
from selfimprove.tasks import make_task

TASK = make_task("countdown", {"num_numbers": 2, "max_number": 9, "min_target": 1, "max_target": 20})


def test_two_attempts_are_two_trainable_segments_with_their_own_rewards(small_policy: HFPolicy) -> None:
    problems = TASK.problems("train", 3)
    episodes = two_attempt_episodes(
        small_policy, TASK, problems, SamplingParams(n=2, temperature=1.0, max_new_tokens=6), kl_weights=TurnWeights(5.0, 1.0)
    )
    assert len(episodes) == 6 and [e.group for e in episodes] == [0, 0, 1, 1, 2, 2]
    for e, problem in zip(episodes, [p for p in problems for _ in range(2)]):
        assert [s.kind for s in e.segments] == ["prompt", "attempt1", "instruction", "attempt2"]
        assert [s.trainable for s in e.segments] == [False, True, False, True]
        a1, a2 = e.segment("attempt1"), e.segment("attempt2")
        assert a1.reward == TASK.verify(problem, a1.text).score and a2.reward == TASK.verify(problem, a2.text).score
        assert e.reward == a2.reward and e.info["correct2"] == (a2.reward == 1.0)
        assert a1.kl_weights == [5.0] * len(a1.token_ids) and a2.kl_weights == [1.0] * len(a2.token_ids)
        assert small_policy.eos_ids[0] not in a1.token_ids  # the first turn does not end the episode
        assert e.segment("instruction").text == SHORT_INSTRUCTION


def test_second_attempt_sees_the_first_and_the_instruction(small_policy: HFPolicy) -> None:
    problems = TASK.problems("train", 2)
    episodes = two_attempt_episodes(small_policy, TASK, problems, SamplingParams(n=1, temperature=0, max_new_tokens=5))
    for e in episodes:
        context = [t for s in e.segments[:3] for t in s.token_ids]
        again = small_policy.generate_ids([context], SamplingParams(temperature=0, max_new_tokens=5))[0]
        assert again.token_ids == e.segment("attempt2").token_ids


def test_the_instruction_never_says_whether_the_first_attempt_was_right() -> None:
    for text in (PAPER_INSTRUCTION, SHORT_INSTRUCTION):
        lowered = text.lower()
        assert not any(word in lowered for word in ("wrong", "incorrect", "correct answer", "right", "failed"))


def test_segment_mask_marks_each_turn_at_its_target_columns() -> None:
    e = Episode(
        [
            Segment("prompt", [1, 2]),
            Segment("attempt1", [3, 4], trainable=True),
            Segment("instruction", [5]),
            Segment("attempt2", [6, 7, 8], trainable=True),
        ],
        group=0,
    )
    batch = collate([e], pad_id=0)
    width = batch.mask.shape[1]
    first, second = segment_mask([e], "attempt1", width), segment_mask([e], "attempt2", width)
    # tokens 3,4 are at positions 2,3 -> columns 1,2; tokens 6,7,8 at positions 5,6,7 -> columns 4,5,6
    assert first.tolist() == [[0, 1, 1, 0, 0, 0, 0]]
    assert second.tolist() == [[0, 0, 0, 0, 1, 1, 1]]
    assert torch.equal(first + second, batch.mask)
