"""The paper's rewards, turned into per-turn advantages.

evolving: an extractor sample's reward is its skill's mean downstream win rate (0 if its JSON did not
parse), normalised across the N candidates of one source trajectory; a downstream solver episode's
reward is `won`, normalised per downstream task across the skills. grpo: n samples per task, no
skill, normalised per task. Role weights (0.2 / 1.0) are applied by the learner's loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cluster.records import EpisodeResult, Turn
from learner.advantages import group_normalise
from skills.schema import Skill


@dataclass
class Candidate:
    """One extractor sample for one source trajectory, and what its skill earned downstream."""

    source: EpisodeResult
    extraction: EpisodeResult  # role="extractor": one Turn holding the generated JSON
    skill: Skill | None
    reason: str | None  # parse failure reason when skill is None
    downstream: list[EpisodeResult] = field(default_factory=list)

    @property
    def win_rate(self) -> float:
        done = [e for e in self.downstream if not e.failed]
        return sum(e.won for e in done) / len(done) if done else 0.0


def _stamp(episode: EpisodeResult, reward: float, advantage: float, group_id: str) -> list[Turn]:
    for t in episode.turns:
        t.reward, t.advantage, t.group_id, t.won = reward, advantage, group_id, episode.won
    return episode.turns


def assign_evolving(candidates: list[list[Candidate]]) -> list[Turn]:
    """candidates[i] = the N candidates extracted from source trajectory i."""
    turns: list[Turn] = []
    # extractor samples: normalised across the N candidates of one source
    ext_eps, ext_rewards, ext_groups = [], [], []
    for i, cands in enumerate(candidates):
        for c in cands:
            ext_eps.append(c.extraction)
            ext_rewards.append(c.win_rate if c.skill is not None else 0.0)
            ext_groups.append(f"src{i}")
    for ep, r, a, g in zip(ext_eps, ext_rewards, group_normalise(ext_rewards, ext_groups), ext_groups):
        ep.reward = r
        turns += _stamp(ep, r, a, g)
    # downstream solver samples: normalised per downstream task across the skills
    sol_eps, sol_groups = [], []
    for i, cands in enumerate(candidates):
        for c in cands:
            for ep in c.downstream:
                if not ep.failed:
                    sol_eps.append(ep)
                    sol_groups.append(f"src{i}/{ep.task.task_id}")
    rewards = [float(ep.won) for ep in sol_eps]
    for ep, r, a, g in zip(sol_eps, rewards, group_normalise(rewards, sol_groups), sol_groups):
        turns += _stamp(ep, r, a, g)
    return turns


def assign_grpo(episodes: list[EpisodeResult]) -> list[Turn]:
    """Plain GRPO baseline: n episodes per task, no skill, normalised per task."""
    eps = [e for e in episodes if not e.failed]
    rewards = [float(e.won) for e in eps]
    groups = [e.task.task_id for e in eps]
    turns: list[Turn] = []
    for ep, r, a, g in zip(eps, rewards, group_normalise(rewards, groups), groups):
        turns += _stamp(ep, r, a, g)
    return turns
