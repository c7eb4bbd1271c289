"""Loss terms against hand-computed examples."""

import math

import pytest
import torch

from learner.losses import (
    entropy_from_logits,
    entropy_loss,
    kl_penalty,
    logprob_gap,
    policy_gradient_loss,
    sft_loss,
    token_mean,
)

# Five tokens whose ratios exp(lp - old) are 1.5, 0.5, 1.0, 0.5, 1.5.
OLD = torch.zeros(5)
RATIOS = torch.tensor([1.5, 0.5, 1.0, 0.5, 1.5])
ADV = torch.tensor([1.0, -1.0, 2.0, 1.0, -1.0])
# per token -min(r*A, clip(r, 0.9, 1.15)*A):
#   1.5,+1 -> clipped high: -1.15 | 0.5,-1 -> clipped low: +0.9 | 1.0,+2 -> -2
#   0.5,+1 -> not clipped (low clip only binds for A<0): -0.5 | 1.5,-1 -> not clipped: +1.5
PER_TOKEN = [-1.15, 0.9, -2.0, -0.5, 1.5]


def _lp():
    return torch.log(RATIOS).clone().requires_grad_(True)


def test_pg_clipping_both_sides():
    lp = _lp()
    loss, m = policy_gradient_loss(lp, OLD, ADV, torch.ones(5), eps_low=0.1, eps_high=0.15)
    assert loss.item() == pytest.approx(sum(PER_TOKEN) / 5, abs=1e-6)
    assert m["clip_frac"] == pytest.approx(0.4)
    assert m["clip_frac_high"] == pytest.approx(0.2) and m["clip_frac_low"] == pytest.approx(0.2)
    loss.backward()
    # clipped tokens carry no gradient; d/dlp of -r*A/5 = -r*A/5 otherwise
    expected = [0.0, 0.0, -1.0 * 2.0 / 5, -0.5 * 1.0 / 5, 1.5 / 5]
    assert lp.grad.tolist() == pytest.approx(expected, abs=1e-6)


def test_pg_asymmetric_bounds_are_distinct():
    # ratio 1.12 with A>0 is inside [0.9, 1.15] but would be clipped by a symmetric 0.1 clip
    lp = torch.log(torch.tensor([1.12]))
    loss, m = policy_gradient_loss(
        lp, torch.zeros(1), torch.ones(1), torch.ones(1), eps_low=0.1, eps_high=0.15
    )
    assert loss.item() == pytest.approx(-1.12, abs=1e-6) and m["clip_frac"] == 0.0
    loss_sym, m_sym = policy_gradient_loss(
        lp, torch.zeros(1), torch.ones(1), torch.ones(1), eps_low=0.1, eps_high=0.1
    )
    assert loss_sym.item() == pytest.approx(-1.1, abs=1e-6) and m_sym["clip_frac"] == 1.0


def test_pg_masking_ignores_masked_tokens():
    lp = torch.cat([torch.log(RATIOS), torch.tensor([5.0])])
    old = torch.cat([OLD, torch.tensor([-50.0])])
    adv = torch.cat([ADV, torch.tensor([1e6])])
    mask = torch.tensor([1, 1, 1, 1, 1, 0])
    loss, _ = policy_gradient_loss(lp, old, adv, mask)
    assert loss.item() == pytest.approx(sum(PER_TOKEN) / 5, abs=1e-6)


def test_pg_role_weights_and_global_denominator():
    w = torch.tensor([0.2, 1.0, 1.0, 1.0, 1.0])  # first token from an extractor sample
    loss, _ = policy_gradient_loss(torch.log(RATIOS), OLD, ADV, torch.ones(5), role_weights=w)
    assert loss.item() == pytest.approx((0.2 * -1.15 + 0.9 - 2.0 - 0.5 + 1.5) / 5, abs=1e-6)
    # a micro-batch of a 10-token batch divides by 10, not by its own 5
    loss10, _ = policy_gradient_loss(torch.log(RATIOS), OLD, ADV, torch.ones(5), denom=10)
    assert loss10.item() == pytest.approx(sum(PER_TOKEN) / 10, abs=1e-6)


def test_kl_k3_estimator_per_role_coef():
    cur = torch.zeros(3)
    ref = torch.tensor([0.0, 1.0, -1.0])  # ref - cur
    k3 = [0.0, math.e - 2.0, math.exp(-1.0)]  # exp(d) - d - 1
    loss, m = kl_penalty(cur, ref, torch.ones(3), coef=0.01)
    assert m["kl"] == pytest.approx(sum(k3) / 3, abs=1e-6)
    assert loss.item() == pytest.approx(0.01 * sum(k3) / 3, abs=1e-7)
    coef = torch.tensor([0.01, 0.02, 0.0])
    loss, _ = kl_penalty(cur, ref, torch.ones(3), coef=coef)
    assert loss.item() == pytest.approx((0.02 * k3[1]) / 3, abs=1e-7)
    loss, m = kl_penalty(cur, ref, torch.tensor([1, 0, 1]), coef=1.0)
    assert m["kl"] == pytest.approx((k3[0] + k3[2]) / 2, abs=1e-6)


def test_kl_zero_when_policies_match_and_nonnegative():
    x = torch.randn(100)
    _, m = kl_penalty(x, x.clone(), torch.ones(100), coef=1.0)
    assert m["kl"] == pytest.approx(0.0, abs=1e-7)
    _, m = kl_penalty(x, torch.randn(100), torch.ones(100), coef=1.0)
    assert m["kl"] > 0


def test_entropy_values_and_sign_convention():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]])
    ent = entropy_from_logits(logits)
    assert ent.tolist() == pytest.approx([math.log(4), 0.0], abs=1e-6)
    loss, m = entropy_loss(ent, torch.tensor([1, 0]), coef=-0.03)
    assert m["entropy"] == pytest.approx(math.log(4), abs=1e-6)
    assert loss.item() == pytest.approx(0.03 * math.log(4), abs=1e-7)

    def entropy_after_step(coef: float) -> float:
        z = torch.tensor([[2.0, 1.0, 0.0, -1.0]], requires_grad=True)
        loss, _ = entropy_loss(entropy_from_logits(z), torch.ones(1), coef=coef)
        loss.backward()
        with torch.no_grad():
            return entropy_from_logits(z - 0.5 * z.grad).item()

    start = entropy_from_logits(torch.tensor([[2.0, 1.0, 0.0, -1.0]])).item()
    assert entropy_after_step(-0.03) < start  # paper's extractor value: entropy penalty
    assert entropy_after_step(+0.03) > start  # positive: entropy bonus


def test_sft_nll_masked_mean():
    loss, m = sft_loss(torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([1, 1, 0]))
    assert loss.item() == pytest.approx(1.5) and m["nll"] == pytest.approx(1.5)


def test_token_mean_empty_mask_is_zero_not_nan():
    assert token_mean(torch.ones(3), torch.zeros(3)).item() == 0.0


def test_logprob_gap():
    m = logprob_gap(
        torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-1.5, -2.0, 0.0]), torch.tensor([1, 1, 0])
    )
    assert m["logprob_gap_mean"] == pytest.approx(0.25) and m["logprob_gap_max"] == pytest.approx(0.5)


def test_role_balanced_nll_weights_roles_equally():
    from learner.losses import role_balanced_nll

    lp = torch.tensor([-1.0, -1.0, -3.0, -3.0, -3.0, -3.0, -9.0])  # 2 solver tokens, 4 extractor, 1 masked
    role = torch.tensor([0, 0, 1, 1, 1, 1, -1])
    mask = (role >= 0).float()
    counts = torch.tensor([2.0, 4.0])
    assert role_balanced_nll(lp, mask, role, counts).item() == pytest.approx(0.5 * 1.0 + 0.5 * 3.0)
    # one role only: the plain token mean; two ranks with half the tokens each: DeepSpeed's average restores it
    assert role_balanced_nll(lp[:2], mask[:2], role[:2], torch.tensor([2.0, 0.0])).item() == pytest.approx(
        1.0
    )
    assert role_balanced_nll(
        lp[:1], mask[:1], role[:1], torch.tensor([2.0, 0.0]), world_size=2
    ).item() == pytest.approx(1.0)
