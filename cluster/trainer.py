"""The single controller: Evolving-RL's four stages per iteration, every heavy step remote.

tasks      = sampler.next(B)                      # trained task types only
src        = rollout.play(tasks, skill=None)      # source episodes
cands      = extract(src, N)                      # N candidate skills per trajectory
neighbours = retriever.similar(task, K)           # K similar training tasks per source task
down       = skill_eval.play(neighbours x cands)  # downstream episodes, skill in the system prompt
turns      = rewards.assign_evolving(cands)       # advantages (extractor 0.2 / solver 1.0 in the loss)
stats      = learner.train(turns)                 # clipped PG + low-var KL + entropy, masked
broadcast(learner -> rollout pools)               # every engine on the same version
library.update(cands)                             # gate: accept, merge, retire
"""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from cluster import placement
from cluster.checkpoint import CheckpointManager
from cluster.config import Config, dump_config
from cluster.metrics import Metrics
from cluster.records import EpisodeResult, TaskSpec, Turn, turns_to_table
from cluster.sampler import TaskSampler
from cluster.storage import atomic_write_bytes, write_json_plain, write_parquet
from learner.advantages import assign_evolving, assign_grpo
from skills.schema import Skill

log = logging.getLogger("evorl.trainer")


@dataclass
class Candidate:
    """One extractor sample for one source trajectory, and the downstream episodes its skill played."""

    source: EpisodeResult
    extraction: (
        EpisodeResult  # role="extractor": one Turn holding the generated JSON; skill_id "" if unparsed
    )
    skill: Skill | None
    reason: str | None  # parse failure reason when skill is None
    downstream: list[EpisodeResult] = field(default_factory=list)

    @property
    def win_rate(self) -> float:
        done = [e for e in self.downstream if not e.failed]
        return sum(e.won for e in done) / len(done) if done else 0.0


class Trainer:
    def __init__(self, cfg: Config, run_dir: Path) -> None:
        from transformers import AutoTokenizer

        from actors.engine import GenParams
        from actors.pool import RolloutPool
        from cluster.model_store import project_cache, resolve_model
        from envs import list_tasks
        from learner.group import LearnerGroup
        from skills.library import GateConfig, SkillLibrary
        from skills.retrieval import Embedder, TaskIndex

        self.cfg, self.run_dir = cfg, run_dir
        self.mode = cfg.trainer.mode
        s = cfg.skills
        if self.mode == "evolving" and s.gate_min_trials > s.k_neighbours * s.repeats:
            log.warning(  # a skill is played only in the iteration that extracted it
                "skills.gate_min_trials (%d) > skills.k_neighbours x skills.repeats (%d): a skill cannot be "
                "accepted unless later duplicates merge into it", s.gate_min_trials, s.k_neighbours * s.repeats)  # fmt: skip
        self.metrics = Metrics(run_dir)
        self.timers: dict[str, float] = defaultdict(float)  # cumulative, per stage
        self.last_times: dict[str, float] = {}  # this iteration, per stage
        all_train = list_tasks(cfg.env, cfg.env.train_split)
        trained = set(cfg.env.trained_types) or {t.task_type for t in all_train}
        self.train_tasks = [t for t in all_train if t.task_type in trained]
        self.sampler = TaskSampler(self.train_tasks, cfg.trainer.seed)
        self.embedder = Embedder(cfg.skills.embedding)
        self.retriever = TaskIndex(self.train_tasks, self.embedder, cache_dir=project_cache() / "retrieval")
        self.library = SkillLibrary.open(run_dir / "skills", GateConfig.from_config(cfg.skills))
        self.learners = LearnerGroup(cfg)
        self.rollout = RolloutPool(cfg, "rollout", cfg.rollout.num_workers)
        n_eval = cfg.skills.num_eval_workers
        self.skill_eval = RolloutPool(cfg, "skill-eval", n_eval) if n_eval else self.rollout
        self.pools = [self.rollout] if self.skill_eval is self.rollout else [self.rollout, self.skill_eval]
        r = cfg.rollout
        self.solver_gen = GenParams(temperature=r.temperature, top_p=r.top_p, max_tokens=r.max_new_tokens)
        self.eval_gen = GenParams(temperature=r.eval_temperature, top_p=1.0, max_tokens=r.max_new_tokens)
        self.tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.model.path))  # extractor prompts
        self.version = 0
        self.iteration = 0
        self.ckpt = CheckpointManager(run_dir / "checkpoints", keep=cfg.learner.keep_checkpoints)

    # ---- the algorithm -------------------------------------------------------------------------
    def step(self) -> dict[str, float]:
        cfg, it = self.cfg, self.iteration
        rng = random.Random(f"{cfg.trainer.seed}-{it}")
        tasks = self.sampler.next(cfg.trainer.batch_size)
        stats: dict[str, float] = {}
        if self.mode == "grpo":
            with self.timer("rollout"):
                group = [t for t in tasks for _ in range(cfg.trainer.grpo_samples)]
                episodes = self.rollout.play(group, [None] * len(group), self.solver_gen)
            for ep in episodes:
                ep.reward = episode_reward(cfg, ep)
            turns, adv = assign_grpo(episodes)
            stats |= adv.as_metrics("adv/") | episode_stats("source", episodes)
            candidates: list[list[Candidate]] = []
        else:
            with self.timer("source"):
                src = self.rollout.play(tasks, [None] * len(tasks), self.solver_gen)
            with self.timer("extract"):
                candidates = self.extract(src, seed=rng.randrange(2**31))
            with self.timer("downstream"):
                baselines = self.play_downstream(candidates)
            turns = []
            if self.mode == "evolving":
                extractions = [c.extraction for cs in candidates for c in cs]
                downstream = [e for cs in candidates for c in cs for e in c.downstream]
                turns, adv = assign_evolving(extractions, downstream)
                stats |= adv.as_metrics("adv/")
            stats |= episode_stats("source", src)
            stats |= candidate_stats(candidates)
            stats |= episode_stats(
                "baseline", [e for eps in baselines.values() for e in eps]
            )  # same tasks, no skill
        self.save_trajectories(turns)  # every sampled turn is kept on disk, trained on or not
        if self.cfg.learner.skip_zero_advantage:
            stats["learner/skipped_zero_adv_turns"] = sum(t.advantage == 0.0 for t in turns)
            turns = [t for t in turns if t.advantage != 0.0]
        if not turns and self.mode in ("evolving", "grpo"):
            log.warning("iteration %d: no trainable turn (every group had equal rewards); the policy stays at "
                        "version %d", it, self.version)  # fmt: skip
        with self.timer("learn"):
            if turns:
                stats |= {f"learner/{k}": v for k, v in self.learners.train(turns_to_table(turns)).items()}
        with self.timer("broadcast"):
            if turns:
                self.version += 1
                weights = self.learners.weights()
                for pool in self.pools:
                    pool.broadcast(weights, self.version)
        with self.timer("library"):
            if candidates:
                stats |= self.update_library(candidates, baselines)
        stats["policy_version"] = self.version
        stats["turns"] = len(turns)
        stats |= {f"{pool.prefix}/restarts": pool.restarts for pool in self.pools}  # workers replaced so far
        return stats

    def extract(self, src: list[EpisodeResult], seed: int) -> list[list[Candidate]]:
        """N candidate skills per source trajectory, sampled from the extractor prompt."""
        from skills.extractor import extractor_gen_params, extractor_prompt
        from skills.parse import parse_skill

        s = self.cfg.skills
        gen = extractor_gen_params(s, seed=seed)
        built = [
            extractor_prompt(self.tokenizer, ep, s.extractor_max_tokens, self.cfg.model.max_model_len)
            for ep in src
        ]
        prompts = [ids for ids, _ in built]
        outs = self.rollout.generate(prompts, gen)
        result = []
        for ep, (prompt, cut), gens in zip(src, built, outs):
            cands = []
            for j, g in enumerate(gens):
                parsed = parse_skill(g.text, max_chars=s.max_skill_chars)
                turn = Turn(
                    episode_id=f"{ep.episode_id}/x{j}",
                    turn=0,
                    task_id=ep.task.task_id,
                    task_type=ep.task.task_type,
                    role="extractor",
                    prompt_ids=list(prompt),
                    response_ids=list(g.token_ids),
                    response_logprobs=list(g.logprobs),
                    policy_version=self.version,
                )
                extraction = EpisodeResult(
                    episode_id=turn.episode_id,
                    task=ep.task,
                    role="extractor",
                    won=False,
                    reward=0.0,
                    steps=1,
                    turns=[turn],
                    skill_id=parsed.skill.skill_id if parsed.skill else "",  # "" = unparsed: reward 0
                    policy_version=self.version,
                    text=g.text,
                    info={
                        "source_episode_id": ep.episode_id,
                        "parse_reason": parsed.reason or "",
                        "prompt_cut": cut,
                    },
                )
                cands.append(Candidate(ep, extraction, parsed.skill, parsed.reason))
            result.append(cands)
        return result

    def play_downstream(self, candidates: list[list[Candidate]]) -> dict[str, list[EpisodeResult]]:
        """Each parsed skill plays the K training tasks most similar to its source task (x repeats).

        The same K tasks are also played once per repeat with no skill: the library gate's baseline.
        Returns those no-skill episodes keyed by source episode id (they are not trained on).
        """
        from skills.schema import render_card

        s = self.cfg.skills
        jobs: list[tuple[Candidate | None, str, TaskSpec, str | None]] = []
        for cands in candidates:
            src = cands[0].source
            neighbours = self.retriever.similar(src.task, s.k_neighbours)
            jobs += [(None, src.episode_id, t, None) for t in neighbours for _ in range(s.repeats)]
            for c in cands:
                if c.skill is None:
                    continue  # reward 0 without playing: the paper's malformed-JSON rule
                card = render_card(c.skill)
                jobs += [(c, src.episode_id, t, card) for t in neighbours for _ in range(s.repeats)]
        episodes = self.skill_eval.play(
            [j[2] for j in jobs],
            [j[3] for j in jobs],
            self.solver_gen,
            skill_ids=[j[0].extraction.skill_id if j[0] else "" for j in jobs],
        )
        baselines: dict[str, list[EpisodeResult]] = defaultdict(list)
        for (c, src_id, _, _), ep in zip(jobs, episodes):
            if c is None:
                baselines[src_id].append(ep)
                continue
            ep.reward = episode_reward(self.cfg, ep)
            c.downstream.append(ep)
        return baselines

    def update_library(
        self, candidates: list[list[Candidate]], baselines: dict[str, list[EpisodeResult]]
    ) -> dict[str, float]:
        """Each parsed candidate enters the library (or merges into a near-duplicate) with its
        downstream trials against the no-skill baseline on the same tasks; the gate accepts/retires."""
        from skills.library import Provenance
        from skills.retrieval import skill_key

        for cands in candidates:
            base = [e for e in baselines.get(cands[0].source.episode_id, []) if not e.failed]
            for c in cands:
                if c.skill is None or not c.downstream:
                    continue
                done = [e for e in c.downstream if not e.failed]
                prov = Provenance(
                    c.source.task.task_id, self.iteration, self.version, c.source.task.task_type
                )
                emb = self.embedder.embed([skill_key(c.skill)])[0]
                holder = self.library.add(c.skill, prov, embedding=[float(x) for x in emb])
                self.library.record_trials(
                    holder,
                    trials=len(done),
                    wins=sum(e.won for e in done),
                    baseline_trials=len(base),
                    baseline_wins=sum(e.won for e in base),
                    failed=len(c.downstream) - len(done),
                )
        self.library.save()
        return {f"skills/library_{k}": v for k, v in library_summary(self.library).items()}

    def evaluate(self) -> dict[str, float]:
        library = self.library if self.mode != "grpo" else None
        trained = {t.task_type for t in self.train_tasks}
        return evaluate(self.cfg, self.rollout, self.eval_gen, trained, library)

    # ---- bookkeeping ---------------------------------------------------------------------------
    @contextmanager
    def timer(self, stage: str):
        t0 = time.perf_counter()
        yield
        self.timers[stage] += time.perf_counter() - t0
        self.last_times[stage] = time.perf_counter() - t0

    def save_trajectories(self, turns: list[Turn]) -> None:
        if not turns:
            return
        path = self.run_dir / "trajectories" / f"iter-{self.iteration:05d}.parquet"
        write_parquet(path, turns_to_table(turns))  # atomic, page checksums (storage.read_parquet_dir)

    def state(self) -> dict:
        return {
            "iteration": self.iteration,
            "version": self.version,
            "sampler": self.sampler.state(),
            "library_version": self.library.load_report.version,
            "timers": dict(self.timers),
        }

    def save(self) -> Path:
        return self.ckpt.save(self.iteration, self.learners, self.state())

    def restore(self) -> bool:
        found = self.ckpt.latest()
        if found is None:
            return False
        path, state = found
        self.learners.load(path)
        self.iteration, self.version = state["iteration"], state["version"]
        self.sampler.restore(state["sampler"])
        self.library.load(version=state["library_version"])  # the library as of this checkpoint
        self.timers.update(state.get("timers", {}))
        weights = self.learners.weights()
        for pool in self.pools:
            pool.broadcast(weights, self.version)
        log.info("resumed from %s at iteration %d (policy version %d)", path, self.iteration, self.version)
        return True

    def shutdown(self) -> None:
        self.metrics.close()
        for pool in self.pools:
            pool.shutdown()
        self.learners.shutdown()


def episode_stats(prefix: str, episodes: list[EpisodeResult]) -> dict[str, float]:
    ok = [e for e in episodes if not e.failed]
    n = max(len(ok), 1)
    return {
        f"{prefix}/success": sum(e.won for e in ok) / n,
        f"{prefix}/episodes": len(episodes),
        f"{prefix}/failed": len(episodes) - len(ok),
        f"{prefix}/steps": sum(e.steps for e in ok) / n,
        f"{prefix}/invalid_actions": sum(e.invalid_actions for e in ok),
        f"{prefix}/unparsable_actions": sum(e.unparsable_actions for e in ok),
        f"{prefix}/truncated": sum(e.truncated for e in ok),
    }


def candidate_stats(candidates: list[list[Candidate]]) -> dict[str, float]:
    flat = [c for cs in candidates for c in cs]
    down = [e for c in flat for e in c.downstream]
    parsed = [c for c in flat if c.skill is not None]
    return {
        "skills/candidates": len(flat),
        "skills/parse_failure_rate": 1 - len(parsed) / max(len(flat), 1),
        "skills/mean_candidate_win_rate": sum(c.win_rate for c in parsed) / max(len(parsed), 1),
        "skills/extractor_prompts_cut": sum(
            bool(cs[0].extraction.info.get("prompt_cut")) for cs in candidates if cs
        ),
    } | episode_stats("downstream", down)


def train(cfg: Config, resume: bool = False, config_path: str = "") -> int:
    """`evorl train`: set up Ray and the actors, run the iterations, checkpoint, summarise."""
    from tqdm import tqdm

    run_dir = Path(cfg.trainer.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(run_dir / "config.yaml", dump_config(cfg).encode())
    placement.init_ray(cfg)
    ensure_data(cfg)
    trainer = Trainer(cfg, run_dir)
    try:
        resumed_from = None
        if resume:
            if trainer.restore():
                resumed_from = trainer.iteration
            else:
                log.warning("--resume: no checkpoint in %s, starting from scratch", run_dir / "checkpoints")
        bar = tqdm(total=cfg.trainer.iterations, initial=trainer.iteration, desc="iterations", unit="it")
        while trainer.iteration < cfg.trainer.iterations:
            trainer.last_times = {}
            t0 = time.perf_counter()
            stats = trainer.step()
            trainer.iteration += 1
            e = cfg.trainer.eval_every
            if e and trainer.iteration % e == 0:
                stats |= trainer.evaluate()
            stats["iteration_s"] = time.perf_counter() - t0
            stats |= {f"time/{k}": v for k, v in trainer.last_times.items()}
            trainer.metrics.log(trainer.iteration, stats)
            if (
                trainer.iteration % cfg.trainer.checkpoint_every == 0
                or trainer.iteration == cfg.trainer.iterations
            ):
                trainer.save()
            bar.update(1)
            bar.set_postfix(src=f"{stats.get('source/success', 0):.2f}", v=trainer.version)
        bar.close()
        final = trainer.evaluate() if cfg.env.eval_splits else {}
        trainer.metrics.log(trainer.iteration, final)
        summary = {
            "mode": trainer.mode,
            "iteration": trainer.iteration,
            "policy_version": trainer.version,
            "worker_versions": {
                f"{pool.prefix}-{i}": v for pool in trainer.pools for i, v in enumerate(pool.versions())
            },
            "resumed_from_iteration": resumed_from,
            "library": library_summary(trainer.library),
            "final_eval": final,
            "time_per_stage_s": dict(trainer.timers),
        }
        write_json_plain(run_dir / "summary.json", summary)
        print_summary(trainer, final)
    finally:
        trainer.shutdown()
    return 0


def print_summary(trainer: Trainer, final: dict[str, float]) -> None:
    lines = [
        f"\n== evorl {trainer.mode}: {trainer.iteration} iterations, policy version {trainer.version} =="
    ]
    for k, v in sorted(final.items()):
        lines.append(f"  {k:50s} {v:.3f}")
    lines.append(f"  skill library: {library_summary(trainer.library)}")
    lines.append("  time per stage (s): " + ", ".join(f"{k} {v:.1f}" for k, v in trainer.timers.items()))
    lines.append(f"  run folder: {trainer.run_dir}")
    print("\n".join(lines))


def ensure_data(cfg: Config) -> None:
    """Generated ALFWorld games are made on first use (official data is used as found)."""
    if cfg.env.name != "alfworld":
        return
    from envs.alfworld.generator import ensure_generated

    ensure_generated(
        cfg.env.data_dir, cfg.env.generate_per_type, cfg.env.generate_preset, cfg.trainer.seed, workers=2
    )


def episode_reward(cfg: Config, ep: EpisodeResult) -> float:
    """The paper's reward, success (1 for a won episode), unless the config asks for the env's own
    return (`env.reward: progress`, Mind2Web: the fraction of steps done right)."""
    return float(ep.won) if cfg.env.reward == "success" else float(ep.reward)


def library_summary(library) -> dict[str, int]:
    counts = {"skills": len(library)}
    for status in ("candidate", "accepted", "retired"):
        counts[status] = len(library.with_status(status))
    return counts


def best_skill_card(index, task: TaskSpec, k: int) -> str | None:
    """The top-k accepted library skills for a task, rendered as cards for the solver prompt."""
    from skills.schema import render_card

    entries = index.top_k(task, k)
    return "\n\n".join(render_card(e.skill) for e in entries) if entries else None


def evaluate(
    cfg: Config,
    pool,
    gen,
    trained_types: set[str],
    library=None,
    statuses: tuple[str, ...] = ("accepted",),
) -> dict[str, float]:
    """Greedy episodes on the eval splits: success per task type, trained vs held-out, overall.

    With a library, each task's prompt carries its top retrieved skills of the given `statuses`.
    """
    from envs import list_tasks

    index = None
    if library is not None and library.with_status(*statuses):
        from skills.retrieval import Embedder, SkillIndex

        index = SkillIndex.from_library(library, Embedder(cfg.skills.embedding), statuses)
    stats: dict[str, float] = {"eval/skills_available": float(index is not None and len(index.entries))}
    for split in cfg.env.eval_splits:
        tasks = list_tasks(cfg.env, split)
        tasks = random.Random(cfg.trainer.seed).sample(tasks, min(len(tasks), cfg.trainer.eval_tasks))
        skills = (
            [best_skill_card(index, t, cfg.skills.library_top_k) for t in tasks]
            if index
            else [None] * len(tasks)
        )
        episodes = pool.play(tasks, skills, gen)
        by_type: dict[str, list[bool]] = defaultdict(list)
        for ep in episodes:
            by_type[ep.task.task_type].append(ep.won and not ep.failed)
        groups = {"success": list(by_type)}
        groups["trained_success"] = [tt for tt in by_type if tt in trained_types]
        groups["heldout_success"] = [tt for tt in by_type if tt not in trained_types]
        for tt, wins in by_type.items():
            stats[f"eval/{split}/{tt}"] = sum(wins) / len(wins)
        for name, types_ in groups.items():
            wins = [w for tt in types_ for w in by_type[tt]]
            if wins:
                stats[f"eval/{split}/{name}"] = sum(wins) / len(wins)
    return stats


def evaluate_only(
    cfg: Config,
    checkpoint: str = "",
    skills: str = "",
    as_json: bool = False,
    statuses: tuple[str, ...] = ("accepted",),
) -> int:
    """`evorl eval`: any model (a checkpoint or the config's) with an optional skill library."""
    import json

    from actors.engine import GenParams
    from actors.pool import RolloutPool
    from envs import list_tasks
    from skills.library import SkillLibrary

    if checkpoint:
        cfg = replace(cfg, model=replace(cfg.model, path=checkpoint))
    placement.init_ray(cfg)
    ensure_data(cfg)
    trained = set(cfg.env.trained_types) or {t.task_type for t in list_tasks(cfg.env, cfg.env.train_split)}
    library = SkillLibrary.open(Path(skills)) if skills else None
    pool = RolloutPool(cfg, "rollout", cfg.rollout.num_workers)
    gen = GenParams(
        temperature=cfg.rollout.eval_temperature, top_p=1.0, max_tokens=cfg.rollout.max_new_tokens
    )
    try:
        stats = evaluate(cfg, pool, gen, trained, library, statuses)
    finally:
        pool.shutdown()
    print(
        json.dumps(stats, indent=1)
        if as_json
        else "\n".join(f"{k:50s} {v:.3f}" for k, v in sorted(stats.items()))
    )
    return 0
