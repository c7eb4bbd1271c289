"""The RL and SFT loss terms, one pure function per term.

Every function takes flat per-token tensors (one entry per generated token of the micro-batch,
already aligned: logprobs[i] is the log-probability of token i), a 0/1 `mask` (only mask-1 tokens
count) and either an optional `denom` (the number of mask-1 tokens of the *whole* batch across all
micro-batches and ranks: a token mean however the batch was split) or per-token `weights` (the
learner's aggregation weights, learner/batching.py: token_mean or sample_mean over the global
batch); with weights the term is sum(value * weight).

Each returns `(scalar loss, metrics)`; metrics are detached Python floats for logging. No I/O.

Sign conventions (total loss = pg + kl + entropy):
- `kl_coef` > 0 penalises divergence from the reference policy (paper: 0.01 for both roles).
- `entropy_coef` follows verl's `entropy_coeff`: the term is `-coef * entropy`, so a positive
  coefficient is an entropy *bonus* and a negative one an entropy *penalty*. The paper's extractor
  value -0.03 therefore pushes the extractor towards lower entropy (sharper, more decisive skill
  text); the solver's 0 leaves its entropy alone.
"""

from __future__ import annotations

import torch

Metrics = dict[str, float]


def _denom(mask: torch.Tensor, denom: float | int | torch.Tensor | None) -> torch.Tensor:
    """The token-mean denominator: the batch-wide token count, else this call's own, never 0."""
    d = mask.sum() if denom is None else torch.as_tensor(denom, dtype=mask.dtype, device=mask.device)
    return d.clamp(min=1.0)


def token_mean(
    values: torch.Tensor,
    mask: torch.Tensor,
    denom: float | int | None = None,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sum of values over mask-1 tokens divided by the (batch-wide) token count, or, given per-token
    aggregation weights, sum(values * weights * mask)."""
    mask = mask.to(values.dtype)
    if weights is not None:
        return (values * mask * weights.to(values.dtype)).sum()
    return (values * mask).sum() / _denom(mask, denom)


def policy_gradient_loss(
    logprobs: torch.Tensor,
    behaviour_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    role_weights: torch.Tensor | None = None,
    eps_low: float = 0.1,
    eps_high: float = 0.15,
    denom: float | int | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """Token-level clipped surrogate with asymmetric clipping (the DAPO "clip-higher" form).

    ratio = exp(logprob - behaviour logprob); per token
    loss = -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A) * role_weight.
    A larger eps_high lets low-probability tokens with positive advantage grow faster than the
    symmetric PPO clip would, which keeps exploration alive.
    """
    mask = mask.to(logprobs.dtype)
    log_ratio = logprobs - behaviour_logprobs
    ratio = torch.exp(log_ratio)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * advantages
    per_token = -torch.minimum(unclipped, clipped)
    if role_weights is not None:
        per_token = per_token * role_weights
    loss = token_mean(per_token, mask, denom, weights)
    with torch.no_grad():
        n = mask.sum().clamp(min=1.0)
        clipped_hi = ((ratio > 1.0 + eps_high) & (advantages > 0)).to(mask.dtype)
        clipped_lo = ((ratio < 1.0 - eps_low) & (advantages < 0)).to(mask.dtype)
        metrics = {
            "pg_loss": float(loss.detach()),
            "clip_frac": float(((clipped_hi + clipped_lo) * mask).sum() / n),
            "clip_frac_high": float((clipped_hi * mask).sum() / n),
            "clip_frac_low": float((clipped_lo * mask).sum() / n),
            "ratio_mean": float((ratio * mask).sum() / n),
        }
    return loss, metrics


def kl_penalty(
    logprobs: torch.Tensor,
    ref_logprobs: torch.Tensor,
    mask: torch.Tensor,
    coef: torch.Tensor | float,
    denom: float | int | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """Low-variance, always non-negative KL(current || reference) estimator (Schulman's k3).

    k3 = exp(ref - cur) - (ref - cur) - 1, an unbiased estimate from samples of the current policy.
    `coef` is a scalar or a per-token tensor (per-role coefficient).
    """
    mask = mask.to(logprobs.dtype)
    d = ref_logprobs - logprobs
    k3 = torch.exp(d) - d - 1.0
    loss = token_mean(k3 * coef, mask, denom, weights)
    with torch.no_grad():
        kl = float((k3 * mask).sum() / mask.sum().clamp(min=1.0))
    return loss, {"kl": kl, "kl_loss": float(loss.detach())}


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy (nats) of the categorical distribution given by the last axis."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def entropy_loss(
    entropy: torch.Tensor,
    mask: torch.Tensor,
    coef: torch.Tensor | float,
    denom: float | int | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """Entropy term `-coef * entropy` (positive coef = bonus, negative = penalty; see module doc)."""
    mask = mask.to(entropy.dtype)
    loss = token_mean(-coef * entropy, mask, denom, weights)
    with torch.no_grad():
        ent = float((entropy * mask).sum() / mask.sum().clamp(min=1.0))
    return loss, {"entropy": ent, "entropy_loss": float(loss.detach())}


def sft_loss(
    logprobs: torch.Tensor,
    mask: torch.Tensor,
    denom: float | int | None = None,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, Metrics]:
    """Supervised token NLL over loss-masked tokens (warm start on demonstrations)."""
    loss = token_mean(-logprobs, mask, denom, weights)
    return loss, {"nll": float(loss.detach())}


def role_balanced_nll(
    logprobs: torch.Tensor,
    mask: torch.Tensor,
    role_index: torch.Tensor,
    role_tokens: torch.Tensor,
    world_size: int = 1,
) -> torch.Tensor:
    """SFT loss where each role's NLL is the mean over its own (global) tokens and the roles present
    count equally: 16 extractor targets of ~340 tokens must not drown 92 solver actions of ~7.
    `role_tokens[k]`: the batch's token count of role k over all ranks (DeepSpeed averages ranks)."""
    present = (role_tokens > 0).sum().clamp(min=1)
    per_token = (role_tokens / world_size * present)[role_index.clamp(min=0)].clamp(min=1e-6)
    return (-logprobs * mask.to(logprobs.dtype) / per_token).sum()


def logprob_gap(logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor, mask: torch.Tensor) -> Metrics:
    """How far the learner's logprobs are from the rollout engine's for the same tokens.

    Before the first update of a batch the policies are identical, so any gap is numerical
    mismatch between engine and learner (dtype, kernels); a large one makes importance ratios lie.
    """
    with torch.no_grad():
        mask = mask.to(logprobs.dtype)
        gap = (logprobs - behaviour_logprobs).abs() * mask
        n = mask.sum().clamp(min=1.0)
        return {
            "logprob_gap_mean": float(gap.sum() / n),
            "logprob_gap_max": float(gap.max()) if gap.numel() else 0.0,
        }
