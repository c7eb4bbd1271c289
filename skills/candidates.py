"""One iteration's skill candidates as the trainer groups them: per source trajectory, its N
extractions, its K neighbour tasks, the downstream episodes of each skill and the no-skill baseline.

The rewards (cluster/rewards.py) and the library update read this grouping as it is; nothing is
regrouped from id strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cluster.core.records import EpisodeJob, EpisodeResult, SkillRef, TaskSpec, Trace
from skills.schema import Skill, render_card


@dataclass
class Extraction:
    """One extractor sample for one source trajectory, and the downstream episodes its skill played."""

    extraction_id: str
    source: EpisodeResult
    trace: Trace | None  # the extractor prompt + generated text, what the learner trains on (None in eval)
    text: str
    skill: Skill | None
    reason: str | None  # parse failure reason when skill is None
    prompt_cut: bool = False
    downstream: list[EpisodeResult] = field(default_factory=list)

    def skill_ref(self, play_malformed: bool, max_chars: int = 1500) -> SkillRef | None:
        """What the downstream solver gets: the card of the parsed skill, or (as the paper does) the
        raw text of one that did not parse; None = not played."""
        if self.skill is not None:
            return SkillRef(self.skill.skill_id, render_card(self.skill, max_chars))
        if play_malformed and self.text.strip():
            return SkillRef.raw_text(self.text.strip()[-max_chars:])
        return None

    @property
    def played(self) -> list[EpisodeResult]:
        return [e for e in self.downstream if not e.failed]


@dataclass
class SourceGroup:
    """A source trajectory, the N extractions from it and the K tasks their skills were tried on."""

    source: EpisodeResult
    extractions: list[Extraction]
    neighbours: list[TaskSpec] = field(default_factory=list)
    baseline: list[EpisodeResult] = field(default_factory=list)  # the neighbours with no skill


@dataclass(frozen=True)
class DownstreamJob:
    """One downstream episode and where its result goes: extraction `extraction` of group `group`
    (None = the group's no-skill baseline)."""

    group: int
    extraction: int | None
    job: EpisodeJob
