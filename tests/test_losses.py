"""Losses, checked against numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from selfimprove.policy.logprobs import token_entropy, token_logprobs
from selfimprove.algos import (
    aggregate,
    clipped_pg_per_token,
    dpo_loss,
    entropy_bonus,
    kl_estimate,
    overlong_penalty,
    policy_loss,
    sequence_logprob,
    sft_loss,
    value_loss,
)

D = torch.float64


def test_kl_estimators_by_hand() -> None:
    logp = torch.tensor([-1.0, -2.0, -0.5], dtype=D)
    ref = torch.tensor([-2.0, -1.0, -0.5], dtype=D)
    # k1 = logp - ref = [1, -1, 0]
    assert kl_estimate(logp, ref, "k1").tolist() == pytest.approx([1.0, -1.0, 0.0])
    # k2 = 0.5 * [1, 1, 0]
    assert kl_estimate(logp, ref, "k2").tolist() == pytest.approx([0.5, 0.5, 0.0])
    # k3 with d = ref - logp = [-1, 1, 0]:
    #   e^-1 + 1 - 1 = 0.367879; e^1 - 1 - 1 = 0.718282; e^0 - 0 - 1 = 0
    k3 = kl_estimate(logp, ref, "k3")
    assert k3.tolist() == pytest.approx([0.367879, 0.718282, 0.0], abs=1e-6)
    assert k3[2].item() == 0.0
    with pytest.raises(ValueError):
        kl_estimate(logp, ref, "k4")  # type: ignore[arg-type]


def test_k3_is_never_negative() -> None:
    g = torch.Generator().manual_seed(0)
    logp = torch.randn(200, generator=g) * 3
    ref = logp + torch.randn(200, generator=g) * torch.logspace(-8, 0, 200)
    assert (kl_estimate(logp, ref, "k3") >= 0).all()
    assert (kl_estimate(logp, logp, "k3") == 0).all()


# ratio, advantage -> (loss, clipped) with eps_low = 0.2, eps_high = 0.28 (clip range [0.8, 1.28])
CLIP_CASES = [
    # ratio 1.5, A=+1: min(1.5, 1.28) = 1.28 -> loss -1.28, clipped
    (1.5, 1.0, -1.28, True),
    # ratio 0.5, A=-1: min(-0.5, 0.8 * -1) = -0.8 -> loss 0.8, clipped
    (0.5, -1.0, 0.8, True),
    # ratio 1.1, A=+2: inside the range, 2.2 both ways -> loss -2.2
    (1.1, 2.0, -2.2, False),
    # ratio 1.5, A=-1: min(-1.5, -1.28) = -1.5 -> loss 1.5 (pessimistic side, not clipped)
    (1.5, -1.0, 1.5, False),
    # ratio 0.5, A=+1: min(0.5, 0.8) = 0.5 -> loss -0.5, not clipped
    (0.5, 1.0, -0.5, False),
    # ratio 1.25, A=+1: above 1.2 but below eps_high's 1.28 -> loss -1.25, not clipped
    (1.25, 1.0, -1.25, False),
    # ratio 0.75, A=-1: min(-0.75, -0.8) = -0.8 -> loss 0.8, clipped
    (0.75, -1.0, 0.8, True),
]


def _clip_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ratios = torch.tensor([[c[0] for c in CLIP_CASES]], dtype=D)
    adv = torch.tensor([[c[1] for c in CLIP_CASES]], dtype=D)
    logp = ratios.log().requires_grad_(True)
    return logp, torch.zeros_like(ratios), adv


def test_clipped_pg_per_token_cases() -> None:
    logp, old, adv = _clip_inputs()
    loss, clipped = clipped_pg_per_token(logp, old, adv, eps_low=0.2, eps_high=0.28)
    assert loss[0].tolist() == pytest.approx([c[2] for c in CLIP_CASES])
    assert clipped[0].tolist() == [c[3] for c in CLIP_CASES]
    # d loss / d logp = -ratio * A where not clipped, 0 where clipped
    loss.sum().backward()
    expected_grad = [0.0 if c[3] else -c[0] * c[1] for c in CLIP_CASES]
    assert logp.grad is not None
    assert logp.grad[0].tolist() == pytest.approx(expected_grad)


def test_symmetric_clip_clips_ratio_1_25() -> None:
    # with eps_high = 0.2, ratio 1.25 and A=+1 is clipped at 1.2 -> loss -1.2
    loss, clipped = clipped_pg_per_token(
        torch.tensor([math.log(1.25)], dtype=D), torch.zeros(1, dtype=D), torch.ones(1, dtype=D)
    )
    assert loss.item() == pytest.approx(-1.2)
    assert clipped.item()


def test_policy_loss_clip_frac_and_ratio_mean() -> None:
    logp, old, adv = _clip_inputs()
    mask = torch.ones_like(adv)
    mask[0, 0] = 0.0  # drop the first case (clipped)
    loss, stats = policy_loss(logp, old, adv, mask, eps_low=0.2, eps_high=0.28, agg="token_mean")
    # trainable losses: 0.8, -2.2, 1.5, -0.5, -1.25, 0.8 -> sum -0.85 over 6 tokens = -0.141667
    assert loss.item() == pytest.approx(-0.85 / 6)
    assert stats["pg_loss"].item() == pytest.approx(-0.85 / 6)
    # clipped among trainable: cases 2 and 7 -> 2 / 6
    assert stats["clip_frac"].item() == pytest.approx(2 / 6)
    # ratios 0.5, 1.1, 1.5, 0.5, 1.25, 0.75 -> 5.6 / 6
    assert stats["ratio_mean"].item() == pytest.approx(5.6 / 6)
    assert stats["kl"].item() == 0.0
    assert all(not v.requires_grad and v.dim() == 0 for v in stats.values())


# Hand-made 2x3 example for the aggregations.
L = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
M = [[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]]


def test_aggregations_by_hand() -> None:
    per_token = torch.tensor(L, dtype=D)
    mask = torch.tensor(M, dtype=D)
    # seq_mean: row 0 (1 + 2)/2 = 1.5, row 1 4/1 = 4 -> (1.5 + 4)/2 = 2.75
    assert aggregate(per_token, mask, "seq_mean").item() == pytest.approx(2.75)
    # token_mean: (1 + 2 + 4)/3 = 2.333333
    assert aggregate(per_token, mask, "token_mean").item() == pytest.approx(7 / 3)
    # dr_grpo: 7 / (2 sequences * 3 max_len) = 1.166667
    assert aggregate(per_token, mask, "dr_grpo").item() == pytest.approx(7 / 6)
    # explicit normalisers: 5.5 / 4 = 1.375; 7 / 10 = 0.7; 7 / (4 * 8) = 0.21875
    assert aggregate(per_token, mask, "seq_mean", num_sequences=4).item() == pytest.approx(1.375)
    assert aggregate(per_token, mask, "token_mean", num_tokens=10).item() == pytest.approx(0.7)
    assert aggregate(per_token, mask, "dr_grpo", num_sequences=4, max_len=8).item() == pytest.approx(
        0.21875
    )
    with pytest.raises(ValueError):
        aggregate(per_token, mask, "mean")  # type: ignore[arg-type]


def test_aggregations_ignore_empty_rows_and_nonfinite_padding() -> None:
    per_token = torch.tensor(L + [[7.0, 8.0, 9.0]], dtype=D)
    per_token[0, 2] = float("nan")
    per_token[1, 1] = float("inf")
    mask = torch.tensor(M + [[0.0, 0.0, 0.0]], dtype=D).bool()
    # the empty third row counts neither as a sequence nor as tokens: same numbers as above
    assert aggregate(per_token, mask, "seq_mean").item() == pytest.approx(2.75)
    assert aggregate(per_token, mask, "token_mean").item() == pytest.approx(7 / 3)
    assert aggregate(per_token, mask, "dr_grpo").item() == pytest.approx(7 / 6)


def _random_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    b, t = 6, 5
    mask = (torch.rand(b, t, generator=g) > 0.3).to(D)
    mask[3] = 0.0  # an empty row
    mask[0] = 1.0
    return {
        "logp": (-torch.rand(b, t, generator=g, dtype=D) * 2).requires_grad_(True),
        "old_logp": -torch.rand(b, t, generator=g, dtype=D) * 2,
        "ref_logp": -torch.rand(b, t, generator=g, dtype=D) * 2,
        "advantages": torch.randn(b, 1, generator=g, dtype=D).expand(b, t),
        "weights": torch.rand(b, t, generator=g, dtype=D) + 0.5,
        "kl_weights": torch.rand(b, t, generator=g, dtype=D) + 0.5,
        "mask": mask,
    }


@pytest.mark.parametrize("agg", ["seq_mean", "token_mean", "dr_grpo"])
def test_micro_batch_sum_equals_full_batch(agg: str) -> None:
    data = _random_batch()
    mask = data["mask"]
    norms = {
        "num_sequences": int((mask.sum(-1) > 0).sum()),
        "num_tokens": float(mask.sum()),
        "max_len": mask.shape[1],
    }
    kw = {"kl_coef": 0.05, "eps_low": 0.2, "eps_high": 0.28, "agg": agg}

    def run(sl: slice, **extra: object) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        args = {k: v[sl] for k, v in data.items()}
        return policy_loss(
            args.pop("logp"), args.pop("old_logp"), args.pop("advantages"), args.pop("mask"),
            **args, **kw, **extra,  # type: ignore[arg-type]
        )

    full, full_stats = run(slice(None))
    (full_grad,) = torch.autograd.grad(full, data["logp"])
    parts = [run(sl, **norms) for sl in (slice(0, 2), slice(2, 5), slice(5, 6))]
    total = sum(p[0] for p in parts)
    assert total.item() == pytest.approx(full.item(), rel=1e-12)
    (micro_grad,) = torch.autograd.grad(total, data["logp"])
    assert torch.allclose(micro_grad, full_grad, rtol=1e-12, atol=1e-15)
    pg_total = sum(p[1]["pg_loss"] for p in parts)
    assert pg_total.item() == pytest.approx(full_stats["pg_loss"].item(), rel=1e-12)
    # also for aggregate on its own
    per_token = data["weights"]
    assert sum(
        aggregate(per_token[sl], mask[sl], agg, **norms)  # type: ignore[arg-type]
        for sl in (slice(0, 1), slice(1, 4), slice(4, 6))
    ).item() == pytest.approx(
        aggregate(per_token, mask, agg).item(), rel=1e-12  # type: ignore[arg-type]
    )


def test_weights_and_kl_weights_honoured() -> None:
    logp = torch.tensor([[-1.0, -1.0]], dtype=D)
    ref = torch.tensor([[-1.5, -2.0]], dtype=D)  # k1 = [0.5, 1.0]
    adv = torch.ones(1, 2, dtype=D)  # ratio 1 -> pg = [-1, -1]
    mask = torch.ones(1, 2, dtype=D)
    w = torch.tensor([[2.0, 1.0]], dtype=D)
    kw = torch.tensor([[1.0, 3.0]], dtype=D)
    loss, stats = policy_loss(
        logp, logp, adv, mask, ref_logp=ref, kl_coef=0.1, kl_estimator="k1",
        weights=w, kl_weights=kw, agg="token_mean",
    )
    # token 0: 2 * (-1 + 0.1 * 1 * 0.5) = -1.9; token 1: 1 * (-1 + 0.1 * 3 * 1.0) = -0.7
    # token_mean: (-1.9 - 0.7) / 2 = -1.3
    assert loss.item() == pytest.approx(-1.3)
    # pg part alone: (2 * -1 + 1 * -1) / 2 = -1.5; kl stat: mean(0.5, 1.0) = 0.75
    assert stats["pg_loss"].item() == pytest.approx(-1.5)
    assert stats["kl"].item() == pytest.approx(0.75)
    assert stats["clip_frac"].item() == 0.0
    assert stats["ratio_mean"].item() == pytest.approx(1.0)
    # kl_coef 0: no KL in the loss, but the KL is still reported
    loss0, stats0 = policy_loss(logp, logp, adv, mask, ref_logp=ref, kl_coef=0.0, weights=w)
    assert loss0.item() == pytest.approx(-1.5)
    assert stats0["kl"].item() > 0
    # sequence-level advantages [B] broadcast over tokens
    loss1, _ = policy_loss(logp, logp, torch.ones(1, dtype=D), mask, weights=w)
    assert loss1.item() == pytest.approx(-1.5)


def test_masked_tokens_get_zero_gradient() -> None:
    data = _random_batch(1)
    mask = data["mask"]
    loss, _ = policy_loss(
        data["logp"], data["old_logp"], data["advantages"], mask,
        ref_logp=data["ref_logp"], kl_coef=0.1, weights=data["weights"],
    )
    loss.backward()
    grad = data["logp"].grad
    assert grad is not None
    assert (grad[mask == 0] == 0).all()
    assert (grad[mask != 0] != 0).any()


def test_sft_loss() -> None:
    logp = torch.tensor([[-0.5, -1.0, -2.0], [-0.25, -3.0, -9.0]], dtype=D)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]], dtype=D)
    # (0.5 + 1 + 0.25 + 3) / 4 = 1.1875
    assert sft_loss(logp, mask).item() == pytest.approx(1.1875)
    # weights [[1, 2, 1], [1, 1, 1]]: (0.5 + 2 + 0.25 + 3) / 4 = 1.4375
    w = torch.tensor([[1.0, 2.0, 1.0], [1.0, 1.0, 1.0]], dtype=D)
    assert sft_loss(logp, mask, weights=w).item() == pytest.approx(1.4375)
    # whole-batch normaliser: 4.75 / 10 = 0.475
    assert sft_loss(logp, mask, num_tokens=10).item() == pytest.approx(0.475)


def test_token_logprobs_by_hand_and_temperature() -> None:
    logits = torch.tensor([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]])
    # softmax [1/4, 3/4]: target 1 -> ln 0.75 = -0.287682; target 0 -> ln 0.25 = -1.386294
    out = token_logprobs(logits, torch.tensor([[1, 0]]))
    assert out[0].tolist() == pytest.approx([-0.287682, -1.386294], abs=1e-6)
    # temperature 2: logits [0, ln(3)/2] -> p0 = 1 / (1 + sqrt 3) -> ln p0 = -ln 2.732051 = -1.005053
    out2 = token_logprobs(logits, torch.tensor([[0, 0]]), temperature=2.0)
    assert out2[0, 0].item() == pytest.approx(-1.005053, abs=1e-6)
    with pytest.raises(ValueError):
        token_logprobs(logits, torch.tensor([[0, 0]]), temperature=0.0)


def test_token_logprobs_matches_log_softmax() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 5, generator=g)
    targets = torch.randint(0, 5, (2, 3), generator=g)
    for temp in (1.0, 0.7):
        ref = torch.log_softmax(logits / temp, -1).gather(-1, targets[..., None])[..., 0]
        assert torch.allclose(token_logprobs(logits, targets, temp), ref, atol=1e-6)
    out = token_logprobs(logits.bfloat16(), targets)
    assert out.dtype == torch.float32
    ignored = targets.clone()
    ignored[0, 1] = -100
    assert token_logprobs(logits, ignored)[0, 1].item() == 0.0


def test_token_entropy() -> None:
    logits = torch.tensor([[[0.0, 0.0, 0.0, 0.0], [0.0, math.log(3.0), -math.inf, -math.inf]]])
    # uniform over 4: ln 4 = 1.386294; [1/4, 3/4]: 0.25 ln 4 + 0.75 ln(4/3) = 0.346574 + 0.215762
    assert token_entropy(logits)[0].tolist() == pytest.approx([1.386294, 0.562335], abs=1e-6)


# --- value loss, entropy bonus, DPO, overlong penalty ----------------------------------------------

NAN = float("nan")


def _value_case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    # token 0: V 1.0, V_old 0.5, R 0 -> the unclipped term is larger
    # token 1: V 0.2, V_old 0.5, R 0 -> the clipped term is larger
    # token 2: V 0.55, V_old 0.5, R 1 -> inside the clip range, both terms equal
    # token 3: padding with junk
    values = torch.tensor([[1.0, 0.2, 0.55, 3.0]], dtype=D, requires_grad=True)
    old = torch.tensor([[0.5, 0.5, 0.5, NAN]], dtype=D)
    returns = torch.tensor([[0.0, 0.0, 1.0, NAN]], dtype=D)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]], dtype=D)
    return values, old, returns, mask


def test_value_loss_clipped_by_hand() -> None:
    values, old, returns, mask = _value_case()
    loss, stats = value_loss(values, old, returns, mask, clip=0.2)
    # token 0: unclipped 0.5 * (1 - 0)^2 = 0.5; clipped V = 0.7 -> 0.5 * 0.49 = 0.245; max 0.5
    # token 1: unclipped 0.5 * 0.2^2 = 0.02; clipped V = 0.3 -> 0.5 * 0.09 = 0.045; max 0.045
    # token 2: 0.5 * (0.55 - 1)^2 = 0.5 * 0.2025 = 0.10125 both ways
    # token_mean: (0.5 + 0.045 + 0.10125) / 3 = 0.64625 / 3 = 0.2154167
    assert loss.item() == pytest.approx(0.64625 / 3)
    assert stats["value_loss"].item() == pytest.approx(0.64625 / 3)
    # the clipped term is strictly larger on token 1 only -> 1/3
    assert stats["value_clip_frac"].item() == pytest.approx(1 / 3)
    # explained variance over R = [0, 0, 1], V = [1, 0.2, 0.55]:
    #   Var(R): mean 1/3, squares 1/9 + 1/9 + 4/9 -> 6/9 / 3 = 2/9
    #   R - V = [-1, -0.2, 0.45]: mean -0.25, deviations -0.75, 0.05, 0.7,
    #   squares 0.5625 + 0.0025 + 0.49 = 1.055 -> / 3 = 0.351667
    #   EV = 1 - 0.351667 / 0.222222 = 1 - 1.5825 = -0.5825
    assert stats["explained_variance"].item() == pytest.approx(-0.5825)
    # gradients: d/dV 0.5 (V - R)^2 = V - R, / 3 tokens; 0 where the clipped (constant) term wins
    loss.backward()
    assert values.grad is not None
    assert values.grad[0].tolist() == pytest.approx([1.0 / 3, 0.0, -0.45 / 3, 0.0])


def test_value_loss_unclipped_by_hand() -> None:
    values, old, returns, mask = _value_case()
    loss, stats = value_loss(values, old, returns, mask, clip=None)
    # 0.5 * [1, 0.04, 0.2025] = [0.5, 0.02, 0.10125] -> 0.62125 / 3 = 0.2070833
    assert loss.item() == pytest.approx(0.62125 / 3)
    assert stats["value_clip_frac"].item() == 0.0
    # seq_mean over one row is the same; dr_grpo divides by 1 sequence * 4 max_len
    loss_dr, _ = value_loss(values, old, returns, mask, clip=None, agg="dr_grpo")
    assert loss_dr.item() == pytest.approx(0.62125 / 4)


def test_value_loss_explained_variance_edges() -> None:
    mask = torch.ones(1, 3, dtype=D)
    r = torch.tensor([[0.0, 1.0, 2.0]], dtype=D)
    _, stats = value_loss(r.clone(), r.clone(), r, mask)
    assert stats["explained_variance"].item() == pytest.approx(1.0)  # V = R exactly
    flat = torch.full((1, 3), 0.1, dtype=D)
    _, stats = value_loss(r, r, flat, mask)
    assert stats["explained_variance"].item() == 0.0  # Var(R) = 0


@pytest.mark.parametrize("agg", ["seq_mean", "token_mean", "dr_grpo"])
def test_value_loss_micro_batches_sum_to_full_batch(agg: str) -> None:
    g = torch.Generator().manual_seed(3)
    b, t = 5, 4
    values = torch.randn(b, t, generator=g, dtype=D).requires_grad_(True)
    old = values.detach() + 0.3 * torch.randn(b, t, generator=g, dtype=D)
    returns = torch.randn(b, t, generator=g, dtype=D)
    mask = (torch.rand(b, t, generator=g) > 0.3).to(D)
    mask[0] = 1.0
    mask[2] = 0.0
    norms = {
        "num_sequences": int((mask.sum(-1) > 0).sum()),
        "num_tokens": float(mask.sum()),
        "max_len": t,
    }
    full, _ = value_loss(values, old, returns, mask, agg=agg)  # type: ignore[arg-type]
    parts = [
        value_loss(
            values[sl], old[sl], returns[sl], mask[sl], agg=agg, **norms  # type: ignore[arg-type]
        )[0]
        for sl in (slice(0, 2), slice(2, 3), slice(3, 5))
    ]
    total = sum(parts)
    assert total.item() == pytest.approx(full.item(), rel=1e-12)
    (g_full,) = torch.autograd.grad(full, values)
    (g_micro,) = torch.autograd.grad(total, values)
    assert torch.allclose(g_full, g_micro, rtol=1e-12, atol=1e-15)


def test_entropy_bonus() -> None:
    ent = torch.tensor(L, dtype=D)
    mask = torch.tensor(M, dtype=D)
    # same numbers as the aggregation test: token mean 7/3, seq mean 2.75, dr_grpo 7/6
    assert entropy_bonus(ent, mask).item() == pytest.approx(7 / 3)
    assert entropy_bonus(ent, mask, agg="seq_mean").item() == pytest.approx(2.75)
    assert entropy_bonus(ent, mask, agg="dr_grpo").item() == pytest.approx(7 / 6)
    assert entropy_bonus(ent, mask, num_tokens=10).item() == pytest.approx(0.7)


def test_sequence_logprob() -> None:
    logp = torch.tensor([[-0.5, -1.0, -2.0], [-0.25, -3.0, -9.0]], dtype=D)
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 1.0]], dtype=D)
    # row 0: -0.5 - 1 = -1.5; row 1: -3 - 9 = -12
    assert sequence_logprob(logp, mask).tolist() == pytest.approx([-1.5, -12.0])


def _dpo_inputs() -> tuple[torch.Tensor, ...]:
    # pair 0: pc - rc = -10 - (-12) = 2, pr - rr = -9 - (-8) = -1
    # pair 1: pc - rc = -5 - (-5) = 0,   pr - rr = -3 - (-4) = 1
    pc = torch.tensor([-10.0, -5.0], dtype=D, requires_grad=True)
    pr = torch.tensor([-9.0, -3.0], dtype=D, requires_grad=True)
    rc = torch.tensor([-12.0, -5.0], dtype=D)
    rr = torch.tensor([-8.0, -4.0], dtype=D)
    return pc, pr, rc, rr


def test_dpo_loss_by_hand() -> None:
    pc, pr, rc, rr = _dpo_inputs()
    loss, stats = dpo_loss(pc[:1], pr[:1], rc[:1], rr[:1], beta=0.1)
    # z = 0.1 * (2 - (-1)) = 0.3; loss = -log sigmoid(0.3) = log(1 + e^-0.3)
    #   = log(1 + 0.740818) = log(1.740818) = 0.554355
    assert loss.item() == pytest.approx(0.554355, abs=1e-6)
    # chosen reward 0.1 * 2 = 0.2, rejected 0.1 * -1 = -0.1, margin 0.3, accuracy 1
    assert stats["chosen_reward"].item() == pytest.approx(0.2)
    assert stats["rejected_reward"].item() == pytest.approx(-0.1)
    assert stats["reward_margin"].item() == pytest.approx(0.3)
    assert stats["reward_accuracy"].item() == 1.0
    # d loss / d pc = -beta * sigmoid(-z) = -0.1 * 0.425557 = -0.0425557 (descent raises pc);
    # d loss / d pr = +0.0425557 (descent lowers pr)
    loss.backward()
    assert pc.grad is not None and pr.grad is not None
    assert pc.grad[0].item() == pytest.approx(-0.0425557, abs=1e-7)
    assert pr.grad[0].item() == pytest.approx(0.0425557, abs=1e-7)
    assert pc.grad[0].item() < 0 < pr.grad[0].item()


def test_dpo_loss_two_pairs_smoothing_and_micro_batches() -> None:
    pc, pr, rc, rr = _dpo_inputs()
    loss, stats = dpo_loss(pc, pr, rc, rr, beta=0.1)
    # pair 1: z = 0.1 * (0 - 1) = -0.1 -> log(1 + e^0.1) = 0.744397
    # mean: (0.554355 + 0.744397) / 2 = 0.649376; accuracy 1/2; margin (0.3 - 0.1) / 2 = 0.1
    assert loss.item() == pytest.approx(0.649376, abs=1e-6)
    assert stats["reward_accuracy"].item() == 0.5
    assert stats["reward_margin"].item() == pytest.approx(0.1)
    # label smoothing 0.1 on pair 0: 0.9 * 0.554355 + 0.1 * log(1 + e^0.3)
    #   = 0.4989195 + 0.1 * 0.854355 = 0.584355
    smooth, _ = dpo_loss(pc[:1], pr[:1], rc[:1], rr[:1], beta=0.1, label_smoothing=0.1)
    assert smooth.item() == pytest.approx(0.584355, abs=1e-6)
    # micro-batches of one pair each with num_pairs = 2 sum to the full loss; num_pairs = 4 halves it
    parts = [dpo_loss(pc[i : i + 1], pr[i : i + 1], rc[i : i + 1], rr[i : i + 1], num_pairs=2)[0]
             for i in range(2)]
    assert sum(parts).item() == pytest.approx(loss.item(), rel=1e-12)
    quarter, _ = dpo_loss(pc, pr, rc, rr, num_pairs=4)
    assert quarter.item() == pytest.approx(loss.item() / 2)
    with pytest.raises(ValueError):
        dpo_loss(pc, pr, rc, rr, label_smoothing=0.7)
    with pytest.raises(ValueError):
        dpo_loss(pc, pr[:1], rc, rr)


def test_overlong_penalty() -> None:
    lengths = torch.tensor([10, 16, 18, 20, 25])
    # max_len 20, cache_len 4: free up to 16; (16 - 18)/4 = -0.5; (16 - 20)/4 = -1; beyond 20: -1
    out = overlong_penalty(lengths, max_len=20, cache_len=4)
    assert out.tolist() == pytest.approx([0.0, 0.0, -0.5, -1.0, -1.0])
    assert out.dtype == torch.float32
    # cache_len = max_len: linear over the whole range, (0 - 5)/20 = -0.25
    whole = overlong_penalty(torch.tensor([5]), max_len=20, cache_len=20)
    assert whole.item() == pytest.approx(-0.25)
    for bad in (0, -1, 21):
        with pytest.raises(ValueError):
            overlong_penalty(lengths, max_len=20, cache_len=bad)


def test_value_loss_and_entropy_honour_per_token_weights() -> None:
    # one row, two trainable tokens; unclipped value loss 0.5 (V - R)^2 = [0.5 * 1, 0.5 * 4] = [0.5, 2.0]
    values = torch.tensor([[1.0, 2.0]])
    returns = torch.tensor([[0.0, 0.0]])
    mask = torch.ones(1, 2)
    weights = torch.tensor([[2.0, 0.5]])
    loss, _ = value_loss(values, values.clone(), returns, mask, clip=None, weights=weights)
    # token mean of [2 * 0.5, 0.5 * 2.0] = (1.0 + 1.0) / 2 = 1.0
    assert loss.item() == pytest.approx(1.0)
    # entropy [3, 1] weighted [2, 0.5] -> [6, 0.5], token mean 3.25
    assert entropy_bonus(torch.tensor([[3.0, 1.0]]), mask, weights=weights).item() == pytest.approx(3.25)


def test_gspo_sequence_ratio_by_hand() -> None:
    from selfimprove.algos import POLICY_LOSSES, gspo_per_token

    assert {"clip", "gspo"} <= set(POLICY_LOSSES.names())
    # row 0: token log-ratios [0.2, 0.0] -> s = exp(0.1) = 1.105171; A = +1, range [0.8, 1.2]: not clipped,
    #   loss -1.105171 on both tokens; d loss / d logp_t = -A * s / 2 = -0.552585
    # row 1: log-ratios [0.3, (5.0 masked)] -> s = exp(0.3) = 1.349859; A = -1: min(-1.349859, -1.2)
    #   = -1.349859 -> loss 1.349859, pessimistic side, not clipped; the masked token is ignored
    logp = torch.tensor([[0.2, 0.0], [0.3, 5.0]], dtype=D, requires_grad=True)
    old = torch.zeros(2, 2, dtype=D)
    adv = torch.tensor([[1.0, 1.0], [-1.0, -1.0]], dtype=D)
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]], dtype=D)
    loss, clipped, ratio = gspo_per_token(logp, old, adv, mask, eps_low=0.2, eps_high=0.2)
    assert loss[0].tolist() == pytest.approx([-1.105171, -1.105171], abs=1e-6)
    assert loss[1, 0].item() == pytest.approx(1.349859, abs=1e-6)
    assert ratio[:, 0].tolist() == pytest.approx([1.105171, 1.349859], abs=1e-6)
    assert not clipped.any()
    total, stats = policy_loss(logp, old, adv, mask, kind="gspo", agg="seq_mean")
    # seq_mean: (-1.105171 + 1.349859) / 2 = 0.122344
    assert total.item() == pytest.approx(0.122344, abs=1e-6)
    total.backward()
    assert logp.grad is not None
    # row 0: -0.552585 / 2 (seq_mean over two rows); row 1: d(s)/d logp_0 = s -> -A s / 2 = 0.674929
    assert logp.grad.tolist() == [pytest.approx([-0.276293, -0.276293], abs=1e-6), pytest.approx([0.674929, 0.0], abs=1e-6)]
    # with eps_high 0.05, row 0's s = 1.105 > 1.05 with A > 0: clipped at 1.05, no gradient
    loss, clipped, _ = gspo_per_token(logp.detach(), old, adv, mask, eps_low=0.2, eps_high=0.05)
    assert loss[0].tolist() == pytest.approx([-1.05, -1.05])
    assert clipped[0].tolist() == [True, True]
