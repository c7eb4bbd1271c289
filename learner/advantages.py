"""Advantages as Evolving-RL defines them, on cluster.records objects.

One normaliser serves every case (`group_normalise`): the extractor's N candidates of one source
trajectory form a group; downstream solver episodes of one downstream task (across the skills tried
on it) form a group; plain GRPO's n samples of one task form a group. A group whose rewards are all
equal carries no preference and gets advantage 0 (it contributes nothing to the policy gradient).
The episode's advantage is then copied onto each of its Turns, the unit the learner trains on.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from cluster.records import EpisodeResult, Turn

log = logging.getLogger(__name__)


def group_normalise(rewards: Sequence[float], group_ids: Sequence[Hashable], eps: float = 1e-6) -> np.ndarray:
    """GRPO advantage: (r - group mean) / group std, with the unbiased (n-1) std.

    Groups of one sample, or whose rewards are all equal, get 0 (no signal, and dividing by a
    zero std would blow up).
    """
    r = np.asarray(rewards, dtype=np.float64)
    if r.ndim != 1 or len(group_ids) != len(r):
        raise ValueError(f"group_normalise: {len(r)} rewards but {len(group_ids)} group ids")
    if not np.all(np.isfinite(r)):
        bad = int(np.flatnonzero(~np.isfinite(r))[0])
        raise ValueError(f"group_normalise: reward #{bad} is {r[bad]} (not finite)")
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, g in enumerate(group_ids):
        members[g].append(i)
    adv = np.zeros_like(r)
    for idx in members.values():
        vals = r[idx]
        if len(vals) < 2:
            continue
        std = vals.std(ddof=1)
        if std < eps:
            continue
        adv[idx] = (vals - vals.mean()) / (std + eps)
    return adv


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

    def as_metrics(self, prefix: str = "adv_") -> dict[str, float]:
        out = {
            f"{prefix}samples": float(self.samples),
            f"{prefix}groups": float(self.groups),
            f"{prefix}zero_variance_groups": float(self.zero_variance_groups),
            f"{prefix}skipped_failed": float(self.skipped_failed),
            f"{prefix}unparsed_extractions": float(self.unparsed_extractions),
            f"{prefix}extractions_without_downstream": float(self.extractions_without_downstream),
        }
        out.update({f"{prefix}reward_mean_{k}": v for k, v in self.reward_mean.items()})
        return out


def _count_groups(
    group_ids: Sequence[Hashable], adv: np.ndarray, rewards: Sequence[float], stats: AdvantageStats
):
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, g in enumerate(group_ids):
        members[g].append(i)
    stats.groups += len(members)
    for idx in members.values():
        vals = [rewards[i] for i in idx]
        if max(vals) - min(vals) < 1e-12:
            stats.zero_variance_groups += 1


def _stamp_turns(ep: EpisodeResult, reward: float, advantage: float, group: str) -> list[Turn]:
    """Copy the episode's reward/advantage/group onto each of its Turns (returned, also mutated)."""
    for t in ep.turns:
        t.reward = float(reward)
        t.advantage = float(advantage)
        t.group_id = group
        t.won = bool(ep.won)
    return list(ep.turns)


def extractor_group(ep: EpisodeResult) -> str:
    """The source trajectory an extraction was sampled from: info['source_episode_id'], else the
    group_id its turns already carry. Without either the N candidates cannot be grouped: error."""
    src = ep.info.get("source_episode_id") or next((t.group_id for t in ep.turns if t.group_id), "")
    if not src:
        raise ValueError(
            f"extraction {ep.episode_id}: no source trajectory (set info['source_episode_id'] or Turn.group_id)"
        )
    return str(src)


def assign_evolving(
    extractions: Sequence[EpisodeResult], downstream: Sequence[EpisodeResult]
) -> tuple[list[Turn], AdvantageStats]:
    """Evolving-RL rewards and advantages for one iteration.

    - extractor sample: reward = mean `reward` of the downstream episodes that used its skill (their
      win rate under the default success reward)
      (`downstream[i].skill_id == extraction.skill_id`); 0 when the skill failed to parse (empty
      skill_id); normalised across the candidates of one source trajectory (`extractor_group`).
    - downstream solver sample: reward = its own `reward`; normalised per downstream task
      (task.task_id) across the skills tried on it.
    Episodes with `failed=True` (crashed worker/env) are skipped and counted.
    Returns the Turns of all samples with reward/advantage/group_id set, and stats.
    """
    stats = AdvantageStats()
    ok_down = [d for d in downstream if not d.failed]
    stats.skipped_failed += len(downstream) - len(ok_down)
    returns: dict[str, list[float]] = defaultdict(list)
    for d in ok_down:
        if d.skill_id:
            returns[d.skill_id].append(float(d.reward))

    ext = [e for e in extractions if not e.failed]
    stats.skipped_failed += len(extractions) - len(ext)
    ext_rewards: list[float] = []
    for e in ext:
        if not e.skill_id:
            stats.unparsed_extractions += 1
            ext_rewards.append(0.0)
        elif not returns.get(e.skill_id):
            stats.extractions_without_downstream += 1
            log.warning(
                "extraction %s: skill %s has no downstream episodes; reward 0", e.episode_id, e.skill_id
            )
            ext_rewards.append(0.0)
        else:
            ext_rewards.append(float(np.mean(returns[e.skill_id])))
    ext_groups = [extractor_group(e) for e in ext]
    ext_adv = group_normalise(ext_rewards, ext_groups)
    _count_groups(ext_groups, ext_adv, ext_rewards, stats)

    down_rewards = [float(d.reward) for d in ok_down]
    down_groups = [d.task.task_id for d in ok_down]
    down_adv = group_normalise(down_rewards, down_groups)
    _count_groups(down_groups, down_adv, down_rewards, stats)

    turns: list[Turn] = []
    for e, r, a, g in zip(ext, ext_rewards, ext_adv, ext_groups):
        turns += _stamp_turns(e, r, a, g)
    for d, r, a, g in zip(ok_down, down_rewards, down_adv, down_groups):
        turns += _stamp_turns(d, r, a, g)
    stats.samples = len(ext) + len(ok_down)
    if ext_rewards:
        stats.reward_mean["extractor"] = float(np.mean(ext_rewards))
    if down_rewards:
        stats.reward_mean["solver"] = float(np.mean(down_rewards))
    return turns, stats


def assign_grpo(episodes: Sequence[EpisodeResult]) -> tuple[list[Turn], AdvantageStats]:
    """Plain GRPO baseline: n samples per task, no skills; normalised per task_id."""
    stats = AdvantageStats()
    ok = [e for e in episodes if not e.failed]
    stats.skipped_failed = len(episodes) - len(ok)
    rewards = [float(e.reward) for e in ok]
    groups = [e.task.task_id for e in ok]
    adv = group_normalise(rewards, groups)
    _count_groups(groups, adv, rewards, stats)
    turns: list[Turn] = []
    for e, r, a, g in zip(ok, rewards, adv, groups):
        turns += _stamp_turns(e, r, a, g)
    stats.samples = len(ok)
    if rewards:
        stats.reward_mean["solver"] = float(np.mean(rewards))
    return turns, stats
