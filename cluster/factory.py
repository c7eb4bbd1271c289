"""The real parts of a run, built in one place: rollout and skill-eval pools, the learner group, the
weight sync between them, task retrieval, the skill library and the evaluator."""

from __future__ import annotations

from pathlib import Path

from cluster.core.config import Config
from cluster.evaluation import Evaluator
from cluster.trainer import TrainerParts


def training_tasks(cfg: Config) -> tuple[list, list]:
    """(all tasks of the train split, those of the trained types)."""
    from envs import list_tasks

    all_train = list_tasks(cfg.env, cfg.env.train_split)
    trained = set(cfg.env.trained_types) or {t.task_type for t in all_train}
    return all_train, [t for t in all_train if t.task_type in trained]


def build_parts(cfg: Config, run_dir: Path, prefix: str = "") -> TrainerParts:
    """`prefix` names the actors (`<prefix>rollout-0`, ...): two stacks side by side in one Ray session
    (the benchmarks' A/B runs)."""
    from transformers import AutoTokenizer

    from actors.pool import RolloutPool
    from cluster.core.model_store import project_cache, resolve_model
    from cluster.weight_sync import WeightSync
    from learner.group import LearnerGroup
    from skills.library import GateConfig, SkillLibrary
    from skills.retrieval import Embedder, TaskIndex

    _, train_tasks = training_tasks(cfg)
    embedder = Embedder(cfg.skills.embedding)
    retriever = TaskIndex(train_tasks, embedder, cache_dir=project_cache() / "retrieval")
    library = SkillLibrary.open(run_dir / "skills", GateConfig.from_config(cfg.skills))
    learners = LearnerGroup(cfg, name_prefix=f"{prefix}learner")
    files = task_files(cfg)
    rollout = RolloutPool(cfg, f"{prefix}rollout", cfg.rollout.num_workers, task_files=files)
    n_eval = cfg.skills.num_eval_workers
    skill_eval = (
        RolloutPool(cfg, f"{prefix}skill-eval", n_eval, resources=cfg.skills.eval_resources, task_files=files)
        if n_eval
        else rollout
    )
    pools = [rollout] if skill_eval is rollout else [rollout, skill_eval]
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(cfg.model.path))
    return TrainerParts(rollout, skill_eval, learners, WeightSync(learners, pools), retriever, library, embedder,
                        tokenizer, train_tasks)  # fmt: skip


def task_files(cfg: Config):
    """The files of every task the run plays (training and eval splits), shipped to the workers when
    env.data_transfer says so (cluster/core/task_files.py); None when the workers open them in place."""
    from cluster.core.task_files import ship_if_needed
    from envs import list_tasks

    splits = dict.fromkeys([cfg.env.train_split, *cfg.env.eval_splits])
    tasks = [t for s in splits for t in list_tasks(cfg.env, s)]
    return ship_if_needed(cfg.env.data_transfer, tasks, cfg.env.max_shipped_bytes)


def build_evaluator(
    cfg: Config, pool, tokenizer, library=None, embedder=None, statuses=("accepted",)
) -> Evaluator:
    """The evaluator over `pool`; the online protocol retrieves from the whole training split."""
    from cluster.core.model_store import project_cache
    from skills.retrieval import Embedder, TaskIndex

    all_train, trained = training_tasks(cfg)
    embedder = embedder or Embedder(cfg.skills.embedding)
    index = TaskIndex(all_train, embedder, cache_dir=project_cache() / "retrieval")
    return Evaluator(cfg, pool, tokenizer, {t.task_type for t in trained}, index, library, embedder, statuses)
