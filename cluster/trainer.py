"""The single controller: Evolving-RL's four stages per iteration, every heavy step remote.

tasks      = sampler.next(B)                          # trained task types only
src        = rollout.play(tasks, no skill)            # source episodes
groups     = extract(src, N)                          # N candidate skills per trajectory
neighbours = retriever.similar(task, K)               # K similar training tasks per source task
             skill_eval.play(neighbours x skills)     # downstream episodes, skill in the system prompt
traces     = rewards.evolving_advantages(groups)      # extractor over N, solver per downstream task
stats      = learners.train(traces)                   # clipped PG + k3 KL + entropy, role weights, masked
weight_sync.push(version)                             # every engine serves the new policy version
library.update(groups)                                # gate: accept, merge, retire

`trainer.overlap` collects iteration t+1 (stages 1-3) in a thread while the learner trains on t.

The Trainer holds no actor-building code: its parts (pools, learners, weight sync, retriever, skill
library) arrive as arguments (cluster/factory.py builds the real ones), so `step()` runs against
fakes in tests/test_trainer_step.py. The run loop (cluster/run.py) owns checkpoints and metrics.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from cluster import rewards
from cluster.core.config import Config
from cluster.core.generation import GenParams
from cluster.core.records import EpisodeJob, EpisodeResult, TaskSpec, Trace
from cluster.sampler import TaskSampler
from skills.candidates import DownstreamJob, Extraction, SourceGroup

log = logging.getLogger("evorl.trainer")


@dataclass
class TrainerParts:
    """Everything `Trainer.step` talks to. Real: cluster.factory.build_parts; tests: fakes."""

    rollout: (
        Any  # .play(jobs, gen) -> [EpisodeResult]; .generate(prompts, gen) -> [[Generation]]; .engine_stats()
    )
    skill_eval: Any  # the same interface (may be `rollout` itself)
    learners: Any  # .train(table) -> metrics; .save/.load(folder)
    weight_sync: Any  # .push(version) -> metrics
    retriever: Any  # skills.retrieval.TaskIndex over the training tasks: .similar(task, k, exclude_self)
    library: Any  # skills.library.SkillLibrary
    embedder: Any  # skills.retrieval.Embedder (skill embeddings for the library's merging)
    tokenizer: Any  # the policy's tokenizer (extractor prompts)
    train_tasks: list[TaskSpec]

    @property
    def pools(self) -> list:
        return [self.rollout] if self.skill_eval is self.rollout else [self.rollout, self.skill_eval]


class CollectCancelled(RuntimeError):
    """A collection ahead (trainer.overlap) stopped by Trainer.close()."""


@dataclass
class Batch:
    """One iteration's sampled data: the traces to train on, the skill groups, their metrics."""

    traces: list[Trace]
    groups: list[SourceGroup]
    stats: dict[str, float] = field(default_factory=dict)
    times: dict[str, float] = field(default_factory=dict)


class Trainer:
    def __init__(self, cfg: Config, parts: TrainerParts, run_dir: Path | None = None) -> None:
        self.cfg, self.parts, self.run_dir = cfg, parts, run_dir
        self.mode = cfg.trainer.mode
        s = cfg.skills
        if self.mode == "evolving" and s.gate_min_trials > s.k_neighbours * s.repeats:
            log.warning(  # a skill is played only in the iteration that extracted it
                "skills.gate_min_trials (%d) > skills.k_neighbours x skills.repeats (%d): a skill cannot be "
                "accepted unless later duplicates merge into it", s.gate_min_trials, s.k_neighbours * s.repeats)  # fmt: skip
        self.sampler = TaskSampler(parts.train_tasks, cfg.trainer.seed)
        r = cfg.rollout
        self.solver_gen = GenParams(temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_new_tokens,
                                    logprobs=r.engine_logprobs)  # fmt: skip
        self.per_step = cfg.env.reward == "step"
        self.policy_version = 0  # weight pushes so far: the version every engine serves
        self.iteration = 0
        self._times: dict[str, float] = {}
        self.progress = None  # cluster.progress.Progress (the run loop's console), or None
        self.prefetch = True  # with trainer.overlap: collect the next batch during this one (the run loop
        # turns it off before the last iteration)
        self._next: Batch | None = None  # the batch collected ahead (trainer.overlap)
        self._sampler_before_next: dict | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._closing = threading.Event()  # set by close(): a collection in flight stops at its next chunk

    # ---- the algorithm -------------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        """One iteration; returns its metrics (per-stage seconds under time/).

        With `trainer.overlap` the next iteration's batch is collected (by the policy this one
        trains from) while the learner trains: every batch after the first is one version stale,
        and its importance ratio is against the engine's behaviour logprobs."""
        cfg, p = self.cfg, self.parts
        t0 = time.perf_counter()
        if self._next is not None:
            batch, self._next = self._next, None
        else:
            batch = self.collect(self.iteration)
        self._times = dict(batch.times)
        stats = dict(batch.stats)
        traces = self.current(batch.traces, stats)
        self.save_trajectories(traces)
        if cfg.learner.skip_zero_advantage:
            kept = [t for t in traces if any(a != 0.0 for a in t.advantages)]
            stats["learner/skipped_zero_adv_traces"] = len(traces) - len(kept)
            traces = kept
        if not traces and self.mode in ("evolving", "grpo"):
            log.warning("iteration %d: no trainable trace (every group had equal rewards); the policy stays at "
                        "version %d", self.iteration, self.policy_version)  # fmt: skip
        pending = None
        if cfg.trainer.overlap and self.prefetch:
            self._sampler_before_next = self.sampler.state()
            pending = self._executor().submit(self.collect, self.iteration + 1)
        if traces:
            from cluster.core.records import traces_to_table

            with self.timer("learn"):
                stats |= {f"learner/{k}": v for k, v in p.learners.train(traces_to_table(traces)).items()}
        if pending is not None:  # the push must not land mid-generation
            with self.timer("overlap_wait"):
                self._next = pending.result()
        if traces:
            with self.timer("broadcast"):
                self.policy_version += 1
                stats |= p.weight_sync.push(self.policy_version)
        if batch.groups:
            with self.timer("library"):
                stats |= self.update_library(batch.groups)
        stats["policy_version"] = self.policy_version
        stats["traces"] = len(traces)
        stats |= {f"{pool.prefix}/restarts": pool.restarts for pool in p.pools}  # workers replaced so far
        for pool in p.pools:  # vLLM's own counters over this iteration (prefix-cache hits, preemptions)
            stats |= {f"{pool.prefix}/engine/{k}": v for k, v in pool.engine_stats().items()}
        self.iteration += 1
        stats["iteration_s"] = time.perf_counter() - t0
        return stats | {f"time/{k}": v for k, v in self._times.items()}

    def collect(self, iteration: int) -> Batch:
        """Stages 1-3 and the advantages: the iteration's traces, sampled by the engines' policy."""
        cfg, p = self.cfg, self.parts
        times: dict[str, float] = {}
        timer = partial(self.timer, into=times)
        rng = random.Random(f"{cfg.trainer.seed}-{iteration}")
        tasks = self.sampler.next(cfg.trainer.batch_size)
        stats: dict[str, float] = {}
        groups: list[SourceGroup] = []
        traces: list[Trace] = []
        if self.mode == "grpo":
            n = cfg.trainer.grpo_samples
            with timer("rollout"):
                jobs = [EpisodeJob(t) for t in tasks for _ in range(n)]
                episodes = p.rollout.play(jobs, self.solver_gen, progress=self._stage("rollout", iteration))
            traces, adv = rewards.grpo_advantages(
                [episodes[i : i + n] for i in range(0, len(episodes), n)],
                self.per_step,
                cfg.trainer.adv_std_ddof,
            )
            stats |= adv.as_metrics() | episode_stats("source", episodes)
        else:
            with timer("source"):
                src = p.rollout.play([EpisodeJob(t) for t in tasks], self.solver_gen,
                                     progress=self._stage("source", iteration))  # fmt: skip
            stats |= episode_stats("source", src)
            with timer("extract"):
                groups = self.extract([e for e in src if not e.failed], rng.randrange(2**31), iteration)
            with timer("downstream"):
                self.play_downstream(groups, iteration)
            if self.mode == "evolving":
                traces, adv = rewards.evolving_advantages(groups, self.per_step, cfg.trainer.adv_std_ddof)
                stats |= adv.as_metrics()
            stats |= candidate_stats(groups)
            stats |= episode_stats(
                "baseline", [e for g in groups for e in g.baseline]
            )  # same tasks, no skill
        return Batch(traces, groups, stats, times)

    def extract(self, src: list[EpisodeResult], seed: int, iteration: int | None = None) -> list[SourceGroup]:
        """N candidate skills per source trajectory, sampled from the extractor prompt."""
        from skills.extractor import extractor_gen_params, extractor_prompt

        s, p = self.cfg.skills, self.parts
        built = [extractor_prompt(p.tokenizer, ep, s.extractor_max_tokens, self.cfg.model.max_model_len)
                 for ep in src]  # fmt: skip
        gen = extractor_gen_params(s, seed=seed, logprobs=self.cfg.rollout.engine_logprobs)
        outs = p.rollout.generate([ids for ids, _ in built], gen, progress=self._stage("extract", iteration))
        return [SourceGroup(ep, [self._extraction(ep, j, prompt, cut, g) for j, g in enumerate(gens)])
                for ep, (prompt, cut), gens in zip(src, built, outs)]  # fmt: skip

    def _extraction(self, ep: EpisodeResult, j: int, prompt: list[int], cut: bool, g: Any) -> Extraction:
        from skills.parse import parse_skill

        s = self.cfg.skills
        xid = f"{ep.episode_id}/x{j}"
        parsed = parse_skill(g.text, max_chars=s.max_skill_chars, schema=s.schema)
        trace = Trace(xid, 0, ep.task.task_id, ep.task.task_type, "extractor", list(prompt) + list(g.token_ids),
                      [(len(prompt), len(prompt) + len(g.token_ids))], list(g.logprobs), g.policy_version,
                      skill_id=parsed.skill.skill_id if parsed.skill else "")  # fmt: skip
        return Extraction(xid, ep, trace, g.text, parsed.skill, parsed.reason, cut)

    def play_downstream(self, groups: list[SourceGroup], iteration: int | None = None) -> None:
        """Each candidate skill plays the K training tasks most similar to its source task (x repeats),
        and so do no-skill baselines (the library gate's "gain over no skill"; not trained on)."""
        s, p = self.cfg.skills, self.parts
        jobs: list[DownstreamJob] = []
        for g, group in enumerate(groups):
            group.neighbours = p.retriever.similar(
                group.source.task, s.k_neighbours, exclude_self=not s.include_source
            )
            reps = [t for t in group.neighbours for _ in range(s.repeats)]
            jobs += [DownstreamJob(g, None, EpisodeJob(t)) for t in reps]
            for x, ext in enumerate(group.extractions):
                ref = ext.skill_ref(s.play_malformed, s.max_skill_chars)
                if ref is not None:  # unplayed (no text at all): reward 0, as a malformed skill
                    jobs += [DownstreamJob(g, x, EpisodeJob(t, ref)) for t in reps]
        episodes = p.skill_eval.play([j.job for j in jobs], self.solver_gen,
                                     progress=self._stage("downstream", iteration))  # fmt: skip
        for j, ep in zip(jobs, episodes):
            group = groups[j.group]
            (group.baseline if j.extraction is None else group.extractions[j.extraction].downstream).append(
                ep
            )

    def current(self, traces: list[Trace], stats: dict[str, float]) -> list[Trace]:
        """Traces sampled by the policy version the learner holds (or, with `trainer.overlap`, the one
        before it); any other (a worker that missed a push) would be trained on as if it were current,
        so it is dropped and counted."""
        oldest = self.policy_version - (1 if self.cfg.trainer.overlap else 0)
        kept = [t for t in traces if oldest <= t.policy_version <= self.policy_version]
        stats["learner/stale_traces_dropped"] = len(traces) - len(kept)
        if len(kept) < len(traces):
            log.warning("iteration %d: %d traces from other policy versions dropped (current %d)",
                        self.iteration, len(traces) - len(kept), self.policy_version)  # fmt: skip
        return kept

    def update_library(self, groups: list[SourceGroup]) -> dict[str, float]:
        """Each parsed candidate enters the library (or merges into a near-duplicate) with its
        downstream trials against the no-skill baseline on the same tasks; the gate accepts/retires."""
        from skills.library import Provenance
        from skills.retrieval import skill_key

        lib = self.parts.library
        for group in groups:
            base = [e for e in group.baseline if not e.failed]
            for x in group.extractions:
                if x.skill is None or not x.downstream:
                    continue
                src = group.source.task
                prov = Provenance(src.task_id, self.iteration, x.trace.policy_version, src.task_type)
                emb = self.parts.embedder.embed([skill_key(x.skill)])[0]
                holder = lib.add(x.skill, prov, embedding=[float(v) for v in emb])
                lib.record_trials(holder, trials=len(x.played), wins=sum(e.won for e in x.played),
                                  baseline_trials=len(base), baseline_wins=sum(e.won for e in base),
                                  failed=len(x.downstream) - len(x.played))  # fmt: skip
        lib.save()
        return {f"skills/library_{k}": v for k, v in library_summary(lib).items()}

    # ---- bookkeeping ---------------------------------------------------------------------------
    def _stage(self, name: str, iteration: int | None = None):
        """The pool's per-chunk callback: the console's progress, and where a collection ahead stops
        once close() is called (an error or Ctrl-C in the main thread), not after all its stages."""
        self._stop_if_closing()
        bar = None
        if self.progress is not None:
            self.progress.iteration = (self.iteration if iteration is None else iteration) + 1
            bar = self.progress.stage(name)

        def update(done: int, total: int) -> None:
            self._stop_if_closing()
            if bar is not None:
                bar(done, total)

        return update

    def _stop_if_closing(self) -> None:
        if self._closing.is_set():
            raise CollectCancelled("trainer closed: the batch collected ahead is abandoned")

    @contextmanager
    def timer(self, stage: str, into: dict[str, float] | None = None):
        times = self._times if into is None else into
        t0 = time.perf_counter()
        yield
        times[stage] = times.get(stage, 0.0) + time.perf_counter() - t0

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="evorl-collect")
        return self._pool

    def close(self) -> None:
        """Drop a batch collected ahead (`trainer.overlap`) that no iteration will train on; one still
        being collected (the main thread failed or was interrupted) stops at its next chunk."""
        if self._next is not None:
            log.info(
                "trainer.overlap: the batch collected for iteration %d is not trained on", self.iteration + 1
            )
            self._next = None
        if self._pool is not None:
            self._closing.set()
            self._pool.shutdown(wait=True)
            self._pool = None
            self._closing.clear()

    def save_trajectories(self, traces: list[Trace]) -> None:
        """Every sampled trace is kept on disk, trained on or not (atomic Parquet, page checksums)."""
        if traces and self.run_dir is not None:
            from cluster.core.records import traces_to_table
            from cluster.core.storage import write_parquet

            write_parquet(
                self.run_dir / "trajectories" / f"iter-{self.iteration:05d}.parquet", traces_to_table(traces)
            )

    def state(self) -> dict:
        """What a resume needs; a batch collected ahead is not saved: its tasks are drawn again."""
        return {
            "iteration": self.iteration,
            "policy_version": self.policy_version,
            "sampler": self._sampler_before_next if self._next is not None else self.sampler.state(),
            "library_version": self.parts.library.load_report.version,
        }

    def restore(self, state: dict) -> None:
        self._next = None
        self.iteration, self.policy_version = int(state["iteration"]), int(state["policy_version"])
        self.sampler.restore(state["sampler"])


def episode_stats(prefix: str, episodes: list[EpisodeResult]) -> dict[str, float]:
    ok = [e for e in episodes if not e.failed]
    n = max(len(ok), 1)
    return {
        f"{prefix}/success": sum(e.won for e in ok) / n,
        f"{prefix}/return": sum(e.reward for e in ok) / n,
        f"{prefix}/episodes": len(episodes),
        f"{prefix}/failed": len(episodes) - len(ok),
        f"{prefix}/steps": sum(e.steps for e in ok) / n,
        f"{prefix}/invalid_actions": sum(e.invalid_actions for e in ok),
        f"{prefix}/unparsable_actions": sum(e.unparsable_actions for e in ok),
        f"{prefix}/truncated": sum(e.truncated for e in ok),
    }


def candidate_stats(groups: list[SourceGroup]) -> dict[str, float]:
    flat = [x for g in groups for x in g.extractions]
    parsed = [x for x in flat if x.skill is not None]
    down = [e for x in flat for e in x.downstream]

    def rate(x: Extraction) -> float:
        return sum(e.won for e in x.played) / len(x.played) if x.played else 0.0

    return {
        "skills/candidates": len(flat),
        "skills/parse_failure_rate": 1 - len(parsed) / max(len(flat), 1),
        "skills/mean_candidate_win_rate": sum(rate(x) for x in parsed) / max(len(parsed), 1),
        "skills/extractor_prompts_cut": sum(x.prompt_cut for x in flat),
    } | episode_stats("downstream", down)


def library_summary(library) -> dict[str, int]:
    counts = {"skills": len(library)}
    for status in ("candidate", "accepted", "retired"):
        counts[status] = len(library.with_status(status))
    return counts
