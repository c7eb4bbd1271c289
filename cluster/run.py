"""`evorl train` and `evorl eval`: set up Ray and the parts, run the iterations, checkpoint, summarise.

A run folder belongs to one run. A fresh `evorl train` into a folder that already holds one is
refused unless told what to do: `--resume` (or `trainer.resume: auto`) continues its newest complete
checkpoint, `--overwrite` starts over. A resume with no complete checkpoint (a kill in the first
iterations) starts clean: the killed run's skills, metrics and trajectories are removed, so nothing
is counted twice; a resume with one drops the records of the iterations it will redo.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from cluster import placement
from cluster.checkpoint import CheckpointManager, checkpoint_name
from cluster.core.config import Config, ConfigError, dump_config
from cluster.core.storage import atomic_write_bytes, write_json_plain
from cluster.data import ensure_data
from cluster.metrics import Metrics
from cluster.progress import Progress
from cluster.trainer import Trainer, library_summary

log = logging.getLogger("evorl.run")
RUN_PRODUCTS = ("checkpoints", "skills", "trajectories", "tensorboard", "metrics.jsonl", "summary.json", "wandb",
                "wandb_run_id", "mlflow_run_id")  # fmt: skip


def used(run_dir: Path) -> bool:
    return any((run_dir / name).exists() for name in RUN_PRODUCTS)


def clear(run_dir: Path) -> None:
    for name in RUN_PRODUCTS:
        p = run_dir / name
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)


def prepare_run_dir(cfg: Config, resume: bool, overwrite: bool) -> tuple[Path, tuple[Path, dict] | None]:
    """The absolute run folder and the checkpoint to resume (None = start fresh); ConfigError for a
    used folder without an instruction."""
    run_dir = Path(cfg.trainer.run_dir).expanduser().resolve()
    resume = resume or cfg.trainer.resume == "auto"
    mirror = None
    if cfg.trainer.storage_uri:
        from cluster.run_mirror import RunMirror

        mirror = RunMirror(cfg.trainer.storage_uri)
    if overwrite:
        clear(run_dir)
        if mirror is not None:
            mirror.clear()  # or a resume would find the old run's checkpoints there
    elif used(run_dir) and not resume:
        raise ConfigError(
            f"trainer.run_dir: {run_dir} already holds a run; pass --resume to continue it, --overwrite to "
            "start over, or set trainer.resume=auto"
        )
    ckpts = CheckpointManager(run_dir / "checkpoints", cfg.learner.keep_checkpoints)
    if resume and mirror is not None and ckpts.latest() is None:
        mirror.pull(run_dir)  # a new node (or a lost disk): the mirror's newest complete checkpoint
    found = ckpts.latest() if resume else None
    if resume and found is None and used(run_dir):
        log.warning(
            "%s: no complete checkpoint; starting clean (the interrupted run's records are removed)", run_dir
        )
        clear(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, found


def train(cfg: Config, resume: bool = False, overwrite: bool = False) -> int:
    from cluster.factory import build_evaluator, build_parts

    placement.make_paths_absolute(cfg)
    run_dir, found = prepare_run_dir(cfg, resume, overwrite)
    atomic_write_bytes(run_dir / "config.yaml", dump_config(cfg).encode())
    placement.init_ray(cfg)
    ensure_data(cfg)
    parts = build_parts(cfg, run_dir)
    trainer = Trainer(cfg, parts, run_dir)
    trainer.progress = console = Progress()
    ckpt = CheckpointManager(run_dir / "checkpoints", cfg.learner.keep_checkpoints)
    evaluator = build_evaluator(cfg, parts.rollout, parts.tokenizer, parts.library, parts.embedder)
    resumed_from = None
    if found is not None:
        path, state = found
        parts.learners.load(str(path / "model"))
        trainer.restore(state)
        parts.library.load(version=state["library_version"])  # the library as of this checkpoint
        parts.weight_sync.push(trainer.policy_version)
        resumed_from = trainer.iteration
        log.info(
            "resumed from %s at iteration %d (policy version %d)",
            path,
            trainer.iteration,
            trainer.policy_version,
        )
    metrics = Metrics.from_config(cfg, run_dir, resumed_at=resumed_from)
    timers: dict[str, float] = {}
    mirror = None
    if cfg.trainer.storage_uri:
        from cluster.run_mirror import RunMirror

        mirror = RunMirror(cfg.trainer.storage_uri)

    def checkpoint() -> None:
        ckpt.save(trainer.iteration, parts.learners, trainer.state())
        if mirror is not None:
            mirror.push(run_dir)  # a failed upload is logged and retried at the next one

    try:
        started, budget = time.monotonic(), cfg.trainer.time_budget_s
        while trainer.iteration < cfg.trainer.iterations:
            if budget and time.monotonic() - started > budget:
                log.info("trainer.time_budget_s=%g spent after %d iterations", budget, trainer.iteration)
                break
            # trainer.overlap: nothing collected ahead for an iteration past the end
            trainer.prefetch = trainer.iteration + 1 < cfg.trainer.iterations
            stats = trainer.step()
            for k, v in stats.items():
                if k.startswith("time/"):
                    timers[k[5:]] = timers.get(k[5:], 0.0) + v
            e = cfg.trainer.eval_every
            if e and trainer.iteration % e == 0:
                stats |= evaluator.run(cfg.trainer.eval_protocol)
            metrics.log(trainer.iteration, stats)
            console.summary(trainer.iteration, cfg.trainer.iterations, stats)
            if trainer.iteration % cfg.trainer.checkpoint_every == 0:
                checkpoint()
        if trainer.iteration and not (ckpt.root / checkpoint_name(trainer.iteration)).is_dir():
            checkpoint()  # the last iteration is always kept
        final = evaluator.run(cfg.trainer.eval_protocol) if cfg.env.eval_splits else {}
        metrics.log(trainer.iteration, final)
        summary = {
            "mode": trainer.mode,
            "iteration": trainer.iteration,
            "policy_version": trainer.policy_version,
            "worker_versions": {
                f"{p.prefix}-{i}": v for p in parts.pools for i, v in enumerate(p.versions())
            },
            "resumed_from_iteration": resumed_from,
            "train_wall_s": time.monotonic() - started,
            "stopped_by_time_budget": trainer.iteration < cfg.trainer.iterations,
            "library": library_summary(parts.library),
            "final_eval": final,
            "time_per_stage_s": timers,
            "transfers": transfers(parts, mirror),
        }
        write_json_plain(run_dir / "summary.json", summary)
        if mirror is not None:
            mirror.push(run_dir)
        print_summary(trainer, final, summary, run_dir)
    finally:
        trainer.close()
        metrics.close()
        for pool in parts.pools:
            pool.shutdown()
        parts.learners.shutdown()
    return 0


def transfers(parts, mirror) -> dict:
    """How files crossed nodes (docs/cluster.md, Storage): task files shipped, checkpoint ranks
    through the object store, the run mirror's uploads."""
    shipped = parts.rollout.task_files
    return {
        "task_files_shipped": shipped.files if shipped else 0,
        "task_file_bytes": shipped.bytes if shipped else 0,
        "checkpoint_ranks_via_object_store": getattr(parts.learners, "ranks_via_object_store", 0),
        "storage_uri": mirror.uri if mirror else "",
        "storage_upload_failures": mirror.failures if mirror else 0,
    }


def print_summary(trainer: Trainer, final: dict[str, float], summary: dict, run_dir: Path) -> None:
    lines = [
        f"\n== evorl {trainer.mode}: {trainer.iteration} iterations, policy version {trainer.policy_version} =="
    ]
    lines += [f"  {k:55s} {v:.3f}" for k, v in sorted(final.items())]
    lines.append(f"  skill library: {summary['library']}")
    lines.append(
        "  time per stage (s): " + ", ".join(f"{k} {v:.1f}" for k, v in summary["time_per_stage_s"].items())
    )
    lines.append(f"  run folder: {run_dir}")
    print("\n".join(lines))


def evaluate_only(
    cfg: Config,
    checkpoint: str = "",
    skills: str = "",
    protocol: str = "online",
    as_json: bool = False,
    statuses: tuple[str, ...] = ("accepted",),
    out: str = "",
) -> int:
    """`evorl eval`: any model (any checkpoint form, or the config's) under one protocol, on either
    benchmark (Mind2Web adds element accuracy, operation F1, step and task success; `env.replay:
    teacher_forced` scores every step as Mind2Web's own evaluation does)."""
    from dataclasses import replace

    from transformers import AutoTokenizer

    from actors.pool import RolloutPool
    from cluster.checkpoint import resolve_model_dir
    from cluster.core.model_store import resolve_model
    from cluster.factory import build_evaluator, task_files
    from skills.library import SkillLibrary

    placement.make_paths_absolute(cfg)
    if checkpoint:
        cfg = replace(cfg, model=replace(cfg.model, path=str(resolve_model_dir(checkpoint).absolute())))
    if protocol == "library" and not skills:
        raise ConfigError("--protocol library needs --skills DIR (a skill library folder)")
    placement.init_ray(cfg)
    ensure_data(cfg)
    library = SkillLibrary.open(Path(skills)) if skills else None
    pool = RolloutPool(cfg, "rollout", cfg.rollout.num_workers, task_files=task_files(cfg))
    try:
        tok = AutoTokenizer.from_pretrained(resolve_model(cfg.model.path))
        evaluator = build_evaluator(cfg, pool, tok, library, statuses=statuses)
        stats = evaluator.run(protocol)
    finally:
        pool.shutdown()
    if out:
        finished = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())  # results tables date each measurement
        write_json_plain(out, {"model": cfg.model.path, "protocol": protocol, "skills": skills, "stats": stats,
                               "finished": finished, "episodes": evaluator.episodes})  # fmt: skip
    print(
        json.dumps(stats, indent=1)
        if as_json
        else "\n".join(f"{k:55s} {v:.3f}" for k, v in sorted(stats.items()))
    )
    return 0
