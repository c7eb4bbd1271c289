"""Evaluation protocols, every with-skill result paired with the no-skill result on the same tasks.

- online (the paper's, src/*/generate/eval.py): for each eval task, retrieve the most similar
  training task (any task type), play it greedily with no skill, extract one skill from that
  trajectory (greedy), then play the eval task with that skill and without it. Within one
  evaluation each retrieved training task is played and extracted once (cached).
- library: the run's gated skill library (accepted skills; `statuses` widens it), top-k retrieved
  per eval task, the path that goes beyond the paper.
- teacher: as online, but the skill is a teacher's (skills/teacher.py), written by rule from the
  retrieved training task's planner solution: what a perfect extractor could give (the go / no-go
  check of whether the skill channel can help a model at all).
- none: no skill.
Reported per split: success per arm (no_skill, with_skill) overall, per task type, trained and
held-out types; the paired table (both / with only / no-skill only / neither) and McNemar's exact p.
"""

from __future__ import annotations

import logging
import math
import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from cluster.core.config import Config
from cluster.core.generation import GenParams
from cluster.core.records import EpisodeJob, EpisodeResult, SkillRef, TaskSpec

log = logging.getLogger("evorl.eval")
PROTOCOLS = ("online", "teacher", "library", "none")


def mcnemar_p(with_only: int, without_only: int) -> float:
    """Exact two-sided McNemar test (binomial on the discordant pairs)."""
    n = with_only + without_only
    if n == 0:
        return 1.0
    k = min(with_only, without_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def sample_eval_tasks(cfg: Config, split: str) -> list[TaskSpec]:
    from envs import list_tasks

    tasks = list_tasks(cfg.env, split)
    return random.Random(f"{cfg.trainer.seed}-eval-{split}").sample(
        tasks, min(len(tasks), cfg.trainer.eval_tasks)
    )


@dataclass
class Evaluator:
    """`source_index`: a TaskIndex over the whole training split (all task types) for the online
    protocol; `library` + `embedder` for the library protocol."""

    cfg: Config
    pool: Any
    tokenizer: Any
    trained_types: set[str]
    source_index: Any = None
    library: Any = None
    embedder: Any = None
    statuses: tuple[str, ...] = ("accepted",)

    def __post_init__(self) -> None:
        r = self.cfg.rollout
        self.gen = GenParams(temperature=r.eval_temperature, top_p=1.0, max_tokens=r.max_new_tokens)
        self.episodes: list[dict] = []  # per game and arm, for paired analyses (bootstrap over games)

    def run(self, protocol: str, splits: list[str] | None = None) -> dict[str, float]:
        if protocol not in PROTOCOLS:
            raise ValueError(f"eval protocol {protocol!r}: expected one of {PROTOCOLS}")
        stats: dict[str, float] = {}
        self.episodes = []
        for split in splits if splits is not None else self.cfg.env.eval_splits:
            tasks = sample_eval_tasks(self.cfg, split)
            skills = {
                "online": self.online_skills,
                "teacher": self.teacher_skills,
                "library": self.library_skills,
            }.get(protocol)
            refs = skills(tasks, stats, split) if skills else [None] * len(tasks)
            paired = [t for t, r in zip(tasks, refs) if r is not None]
            jobs = [EpisodeJob(t) for t in tasks] + [
                EpisodeJob(t, r) for t, r in zip(tasks, refs) if r is not None
            ]
            episodes = self.pool.play(jobs, self.gen)
            without, with_ = episodes[: len(tasks)], episodes[len(tasks) :]
            stats |= self.arm_stats(f"eval/{split}/no_skill", without)
            self.episodes += [_record(split, "no_skill", e) for e in without]
            if protocol != "none":
                # a task whose source gave no skill plays without one: its no-skill episode stands in
                by_id = dict(zip([t.task_id for t in paired], with_))
                arm = [by_id.get(t.task_id, w) for t, w in zip(tasks, without)]
                stats |= self.arm_stats(f"eval/{split}/with_skill", arm)
                stats |= paired_stats(f"eval/{split}", arm, without)
                self.episodes += [_record(split, "with_skill", e) for e in arm]
        stats["eval/protocol_" + protocol] = 1.0
        return stats

    # ---- skills per protocol -------------------------------------------------------------------
    def online_skills(self, tasks: list[TaskSpec], stats: dict, split: str) -> list[SkillRef | None]:
        """The paper's protocol: retrieve, play, extract (each retrieved training task once)."""
        from skills.candidates import Extraction
        from skills.extractor import extractor_gen_params, extractor_prompt
        from skills.parse import parse_skill

        if self.source_index is None:
            raise ValueError("online evaluation needs a source index over the training split")
        s = self.cfg.skills
        source_of = {t.task_id: self.source_index.similar(t, 1, exclude_self=True)[0] for t in tasks}
        uniq = list({src.task_id: src for src in source_of.values()}.values())
        played = [e for e in self.pool.play([EpisodeJob(t) for t in uniq], self.gen) if not e.failed]
        built = [extractor_prompt(self.tokenizer, ep, s.extractor_max_tokens, self.cfg.model.max_model_len)
                 for ep in played]  # fmt: skip
        outs = self.pool.generate([ids for ids, _ in built], extractor_gen_params(s, greedy=True))
        skill_of: dict[str, SkillRef | None] = {}
        parsed = 0
        for ep, gens in zip(played, outs):
            g = gens[0]
            p = parse_skill(g.text, max_chars=s.max_skill_chars, schema=s.schema)
            parsed += p.skill is not None
            ext = Extraction(f"eval/{ep.episode_id}", ep, None, g.text, p.skill, p.reason)
            skill_of[ep.task.task_id] = ext.skill_ref(s.play_malformed, s.max_skill_chars)
        stats[f"eval/{split}/source_success"] = sum(e.won for e in played) / max(len(played), 1)
        stats[f"eval/{split}/skills_parsed"] = parsed / max(len(played), 1)
        stats[f"eval/{split}/sources"] = float(len(uniq))
        return [skill_of.get(source_of[t.task_id].task_id) for t in tasks]

    def teacher_skills(self, tasks: list[TaskSpec], stats: dict, split: str) -> list[SkillRef | None]:
        """The retrieved training task's planner solution, summarised by skills.teacher."""
        from envs import walkthrough
        from skills.schema import render_card
        from skills.teacher import planner_skill

        if self.source_index is None:
            raise ValueError("teacher evaluation needs a source index over the training split")
        out = []
        for t in tasks:
            src = self.source_index.similar(t, 1, exclude_self=True)[0]
            actions = walkthrough(src)
            skill = planner_skill(src.task_type, src.text, actions) if actions else None
            out.append(
                SkillRef(skill.skill_id, render_card(skill, self.cfg.skills.max_skill_chars))
                if skill
                else None
            )
        stats[f"eval/{split}/skills_parsed"] = sum(r is not None for r in out) / max(len(out), 1)
        return out

    def library_skills(self, tasks: list[TaskSpec], stats: dict, split: str) -> list[SkillRef | None]:
        from skills.retrieval import SkillIndex
        from skills.schema import render_card

        entries = self.library.with_status(*self.statuses) if self.library is not None else []
        stats[f"eval/{split}/skills_available"] = float(len(entries))
        if not entries:
            return [None] * len(tasks)
        index = SkillIndex(entries, self.embedder)
        out = []
        for t in tasks:
            top = index.top_k(t, self.cfg.skills.library_top_k)
            out.append(
                SkillRef(
                    "+".join(e.skill_id for e in top),
                    "\n\n".join(render_card(e.skill, self.cfg.skills.max_skill_chars) for e in top),
                )
            )
        return out

    # ---- reporting -----------------------------------------------------------------------------
    def arm_stats(self, prefix: str, episodes: list[EpisodeResult]) -> dict[str, float]:
        by_type: dict[str, list[bool]] = defaultdict(list)
        for ep in episodes:
            by_type[ep.task.task_type].append(ep.won and not ep.failed)
        out = {f"{prefix}/{tt}": sum(w) / len(w) for tt, w in by_type.items()}
        groups = {
            "success": list(by_type),
            "trained_success": [tt for tt in by_type if tt in self.trained_types],
            "heldout_success": [tt for tt in by_type if tt not in self.trained_types],
        }
        for name, types_ in groups.items():
            wins = [w for tt in types_ for w in by_type[tt]]
            if wins:
                out[f"{prefix}/{name}"] = sum(wins) / len(wins)
        scores = [ep.info["episode_score"] for ep in episodes if "episode_score" in ep.info]
        if scores:  # Mind2Web: element accuracy, operation F1, step and task success, micro and macro
            from envs.mind2web.metrics import aggregate

            out |= {
                f"{prefix}/{k}": float(v) for k, v in aggregate(scores).items() if isinstance(v, int | float)
            }
        out[f"{prefix}/episodes"] = float(len(episodes))
        out[f"{prefix}/failed"] = float(sum(e.failed for e in episodes))
        out[f"{prefix}/return"] = sum(e.reward for e in episodes) / max(len(episodes), 1)
        return out


def _record(split: str, arm: str, ep: EpisodeResult) -> dict:
    return {"split": split, "arm": arm, "task_id": ep.task.task_id, "task_type": ep.task.task_type,
            "won": bool(ep.won and not ep.failed), "failed": ep.failed, "steps": ep.steps, "skill_id": ep.skill_id}  # fmt: skip


def paired_stats(
    prefix: str, with_skill: list[EpisodeResult], no_skill: list[EpisodeResult]
) -> dict[str, float]:
    pairs = [(a.won and not a.failed, b.won and not b.failed) for a, b in zip(with_skill, no_skill)]
    both = sum(a and b for a, b in pairs)
    w_only = sum(a and not b for a, b in pairs)
    n_only = sum(b and not a for a, b in pairs)
    return {
        f"{prefix}/paired/both": float(both),
        f"{prefix}/paired/with_skill_only": float(w_only),
        f"{prefix}/paired/no_skill_only": float(n_only),
        f"{prefix}/paired/neither": float(len(pairs) - both - w_only - n_only),
        f"{prefix}/paired/mcnemar_p": mcnemar_p(w_only, n_only),
    }
