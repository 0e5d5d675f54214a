"""Advantage estimators, checked against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from selfimprove.algos import (
    ADVANTAGES,
    EstimatorInputs,
    dr_grpo,
    fold_kl_into_rewards,
    gae,
    gae_advantages,
    group_mean_std,
    grpo,
    last_token_mask,
    masked_whiten,
    reinforce_pp,
    reinforce_pp_baseline,
    rloo,
    rloo_turns,
    token_rewards,
)


def _ones(b: int, t: int = 1) -> torch.Tensor:
    return torch.ones(b, t)


def test_registry_names_and_declared_needs() -> None:
    assert {"grpo", "dr_grpo", "rloo", "rloo_turns"} <= set(ADVANTAGES.names())
    # what each estimator needs is declared where it is registered
    assert [n for n in ADVANTAGES.names() if ADVANTAGES.get(n).needs_critic] == ["gae"]
    assert sorted(n for n in ADVANTAGES.names() if ADVANTAGES.get(n).token_level) == [
        "gae", "reinforce_pp", "reinforce_pp_baseline"]
    assert [n for n in ADVANTAGES.names() if ADVANTAGES.get(n).per_turn] == ["rloo_turns"]
    # the registered entry computes what the pure function does
    r, g, m = torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0, 0, 1]), _ones(3, 2)
    for name, fn in (("grpo", grpo), ("dr_grpo", dr_grpo), ("rloo", rloo)):
        out = ADVANTAGES.get(name)(EstimatorInputs(r, g, m))
        assert torch.equal(out.advantages, fn(r, g, m)), name
        # returns of a sequence-level estimator: the episode's reward on each trainable token
        assert out.returns.tolist() == [[1.0, 1.0], [0.0, 0.0], [0.5, 0.5]], name


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


def test_bad_shapes_raise() -> None:
    r, g, m = torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), _ones(2, 2)
    with pytest.raises(ValueError):
        grpo(r, torch.tensor([0, 0, 0]), m)
    with pytest.raises(ValueError):
        grpo(r, g, _ones(3, 2))
    with pytest.raises(ValueError):
        grpo(r, torch.tensor([0.0, 0.0]), m)


# --- token-level estimators -----------------------------------------------------------------------

D = torch.float64
NAN = float("nan")


def test_last_token_mask() -> None:
    mask = torch.tensor([[0, 1, 1, 0], [1, 0, 1, 0], [0, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    expected = [[0, 0, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 1]]
    out = last_token_mask(mask)
    assert out.dtype == torch.float32
    assert out.tolist() == expected
    assert last_token_mask(mask.bool()).tolist() == [[bool(x) for x in row] for row in expected]


# Two rows: row 0 trains positions 1-2 (2 tokens), row 1 positions 0-2 (3 tokens); column 3 pads.
# kl at untrained positions holds junk (9, nan) that must be ignored.
RPP_MASK = [[0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 0.0]]
RPP_KL = [[9.0, 0.5, 1.0, NAN], [0.2, 0.4, 0.6, NAN]]


def test_token_rewards_by_hand() -> None:
    mask = torch.tensor(RPP_MASK, dtype=D)
    kl = torch.tensor(RPP_KL, dtype=D)
    out = token_rewards(torch.tensor([1.0, 0.0], dtype=D), mask, kl=kl, kl_coef=0.1)
    # row 0: r_1 = -0.1 * 0.5 = -0.05; r_2 = -0.1 * 1.0 + R (1) = 0.9
    # row 1: r = -0.1 * [0.2, 0.4, 0.6] = [-0.02, -0.04, -0.06], + R (0) at the last
    expected = [[0.0, -0.05, 0.9, 0.0], [-0.02, -0.04, -0.06, 0.0]]
    assert out.tolist() == [pytest.approx(row) for row in expected]
    # without KL: only R at the last trainable token
    out0 = token_rewards(torch.tensor([1.0, 2.0]), mask)
    assert out0.tolist() == [[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 2.0, 0.0]]
    assert out0.dtype == torch.float32


def test_reinforce_pp_by_hand() -> None:
    mask = torch.tensor(RPP_MASK)
    kl = torch.tensor(RPP_KL)
    adv, returns = reinforce_pp(torch.tensor([1.0, 0.0]), mask, kl=kl, kl_coef=0.1)
    # token rewards (see test_token_rewards_by_hand), reverse sums over trainable tokens:
    #   row 0: A_2 = 0.9, A_1 = -0.05 + 0.9 = 0.85
    #   row 1: A_2 = -0.06, A_1 = -0.04 - 0.06 = -0.10, A_0 = -0.02 - 0.10 = -0.12
    # whitening over the 5 trainable values [0.85, 0.9, -0.12, -0.10, -0.06]:
    #   mean = 1.47 / 5 = 0.294; deviations 0.556, 0.606, -0.414, -0.394, -0.354
    #   squares 0.309136 + 0.367236 + 0.171396 + 0.155236 + 0.125316 = 1.12832
    #   unbiased var = 1.12832 / 4 = 0.28208 -> std = 0.531112
    #   A = dev / std = [1.046860, 1.141002, -0.779497, -0.741840, -0.666526]
    expected = [
        [0.0, 1.046860, 1.141002, 0.0],
        [-0.779497, -0.741840, -0.666526, 0.0],
    ]
    assert adv.dtype == torch.float32
    assert adv.tolist() == [pytest.approx(row, abs=1e-6) for row in expected]
    # the result is whitened: mean 0, unbiased std 1 over trainable tokens
    on = adv[mask != 0].double()
    assert on.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert on.std().item() == pytest.approx(1.0, abs=1e-6)
    # the returns are the sums before whitening
    assert returns.tolist() == [pytest.approx(r, abs=1e-6) for r in [[0.0, 0.85, 0.9, 0.0], [-0.12, -0.10, -0.06, 0.0]]]


def test_reinforce_pp_baseline_subtracts_group_means() -> None:
    # groups [0, 0, 1], rewards [1, 0, 3]: group 0 mean 0.5 -> R' = [0.5, -0.5]; the singleton's
    # R' = 3 - 3 = 0. kl_coef 0, so the returns are R' on every trainable token.
    rewards = torch.tensor([1.0, 0.0, 3.0])
    groups = torch.tensor([0, 0, 1])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 1.0]])
    adv, _ = reinforce_pp_baseline(rewards, groups, mask)
    # trainable values [0.5, 0.5, -0.5, 0]: mean 0.5 / 4 = 0.125; deviations 0.375, 0.375, -0.625,
    #   -0.125; squares 0.140625 * 2 + 0.390625 + 0.015625 = 0.6875; var 0.6875 / 3 = 0.229167;
    #   std 0.478714 -> [0.783349, 0.783349, -1.305582, -0.261116]
    expected = [[0.783349, 0.783349], [-1.305582, 0.0], [0.0, -0.261116]]
    assert adv.tolist() == [pytest.approx(row, abs=1e-6) for row in expected]
    # the same as plain REINFORCE++ on pre-centred rewards, and different from it on the raw ones
    same, _ = reinforce_pp(torch.tensor([0.5, -0.5, 0.0]), mask)
    assert torch.allclose(adv, same, atol=1e-7)
    assert not torch.allclose(adv, reinforce_pp(rewards, mask)[0], atol=1e-3)


def test_gae_advantages_gamma_one_by_hand() -> None:
    # V = [0.5, 0.6, 0.7], R = 1 at the last token, gamma 1, lam 0.95:
    #   delta_2 = 1 + 0 - 0.7 = 0.3; delta_1 = 0 + 0.7 - 0.6 = 0.1; delta_0 = 0 + 0.6 - 0.5 = 0.1
    #   A_2 = 0.3; A_1 = 0.1 + 0.95 * 0.3 = 0.385; A_0 = 0.1 + 0.95 * 0.385 = 0.46575
    #   returns = A + V = [0.96575, 0.985, 1.0]
    r = torch.tensor([[0.0, 0.0, 1.0]], dtype=D)
    v = torch.tensor([[0.5, 0.6, 0.7]], dtype=D)
    adv, ret = gae_advantages(r, v, torch.ones(1, 3), gamma=1.0, lam=0.95)
    assert adv[0].tolist() == pytest.approx([0.46575, 0.385, 0.3])
    assert ret[0].tolist() == pytest.approx([0.96575, 0.985, 1.0])
    assert adv.dtype == D


def test_gae_advantages_discounted_by_hand() -> None:
    # gamma 0.9, lam 0.95 (gamma lam = 0.855), same V and R:
    #   delta_2 = 1 + 0.9 * 0 - 0.7 = 0.3; delta_1 = 0.9 * 0.7 - 0.6 = 0.03;
    #   delta_0 = 0.9 * 0.6 - 0.5 = 0.04
    #   A_2 = 0.3; A_1 = 0.03 + 0.855 * 0.3 = 0.2865; A_0 = 0.04 + 0.855 * 0.2865 = 0.2849575
    #   returns = [0.7849575, 0.8865, 1.0]
    r = torch.tensor([[0.0, 0.0, 1.0]], dtype=D)
    v = torch.tensor([[0.5, 0.6, 0.7]], dtype=D)
    adv, ret = gae_advantages(r, v, torch.ones(1, 3), gamma=0.9, lam=0.95)
    assert adv[0].tolist() == pytest.approx([0.2849575, 0.2865, 0.3])
    assert ret[0].tolist() == pytest.approx([0.7849575, 0.8865, 1.0])
    # lam 1, V 0: plain discounted return-to-go: [0.81, 0.9, 1]
    adv1, _ = gae_advantages(r, torch.zeros_like(v), torch.ones(1, 3), gamma=0.9, lam=1.0)
    assert adv1[0].tolist() == pytest.approx([0.81, 0.9, 1.0])


def test_gae_advantages_padded_and_gapped_rows() -> None:
    # Row 0: left padding, the 3 trainable tokens at 2..4. Row 1: the same tokens with an untrained
    # gap at position 1 and right padding at 4; the recurrence skips the gap. Junk values (99, nan)
    # at untrained positions must not leak. Both rows give the gamma-1 numbers of the first test.
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 0, 1, 1, 0]], dtype=torch.bool)
    r = torch.tensor([[5.0, 5.0, 0.0, 0.0, 1.0], [0.0, 5.0, 0.0, 1.0, NAN]], dtype=D)
    v = torch.tensor([[99.0, NAN, 0.5, 0.6, 0.7], [0.5, 99.0, 0.6, 0.7, NAN]], dtype=D)
    adv, ret = gae_advantages(r, v, mask, gamma=1.0, lam=0.95)
    assert adv.tolist() == [
        pytest.approx([0.0, 0.0, 0.46575, 0.385, 0.3]),
        pytest.approx([0.46575, 0.0, 0.385, 0.3, 0.0]),
    ]
    assert ret.tolist() == [
        pytest.approx([0.0, 0.0, 0.96575, 0.985, 1.0]),
        pytest.approx([0.96575, 0.0, 0.985, 1.0, 0.0]),
    ]


def test_gae_estimator_by_hand() -> None:
    # row 0: the 3-token example (R = 1, V = [0.5, 0.6, 0.7]) -> A = [0.46575, 0.385, 0.3]
    # row 1: one trainable token, R = 0, V = 0.2, kl = 0.5 with kl_coef 0.1:
    #   r = -0.05 -> delta = -0.05 + 0 - 0.2 = -0.25 = A
    # whitening [0.46575, 0.385, 0.3, -0.25]: mean 0.90075 / 4 = 0.2251875;
    #   deviations 0.2405625, 0.1598125, 0.0748125, -0.4751875;
    #   squares 0.0578703 + 0.0255400 + 0.0055969 + 0.2258032 = 0.3148104;
    #   var 0.3148104 / 3 = 0.1049368; std 0.3239395
    #   -> [0.742615, 0.493341, 0.230946, -1.466902]
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.2, NAN, NAN]])
    kl = torch.tensor([[0.0, 0.0, 0.0], [0.5, NAN, NAN]])
    adv, returns = gae(torch.tensor([1.0, 0.0]), mask, values, kl=kl, kl_coef=0.1)
    expected = [[0.742615, 0.493341, 0.230946], [-1.466902, 0.0, 0.0]]
    assert adv.tolist() == [pytest.approx(row, abs=1e-6) for row in expected]
    # returns = unwhitened A + V: [0.96575, 0.985, 1.0] and -0.25 + 0.2 = -0.05
    assert returns.tolist() == [pytest.approx(r, abs=1e-6) for r in [[0.96575, 0.985, 1.0], [-0.05, 0.0, 0.0]]]
    with pytest.raises(ValueError, match="values"):
        gae(torch.tensor([1.0, 0.0]), mask, None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="critic"):
        ADVANTAGES.get("gae")(EstimatorInputs(torch.tensor([1.0, 0.0]), torch.tensor([0, 1]), mask))


def test_masked_whiten_edge_cases() -> None:
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]], dtype=D)
    x = torch.tensor([[1.0, 2.0, NAN], [3.0, 7.0, 7.0]], dtype=D)
    # [1, 2, 3]: mean 2, unbiased std 1 -> [-1, 0, 1]
    assert masked_whiten(x, mask).tolist() == [[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    # shift_mean=False keeps the mean: [-1, 0, 1] + 2 = [1, 2, 3]
    assert masked_whiten(x, mask, shift_mean=False).tolist() == [[1.0, 2.0, 0.0], [3.0, 0.0, 0.0]]
    # all equal: std 0 -> only centred (all 0); one trainable token: also 0
    equal = torch.full((2, 3), 0.1)
    assert masked_whiten(equal, mask.float()).abs().max().item() < 1e-7
    one = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    assert masked_whiten(torch.full((2, 3), 5.0), one).tolist() == [[0.0] * 3, [0.0] * 3]


def test_fold_kl_into_rewards() -> None:
    rewards = torch.tensor([1.0, 0.0])
    kl = torch.tensor([[0.5, 1.0, NAN], [0.2, 0.4, 0.6]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    # row 0: 1 - 0.1 * (0.5 + 1.0) = 0.85; row 1: 0 - 0.1 * (0.2 + 0.4 + 0.6) = -0.12
    out = fold_kl_into_rewards(rewards, kl, mask, 0.1)
    assert out.tolist() == pytest.approx([0.85, -0.12])
    # RLOO on the folded rewards of one group: 0.85 - (-0.12) = 0.97 and -0.97
    adv = rloo(out, torch.tensor([0, 0]), mask)
    assert adv[:, 0].tolist() == pytest.approx([0.97, -0.97], abs=1e-6)


ALL_ESTIMATORS = ("grpo", "dr_grpo", "rloo", "reinforce_pp", "reinforce_pp_baseline", "gae")


def test_registry_has_every_estimator_and_common_call() -> None:
    assert set(ALL_ESTIMATORS) <= set(ADVANTAGES.names())
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.0])
    groups = torch.tensor([0, 0, 1, 1])
    mask = torch.tensor([[1, 1, 0], [0, 1, 1], [1, 1, 1], [1, 0, 0]], dtype=torch.bool)
    g = torch.Generator().manual_seed(0)
    values = torch.rand(4, 3, generator=g)
    kl = torch.rand(4, 3, generator=g)
    for name in ALL_ESTIMATORS:
        est = ADVANTAGES.get(name)(EstimatorInputs(
            rewards, groups, mask, values=values, kl=kl, kl_coef=0.05, gamma=0.99, lam=0.9, eps=1e-6,
        ))
        assert est.returns.shape == (4, 3) and (est.returns[~mask] == 0).all(), name
        out = est.advantages
        assert out.shape == (4, 3), name
        assert out.dtype == torch.float32, name
        assert torch.isfinite(out).all(), name
        assert (out[~mask] == 0).all(), name
        assert (out[mask] != 0).any(), name


def test_estimators_do_not_carry_gradients() -> None:
    values = torch.tensor([[0.5, 0.6]], requires_grad=True)
    adv, returns = gae(torch.tensor([1.0, 0.0]), torch.ones(2, 2), values.expand(2, 2))
    assert not returns.requires_grad
    assert not adv.requires_grad
    assert math.isfinite(adv.sum().item())


def test_rloo_turns_by_hand() -> None:
    # Two episodes of one group, two turns each. Turn 1 rewards [1, 0], turn 2 rewards [11, -9]
    # (SCoRe's shaped i->c and c->i). RLOO with two episodes: A_i = r_i - r_j.
    #   turn 1: [1 - 0, 0 - 1] = [1, -1]; turn 2: [11 + 9, -9 - 11] = [20, -20]
    turn_rewards = torch.tensor([[1.0, 11.0], [0.0, -9.0]])
    groups = torch.tensor([3, 3])
    # tokens: episode 0 turn 1 on columns 0-1, turn 2 on 3; episode 1 turn 1 on 0, turn 2 on 2-3
    turn_masks = torch.tensor([
        [[1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]],
        [[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]],
    ])
    adv = rloo_turns(turn_rewards, groups, turn_masks)
    assert adv.tolist() == [[1.0, 1.0, 0.0, 20.0], [-1.0, 0.0, -20.0, -20.0]]
    mask = turn_masks.sum(1)
    est = ADVANTAGES.get("rloo_turns")(EstimatorInputs(turn_rewards[:, 1], groups, mask, turn_rewards=turn_rewards,
                                                       turn_masks=turn_masks))
    assert est.advantages.tolist() == adv.tolist()
    # returns: each turn's reward on its own tokens
    assert est.returns.tolist() == [[1.0, 1.0, 0.0, 11.0], [0.0, 0.0, -9.0, -9.0]]
    with pytest.raises(ValueError, match="turn"):
        ADVANTAGES.get("rloo_turns")(EstimatorInputs(turn_rewards[:, 1], groups, mask))


def test_grpo_scale_rewards_group_batch_none_by_hand() -> None:
    # TRL's scale_rewards: rewards [1, 0 | 0, 1], groups of two; centred rewards are +-0.5.
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    groups = torch.tensor([0, 0, 1, 1])
    mask = torch.ones(4, 2)
    group = grpo(rewards, groups, mask, eps=1e-4, scale="group")[:, 0]  # group std sqrt(0.5)
    batch = grpo(rewards, groups, mask, eps=1e-4, scale="batch")[:, 0]  # batch std sqrt(1/3)
    none = grpo(rewards, groups, mask, eps=1e-4, scale="none")[:, 0]
    expected_group = 0.5 / (0.5**0.5 + 1e-4)
    expected_batch = 0.5 / ((1 / 3) ** 0.5 + 1e-4)
    assert torch.allclose(group, torch.tensor([1, -1, -1, 1]) * expected_group, atol=1e-6)
    assert torch.allclose(batch, torch.tensor([1, -1, -1, 1]) * expected_batch, atol=1e-6)
    assert torch.allclose(none, torch.tensor([0.5, -0.5, -0.5, 0.5]))
    with pytest.raises(ValueError, match="group, batch or none"):
        grpo(rewards, groups, mask, scale="sometimes")


def test_loss_config_passes_scale_and_eps_to_the_estimator() -> None:
    from selfimprove.config import LossConfig

    loss = LossConfig(scale_rewards="batch", std_eps=1e-4)
    assert (loss.scale_rewards, loss.std_eps) == ("batch", 1e-4)
    x = EstimatorInputs(rewards=torch.tensor([1.0, 0.0]), groups=torch.tensor([0, 0]), mask=torch.ones(2, 1),
                        eps=loss.std_eps, scale="none")
    assert torch.allclose(ADVANTAGES.get("grpo")(x).advantages[:, 0], torch.tensor([0.5, -0.5]))
