"""Rewards and advantages of one iteration, read off the grouping the trainer already holds.

Evolving-RL (arXiv 2605.10663; the authors' src/*/reward/functions.py):
- an extraction's reward is the mean return of its skill's downstream episodes (ALFWorld: the win
  rate; Mind2Web `env.reward: step`: the mean number of correct steps), 0 when it did not parse;
  normalised over the N extractions of one source trajectory;
- a downstream episode's reward is its return, normalised per downstream task across the skills
  tried on it (the K neighbours of one source each form a group);
- under `env.reward: step` every step is a sample: step rewards (1 if right) are normalised per step
  index across all downstream steps of one source group; a step alone at its index gets +1 if right
  (the episode's previous step's advantage when it has one), -1 if wrong.
GRPO: the G samples of one task form a group (per step index under `step`).

Normalisation is (r - mean) / (std + eps) with the population std (`trainer.adv_std_ddof: 0`, the
paper's); a group whose rewards are all equal, or a single episode, gets 0. The role weights (0.2 /
1.0) are applied in the loss. Failed episodes (crashed env or worker) are skipped and counted.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from cluster.core.records import EpisodeResult, Trace
from skills.candidates import SourceGroup

log = logging.getLogger(__name__)


def group_normalise(
    rewards: Sequence[float], group_ids: Sequence[Hashable], ddof: int = 0, eps: float = 1e-6
) -> np.ndarray:
    """GRPO advantage per group: (r - mean) / (std + eps); singleton or all-equal groups get 0."""
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 1 or len(group_ids) != len(r):
        raise ValueError(f"group_normalise: {len(r)} rewards but {len(group_ids)} group ids")
    if not np.all(np.isfinite(r)):
        bad = int(np.flatnonzero(~np.isfinite(r))[0])
        raise ValueError(f"group_normalise: reward #{bad} is {r[bad]} (not finite)")
    adv = np.zeros_like(r)
    for idx in _members(group_ids).values():
        vals = r[idx]
        if len(vals) < 2 or vals.max() - vals.min() < 1e-12:
            continue
        adv[idx] = (vals - vals.mean()) / (vals.std(ddof=ddof) + eps)
    return adv


def _members(group_ids: Sequence[Hashable]) -> dict[Hashable, list[int]]:
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, g in enumerate(group_ids):
        members[g].append(i)
    return members


@dataclass
class AdvantageStats:
    """What the assignment did, for the trainer's metrics (skips are counted, never silent)."""

    samples: int = 0
    groups: int = 0
    zero_variance_groups: int = 0
    skipped_failed: int = 0
    unparsed_extractions: int = 0
    extractions_without_downstream: int = 0
    reward_mean: dict[str, float] = field(default_factory=dict)

    def count(self, rewards: Sequence[float], group_ids: Sequence[Hashable]) -> None:
        members = _members(group_ids)
        self.groups += len(members)
        self.zero_variance_groups += sum(
            max(rewards[i] for i in idx) - min(rewards[i] for i in idx) < 1e-12 for idx in members.values()
        )

    def as_metrics(self, prefix: str = "adv/") -> dict[str, float]:
        out = {f"{prefix}{k}": float(v) for k, v in vars(self).items() if k != "reward_mean"}
        out.update({f"{prefix}reward_mean_{k}": v for k, v in self.reward_mean.items()})
        return out


def stamp(
    ep_traces: list[Trace], reward: float, advantages_by_turn: Sequence[float], group: str
) -> list[Trace]:
    """Set reward, group and per-span advantages (span i of a trace is turn first_turn + i)."""
    for t in ep_traces:
        t.reward, t.group_id = float(reward), group
        t.advantages = [float(advantages_by_turn[t.first_turn + i]) for i in range(len(t.spans))]
    return ep_traces


def _episode_level(ep: EpisodeResult, adv: float) -> list[float]:
    turns = max([t.first_turn + len(t.spans) for t in ep.traces], default=0)
    return [adv] * turns


def step_advantages(episodes: Sequence[EpisodeResult], ddof: int = 0, eps: float = 1e-6) -> list[list[float]]:
    """Per-step advantages of `episodes` (one list per episode, one value per step): step rewards
    normalised per step index across the episodes; the singleton rule of the module doc."""
    cells = [(e, t, r) for e, ep in enumerate(episodes) for t, r in enumerate(ep.step_rewards)]
    adv = group_normalise([r for *_, r in cells], [t for _, t, _ in cells], ddof, eps)
    size = defaultdict(int)
    for _, t, _ in cells:
        size[t] += 1
    out = [[0.0] * len(ep.step_rewards) for ep in episodes]
    for (e, t, r), a in zip(cells, adv):
        if size[t] == 1:  # alone at its index: its own sign, continuing the episode's previous step
            a = (out[e][t - 1] if t > 0 else 1.0) if r > 0 else -1.0
        out[e][t] = float(a)
    return out


def evolving_advantages(
    groups: Sequence[SourceGroup], per_step: bool = False, ddof: int = 0
) -> tuple[list[Trace], AdvantageStats]:
    """Traces of every extraction and every played downstream episode, with rewards and advantages."""
    stats = AdvantageStats()
    traces: list[Trace] = []
    ext_rewards_all, solver_rewards_all = [], []
    for g, group in enumerate(groups):
        ext_rewards = []
        for x in group.extractions:
            played = x.played
            stats.skipped_failed += len(x.downstream) - len(played)
            if x.skill is None:
                stats.unparsed_extractions += 1
                ext_rewards.append(0.0)  # malformed: reward 0, played downstream or not
            elif not played:
                stats.extractions_without_downstream += 1
                log.warning("extraction %s: no downstream episode finished; reward 0", x.extraction_id)
                ext_rewards.append(0.0)
            else:
                ext_rewards.append(float(np.mean([e.reward for e in played])))
        ext_adv = group_normalise(ext_rewards, [0] * len(ext_rewards), ddof)
        stats.count(ext_rewards, [g] * len(ext_rewards))
        for x, r, a in zip(group.extractions, ext_rewards, ext_adv):
            traces += stamp([x.trace], r, [a], f"x:{group.source.episode_id}")
        ext_rewards_all += ext_rewards

        played = [e for x in group.extractions for e in x.played]
        if per_step:
            for ep, adv in zip(played, step_advantages(played, ddof, eps=1e-8)):
                traces += stamp(ep.traces, ep.reward, adv, f"s:{group.source.episode_id}")
            steps = [(t, r) for ep in played for t, r in enumerate(ep.step_rewards)]
            stats.count([r for _, r in steps], [t for t, _ in steps])
        else:
            rewards = [e.reward for e in played]
            keys = [e.task.task_id for e in played]
            adv = group_normalise(rewards, keys, ddof)
            stats.count(rewards, [(g, k) for k in keys])
            for ep, a in zip(played, adv):
                traces += stamp(ep.traces, ep.reward, _episode_level(ep, a), f"d:{g}:{ep.task.task_id}")
        solver_rewards_all += [e.reward for e in played]
        stats.samples += len(group.extractions) + len(played)
    if ext_rewards_all:
        stats.reward_mean["extractor"] = float(np.mean(ext_rewards_all))
    if solver_rewards_all:
        stats.reward_mean["solver"] = float(np.mean(solver_rewards_all))
    return traces, stats


def grpo_advantages(
    groups: Sequence[Sequence[EpisodeResult]], per_step: bool = False, ddof: int = 0
) -> tuple[list[Trace], AdvantageStats]:
    """Plain GRPO: the samples of one task form a group; no skills."""
    stats = AdvantageStats()
    traces: list[Trace] = []
    rewards_all = []
    for g, episodes in enumerate(groups):
        ok = [e for e in episodes if not e.failed]
        stats.skipped_failed += len(episodes) - len(ok)
        if per_step:
            for ep, adv in zip(ok, step_advantages(ok, ddof, eps=1e-8)):
                traces += stamp(ep.traces, ep.reward, adv, f"g:{g}")
            steps = [(t, r) for ep in ok for t, r in enumerate(ep.step_rewards)]
            stats.count([r for _, r in steps], [t for t, _ in steps])
        else:
            rewards = [e.reward for e in ok]
            adv = group_normalise(rewards, [g] * len(ok), ddof)
            stats.count(rewards, [g] * len(ok))
            for ep, a in zip(ok, adv):
                traces += stamp(ep.traces, ep.reward, _episode_level(ep, a), f"g:{g}")
        rewards_all += [e.reward for e in ok]
        stats.samples += len(ok)
    if rewards_all:
        stats.reward_mean["solver"] = float(np.mean(rewards_all))
    return traces, stats
