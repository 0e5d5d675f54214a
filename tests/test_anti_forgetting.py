"""RRR without forgetting (issue 15): the KL to the start model on every token the policy generated (not
only the trained ones), and GRPO on the first attempts beside the reflections; checked by hand."""

from __future__ import annotations

import pytest
import torch

from selfimprove.config import ConfigError, LossConfig, load_recipe
from selfimprove.methods.rrr import RRRRecipe
from selfimprove.rollout.episode import Episode, Segment, collate
from selfimprove.rollout.reflect import attempt_episodes, failures_of
from selfimprove.policy.base import Completion
from selfimprove.tasks.base import Problem, Verdict
from selfimprove.train.learner import Forward, Norms
from selfimprove.train.objectives import PolicyGradientObjective, generated_kl


def _rrr_like() -> Episode:
    # prompt [1, 2] | attempt [3, 4] (generated, not trained) | feedback [5] | reflection [6] (trained) | retry [7] (generated)
    return Episode([Segment("prompt", [1, 2]), Segment("attempt", [3, 4], generated=True), Segment("feedback", [5]),
                    Segment("reflection", [6], trainable=True, reward=1.0, logprobs=[-1.0]),
                    Segment("retry", [7], generated=True)], group=0, reward=1.0)


def test_the_generated_mask_covers_attempt_reflection_and_retry() -> None:
    batch = collate([_rrr_like()], pad_id=0)
    # targets are tokens 2..7: [2, 3, 4, 5, 6, 7] -> generated [0, 1, 1, 0, 1, 1], trained [0, 0, 0, 0, 1, 0]
    assert batch.kl_mask[0].tolist() == [0, 1, 1, 0, 1, 1]
    assert batch.mask[0].tolist() == [0, 0, 0, 0, 1, 0]


def test_generated_kl_by_hand() -> None:
    batch = collate([_rrr_like()], pad_id=0)
    logp = torch.tensor([[-9.0, -1.0, -2.0, -9.0, -0.5, -3.0]])
    batch.ref_logprobs = torch.tensor([[-9.0, -1.5, -1.0, -9.0, -0.5, -2.0]])
    # k1 = logp - ref on generated targets: 0.5, -1.0, 0.0, -1.0 -> sum -1.5 over 4 generated tokens
    loss, mean = generated_kl(logp, batch, "k1", Norms(1, 1.0, 6, num_generated_tokens=4.0))
    assert float(loss) == pytest.approx(-1.5 / 4) and float(mean) == pytest.approx(-1.5 / 4)
    # the whole batch's count divides (a micro-batch holding part of it adds up to the batch's mean)
    assert float(generated_kl(logp, batch, "k1", Norms(1, 1.0, 6, num_generated_tokens=8.0))[0]) == pytest.approx(-1.5 / 8)


def test_kl_scope_generated_reaches_the_untrained_tokens() -> None:
    batch = collate([_rrr_like()], pad_id=0)
    batch.advantages = torch.zeros_like(batch.mask)
    batch.ref_logprobs = torch.full_like(batch.mask, -1.0)
    norms = Norms(1, float(batch.mask.sum()), 6, num_generated_tokens=float(batch.kl_mask.sum()))
    for scope, touched in (("trained", [0, 0, 0, 0, 1, 0]), ("generated", [0, 1, 1, 0, 1, 1])):
        logp = torch.full_like(batch.mask, -0.5, requires_grad=True)
        loss, _ = PolicyGradientObjective(LossConfig(kl_coef=0.1, kl_estimator="k3", kl_scope=scope))(Forward(logp), batch, norms)
        loss.backward()
        assert (logp.grad[0] != 0).int().tolist() == touched, scope


def test_kl_scope_generated_needs_a_kl_in_the_loss() -> None:
    with pytest.raises(ValueError, match="kl_scope 'generated' needs kl_coef > 0"):
        LossConfig(kl_scope="generated")
    with pytest.raises(ValueError, match="kl_in_reward: false"):
        LossConfig(kl_scope="generated", kl_coef=0.1, kl_in_reward=True)


def test_first_attempts_become_weighted_episodes_in_their_own_groups() -> None:
    problems = [Problem("p0", "a", "1"), Problem("p1", "b", "2")]
    completions = [Completion(i // 2, [9], [3, 4], "x", logprobs=[-1.0, -2.0]) for i in range(4)]
    verdicts = [Verdict.right(), Verdict.wrong("no"), Verdict.wrong("no"), Verdict.wrong("no")]
    eps = attempt_episodes(problems, completions, verdicts, 0.5, group_offset=100)
    assert [e.group for e in eps] == [100, 100, 101, 101] and [e.reward for e in eps] == [1.0, 0.0, 0.0, 0.0]
    assert eps[0].segment("attempt").weights == [0.5, 0.5] and eps[0].num_trainable == 2
    failed = failures_of(problems, completions, verdicts)
    assert [(p.id, c.prompt_index) for p, c in failed] == [("p0", 0), ("p1", 1)]  # the first failure of each


def test_first_attempt_weight_needs_groups() -> None:
    with pytest.raises(ConfigError, match="failure_samples >= 2"):
        load_recipe(RRRRecipe, None, ["run_dir=x", "rrr.first_attempt_weight=0.5"])
    load_recipe(RRRRecipe, None, ["run_dir=x", "rrr.first_attempt_weight=0.5", "rrr.failure_samples=4"])
