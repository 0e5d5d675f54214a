"""Advantage estimators, checked against numbers worked out by hand."""

from __future__ import annotations

import pytest
import torch

from selfimprove.algos import ADVANTAGES, dr_grpo, group_mean_std, grpo, rloo


def _ones(b: int, t: int = 1) -> torch.Tensor:
    return torch.ones(b, t)


def test_registry_names() -> None:
    assert {"grpo", "dr_grpo", "rloo"} <= set(ADVANTAGES.names())
    assert ADVANTAGES.get("grpo") is grpo
    assert ADVANTAGES.get("dr_grpo") is dr_grpo
    assert ADVANTAGES.get("rloo") is rloo


def test_group_mean_std_arbitrary_ids_non_adjacent() -> None:
    values = torch.tensor([2.0, 1.0, 4.0, 3.0, 9.0])
    groups = torch.tensor([5, 0, 5, 0, 5])
    mean, std = group_mean_std(values, groups)
    # group 5 = [2, 4, 9]: mean 15/3 = 5; deviations -3, -1, 4; squares 9 + 1 + 16 = 26;
    #   unbiased var 26/2 = 13 -> std sqrt(13) = 3.605551
    # group 0 = [1, 3]: mean 2; deviations -1, 1; var (1 + 1)/1 = 2 -> std sqrt(2) = 1.414214
    assert mean.tolist() == pytest.approx([5.0, 2.0, 5.0, 2.0, 5.0])
    assert std.tolist() == pytest.approx([3.605551, 1.414214, 3.605551, 1.414214, 3.605551], abs=1e-6)
    # matches torch.std (unbiased) per group
    assert std[0].item() == pytest.approx(torch.tensor([2.0, 4.0, 9.0]).std().item(), abs=1e-6)
    # population std: sqrt(26/3) = 2.943920 and sqrt(2/2) = 1
    _, pop = group_mean_std(values, groups, unbiased=False)
    assert pop.tolist() == pytest.approx([2.943920, 1.0, 2.943920, 1.0, 2.943920], abs=1e-6)


def test_grpo_interleaved_groups_equal_group_and_singleton() -> None:
    # group 10 at positions 0, 2, 4, 6 has rewards [1, 0, 0, 1];
    # group 4 at positions 1, 3, 5 has equal rewards [0.5, 0.5, 0.5]; group -3 is a singleton.
    rewards = torch.tensor([1.0, 0.5, 0.0, 0.5, 0.0, 0.5, 1.0, 1.0])
    groups = torch.tensor([10, 4, 10, 4, 10, 4, 10, -3])
    adv = grpo(rewards, groups, _ones(8))
    # group 10: mean 0.5, unbiased std = sqrt((0.5^2 * 4) / 3) = sqrt(1/3) = 0.577350;
    #   A = +-0.5 / (0.577350 + 1e-6) = +-0.866024
    # group 4: every deviation is 0 -> A = 0; singleton: r - mean = 0, std 0 -> A = 0 / eps = 0
    a = 0.5 / (3**-0.5 + 1e-6)
    expected = [a, 0.0, -a, 0.0, -a, 0.0, a, 0.0]
    assert adv.shape == (8, 1)
    assert adv.dtype == torch.float32
    assert adv[:, 0].tolist() == pytest.approx(expected, abs=1e-6)
    assert a == pytest.approx(0.866024, abs=1e-6)


def test_grpo_three_distinct_rewards() -> None:
    # [2, 4, 9]: mean 5, unbiased std sqrt(13) = 3.605551 (see above)
    # A = [-3, -1, 4] / 3.605551 = [-0.832050, -0.277350, 1.109400]
    adv = grpo(torch.tensor([2.0, 4.0, 9.0]), torch.tensor([0, 0, 0]), _ones(3), eps=0.0)
    assert adv[:, 0].tolist() == pytest.approx([-0.832050, -0.277350, 1.109400], abs=1e-6)


def test_grpo_equal_float32_rewards_are_exactly_zero() -> None:
    # 0.1 is not representable; the float64 group mean keeps the deviation at exactly 0 anyway.
    adv = grpo(torch.full((3,), 0.1), torch.zeros(3, dtype=torch.long), _ones(3))
    assert adv.abs().max().item() < 1e-9


def test_grpo_mask_zeroing_and_broadcast() -> None:
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    groups = torch.tensor([0, 0, 0, 0])
    mask = torch.tensor(
        [[0, 1, 1], [1, 1, 0], [0, 0, 0], [1, 0, 1]], dtype=torch.bool
    )
    adv = grpo(rewards, groups, mask)
    a = 0.5 / (3**-0.5 + 1e-6)  # 0.866024, as above
    expected = torch.tensor(
        [[0.0, a, a], [-a, -a, 0.0], [0.0, 0.0, 0.0], [a, 0.0, a]]
    )
    assert torch.allclose(adv, expected, atol=1e-6)
    assert (adv[~mask] == 0).all()


def test_dr_grpo() -> None:
    # [1, 0, 0, 1] in one group: mean 0.5 -> A = [0.5, -0.5, -0.5, 0.5]
    # [2, 4, 9] in another, interleaved: mean 5 -> A = [-3, -1, 4]; no std division
    rewards = torch.tensor([1.0, 2.0, 0.0, 4.0, 0.0, 9.0, 1.0])
    groups = torch.tensor([1, 8, 1, 8, 1, 8, 1])
    mask = torch.tensor([[1.0, 1.0]] * 6 + [[1.0, 0.0]])
    adv = dr_grpo(rewards, groups, mask)
    assert adv[:, 0].tolist() == pytest.approx([0.5, -3.0, -0.5, -1.0, -0.5, 4.0, 0.5])
    assert adv[6, 1].item() == 0.0


def test_rloo() -> None:
    # [1, 0, 0]: A_0 = 1 - mean(0, 0) = 1; A_1 = 0 - mean(1, 0) = -0.5; A_2 = -0.5
    adv = rloo(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([3, 3, 3]), _ones(3))
    assert adv[:, 0].tolist() == pytest.approx([1.0, -0.5, -0.5])
    # [2, 4, 9]: 2 - (4+9)/2 = -4.5; 4 - (2+9)/2 = -1.5; 9 - (2+4)/2 = 6
    #   (= 3/2 * [-3, -1, 4]); plus a singleton group with reward 7 -> 0
    adv = rloo(torch.tensor([2.0, 7.0, 4.0, 9.0]), torch.tensor([0, 1, 0, 0]), _ones(4, 2))
    assert adv[:, 0].tolist() == pytest.approx([-4.5, 0.0, -1.5, 6.0])
    assert torch.equal(adv[:, 0], adv[:, 1])


def test_common_signature_accepts_extra_kwargs_and_bad_shapes_raise() -> None:
    r, g, m = torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), _ones(2, 2)
    for name in ("grpo", "dr_grpo", "rloo"):
        out = ADVANTAGES.get(name)(r, g, m, eps=1e-4, unused_option=1)
        assert out.shape == (2, 2)
    with pytest.raises(ValueError):
        grpo(r, torch.tensor([0, 0, 0]), m)
    with pytest.raises(ValueError):
        grpo(r, g, _ones(3, 2))
    with pytest.raises(ValueError):
        grpo(r, torch.tensor([0.0, 0.0]), m)
